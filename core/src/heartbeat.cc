#include "lockstep/heartbeat.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "channel_socket.h"
#include "lockstep/error.h"
#include "lockstep/log.h"
#include "lockstep/mutex.h"
#include "lockstep/progress.h"

namespace lockstep {

namespace {

// How often a rank says it is alive, with its collectives' progress. The
// launcher counts a host whose ranks all stay silent for its host timeout
// (seconds) as lost.
constexpr std::chrono::milliseconds kAliveInterval{1000};

// Lines not yet taken by the kernel wait here, whole, up to this size; a
// line that does not fit is dropped (a launcher that does not read must
// not stall training or grow this rank's memory).
constexpr std::size_t kMaxUnsent = 64 * 1024;

// The node's relay is on this host: it answers at once or not at all.
constexpr std::chrono::milliseconds kRelayTimeout{3000};

// The "alive" line: this rank's communicators and where each one is.
std::string alive_line() {
  nlohmann::json collectives = nlohmann::json::array();
  for (const CollectiveState& state : collective_progress()) {
    collectives.push_back({{"channel", state.channel},
                           {"started", state.started},
                           {"finished", state.finished},
                           {"waiting_in", state.waiting_in}});
    if (collectives.size() == 8) break;  // a line stays small
  }
  return nlohmann::json{{"type", "alive"}, {"collectives", collectives}}.dump();
}

}  // namespace

// The connection and its watcher. The thread reads `socket` (the launcher
// only ever sends its welcome) and `wake` (the destructor's "stop now"),
// and says every second that the rank is alive; the training thread sends
// its steps. Sending goes through `unsent` under `send_mutex`, so that the
// two threads' lines never interleave and a line the kernel took only in
// part is finished before the next one. Neither closes `socket` before the
// thread has been joined.
struct HeartbeatClient::Channel {
  int socket = -1;
  int wake[2] = {-1, -1};
  std::string address;
  LauncherLost on_lost;
  std::chrono::milliseconds exit_after{0};
  std::atomic<bool> broken{false};  // sending failed: stop sending
  bool relayed = false;             // connected to the node's relay, not the launcher
  Mutex send_mutex;
  std::string unsent LOCKSTEP_GUARDED_BY(send_mutex);
  std::thread watcher;

  // Queues `line` and sends what the kernel takes without blocking.
  void send(const std::string& line) LOCKSTEP_EXCLUDES(send_mutex) {
    if (broken) return;
    MutexLock lock(send_mutex);
    if (unsent.size() + line.size() + 1 <= kMaxUnsent) {
      unsent += line;
      unsent += '\n';
    }
    flush();
  }

  void flush() LOCKSTEP_REQUIRES(send_mutex) {
    while (!unsent.empty()) {
      // MSG_DONTWAIT: a launcher that does not read must not stall training.
      const ssize_t sent =
          ::send(socket, unsent.data(), unsent.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent > 0) {
        unsent.erase(0, static_cast<std::size_t>(sent));
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        log::debug("heartbeat connection lost ({}); no more heartbeats", std::strerror(errno));
        broken = true;
      }
      return;
    }
  }

  ~Channel() {
    if (watcher.joinable()) {
      const char byte = 0;
      [[maybe_unused]] const ssize_t written = ::write(wake[1], &byte, 1);
      watcher.join();
    }
    if (socket >= 0) {
      // The last lines (the goodbye) go out before the connection closes.
      MutexLock lock(send_mutex);
      if (!broken) flush();
    }
    for (const int fd : {socket, wake[0], wake[1]}) {
      if (fd >= 0) ::close(fd);
    }
  }

  // Waits up to `timeout` (forever when negative); true when woken.
  bool wait_for_wake(int timeout_ms) const {
    pollfd wake_fd = {wake[0], POLLIN, 0};
    while (true) {
      const int ready = ::poll(&wake_fd, 1, timeout_ms);
      if (ready > 0) return true;
      if (ready == 0) return false;
      if (errno != EINTR) return false;
    }
  }

  // A line from the launcher after its welcome: {"type":"dump"} asks for
  // the flight recorder's records (the job hangs). Anything else is
  // ignored: the launcher may know requests this rank does not.
  static void on_request(const std::string& line) {
    const nlohmann::json request = nlohmann::json::parse(line, nullptr, false);
    if (request.is_object() && request.contains("type") && request["type"] == "dump") {
      dump_flight_records("the launcher found the job hung and asked for them");
    }
  }

  void watch() {
    bool welcomed = false;
    std::string received;
    std::string reason;
    auto next_alive = std::chrono::steady_clock::now() + kAliveInterval;
    while (reason.empty()) {
      pollfd fds[2] = {{wake[0], POLLIN, 0}, {socket, POLLIN | POLLRDHUP, 0}};
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_alive) {
        send(alive_line());
        next_alive = now + kAliveInterval;
      }
      const auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_alive - now).count() + 1;
      const int ready = ::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(1, wait)));
      if (ready < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (ready == 0) continue;
      if (fds[0].revents != 0) return;  // the client is going away
      char chunk[256];
      const ssize_t got = ::recv(socket, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (got > 0) {
        received.append(chunk, static_cast<std::size_t>(got));
        for (std::size_t end; (end = received.find('\n')) != std::string::npos;) {
          // The first line is the welcome; later ones are requests.
          if (welcomed) on_request(received.substr(0, end));
          welcomed = true;
          received.erase(0, end + 1);
        }
        if (received.size() > 4096) received.clear();  // never grows
        continue;
      }
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      reason = got == 0 ? "the launcher closed the connection"
                        : std::string("the connection failed: ") + std::strerror(errno);
    }
    if (!welcomed) {
      // Closed before the welcome: the launcher refused this rank (a token
      // of another run), which is no reason to stop training.
      log::warn(
          "heartbeats disabled: the launcher at {} refused this rank ({}); is "
          "LOCKSTEP_MONITOR_TOKEN left over from another run?",
          address, reason);
      broken = true;
      return;
    }
    broken = true;
    log::error(
        "lost the launcher (lockstep run) at {}: {}; it is no longer watching this job, "
        "so this rank checkpoints if it can and stops (it exits in at most {:.0f} s)",
        address, reason, static_cast<double>(exit_after.count()) / 1000.0);
    if (on_lost) on_lost(reason);
    if (wait_for_wake(static_cast<int>(exit_after.count()))) return;
    log::error("still running {:.0f} s after losing the launcher: exiting now",
               static_cast<double>(exit_after.count()) / 1000.0);
    std::_Exit(1);
  }
};

HeartbeatClient::HeartbeatClient(const std::string& address, const std::string& token, int rank,
                                 int world_size, const std::string& host,
                                 std::int64_t restart_count, LauncherLost on_launcher_lost,
                                 std::chrono::milliseconds exit_after,
                                 std::chrono::milliseconds connect_timeout, bool required,
                                 const std::string& relay_address)
    : channel_(std::make_unique<Channel>()) {
  channel_->address = address;
  detail::ChannelSocket connection;
  if (!relay_address.empty()) {
    connection = detail::connect_channel(relay_address, std::min(connect_timeout, kRelayTimeout));
    if (connection.fd >= 0) {
      channel_->relayed = true;
      channel_->address = fmt::format("{} (through this node's relay)", address);
    } else {
      log::warn(
          "rank {} cannot reach its node's heartbeat relay ({}); it reports to the "
          "launcher directly",
          rank, connection.problem);
    }
  }
  if (connection.fd < 0) connection = detail::connect_channel(address, connect_timeout);
  if (connection.fd < 0) {
    channel_.reset();
    const std::string what = fmt::format("rank {} on {} cannot reach the launcher at {} ({})", rank,
                                         host, address, connection.problem);
    if (!required) {
      log::warn("heartbeats disabled: {}; this rank trains unwatched", what);
      return;
    }
    const std::string message = fmt::format(
        "{}. It stops: a run its launcher cannot see would not be watched (no hang detection, "
        "no restarts). Give `lockstep run --monitor-address` an address or interface of the "
        "launcher's host that {} reaches, or pass --allow-unmonitored to train unwatched",
        what, host);
    log::error("{}", message);
    throw IoError(message);
  }
  channel_->socket = connection.fd;
  channel_->on_lost = std::move(on_launcher_lost);
  channel_->exit_after = exit_after;
  nlohmann::json hello = {{"type", "hello"},
                          {"token", token},
                          {"rank", rank},
                          {"world_size", world_size},
                          {"pid", ::getpid()},
                          {"host", host},
                          {"restart_count", restart_count}};
  send_line(hello.dump());
  if (pipe2(channel_->wake, O_CLOEXEC) != 0) {
    log::warn("cannot watch the launcher's connection: {}", std::strerror(errno));
    return;
  }
  Channel* channel = channel_.get();
  channel_->watcher = std::thread([channel] { channel->watch(); });
}

HeartbeatClient::HeartbeatClient() = default;
HeartbeatClient::HeartbeatClient(HeartbeatClient&& other) noexcept = default;
HeartbeatClient& HeartbeatClient::operator=(HeartbeatClient&& other) noexcept = default;
HeartbeatClient::~HeartbeatClient() = default;

bool HeartbeatClient::connected() const { return channel_ != nullptr && !channel_->broken; }

bool HeartbeatClient::through_relay() const { return channel_ != nullptr && channel_->relayed; }

void HeartbeatClient::send_line(const std::string& line) {
  if (channel_ != nullptr) channel_->send(line);
}

void HeartbeatClient::step(std::int64_t step, double step_seconds,
                           const std::map<std::string, double>& metrics,
                           std::optional<double> compute_seconds) {
  if (!connected()) return;
  last_step_ = step;
  nlohmann::json message = {
      {"type", "step"}, {"step", step}, {"step_time", step_seconds}, {"metrics", metrics}};
  if (compute_seconds) {
    pending_compute_ += *compute_seconds;
    ++pending_steps_;
    message["compute"] = pending_compute_ / static_cast<double>(pending_steps_);
    message["steps"] = pending_steps_;
  }
  std::string line = message.dump();
  const auto now = std::chrono::steady_clock::now();
  if (now - last_step_sent_ < min_interval_) {
    held_step_ = std::move(line);
    return;
  }
  last_step_sent_ = now;
  held_step_.clear();
  pending_compute_ = 0;
  pending_steps_ = 0;
  send_line(line);
}

void HeartbeatClient::send_held_step() {
  if (held_step_.empty()) return;
  send_line(held_step_);
  held_step_.clear();
  pending_compute_ = 0;
  pending_steps_ = 0;
}

void HeartbeatClient::checkpoint(std::int64_t step, double stall_seconds) {
  send_held_step();
  send_line(
      nlohmann::json{{"type", "checkpoint"}, {"step", step}, {"stall", stall_seconds}}.dump());
}

void HeartbeatClient::exit(int exit_code, bool stopped_on_request) {
  send_held_step();
  send_line(nlohmann::json{{"type", "exit"},
                           {"code", exit_code},
                           {"last_step", last_step_},
                           {"stopped", stopped_on_request}}
                .dump());
}

void HeartbeatClient::fault(const std::string& what, const std::vector<int>& ranks) {
  send_line(nlohmann::json{{"type", "fault"}, {"what", what}, {"ranks", ranks}}.dump());
}

}  // namespace lockstep
