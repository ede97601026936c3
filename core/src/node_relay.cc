#include "lockstep/node_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "channel_socket.h"
#include "lockstep/channel_rules.h"
#include "lockstep/error.h"
#include "lockstep/log.h"

namespace lockstep {

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;  // from a rank, as the launcher allows
// A batch line stays well under the launcher's limit for relays.
constexpr std::size_t kMaxBatchBytes = 256 * 1024;
// Lines for the launcher not yet taken by the kernel; beyond it new batches
// are dropped (a launcher that does not read must not grow this process).
constexpr std::size_t kMaxUnsent = 8 * 1024 * 1024;
constexpr std::size_t kMaxUnauthenticated = 64;

// A fresh, unguessable name for the abstract socket.
std::string random_name() {
  unsigned char bytes[12] = {};
  std::size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(fmt::format("getrandom: {}", std::strerror(errno)));
    got += static_cast<std::size_t>(n);
  }
  std::string name = "lockstep-relay-";
  for (const unsigned char byte : bytes) name += fmt::format("{:02x}", byte);
  return name;
}

}  // namespace

struct NodeRelay::State {
  struct Rank {
    int fd = -1;
    int rank = -1;          // -1 until its hello showed the token
    bool welcomed = false;  // the launcher's welcome was passed on
    bool said_exit = false;
    std::chrono::steady_clock::time_point opened;
    std::string in;
    std::string out;  // lines for the rank not yet taken by the kernel
  };
  // What a rank said since the last batch that only its newest line of
  // matters for.
  struct Pending {
    std::optional<nlohmann::json> step;
    double compute_sum = 0;
    std::int64_t compute_steps = 0;
    std::optional<nlohmann::json> alive;
  };

  std::string token;
  std::string host;
  Options options;
  int listen_fd = -1;
  int upstream_fd = -1;
  int wake[2] = {-1, -1};
  std::atomic<std::int64_t> finish_ms{-1};  // set by finish()
  std::vector<Rank> ranks;
  std::map<int, Pending> pending;
  nlohmann::json urgent = nlohmann::json::array();
  std::string upstream_in;
  std::string upstream_out;
  std::int64_t dropped_batches = 0;

  ~State() {
    for (const Rank& rank : ranks) ::close(rank.fd);
    for (const int fd : {listen_fd, upstream_fd, wake[0], wake[1]}) {
      if (fd >= 0) ::close(fd);
    }
  }

  // Moves a rank's pending step and alive report into `batch`.
  void take_pending(int rank, nlohmann::json& batch) {
    const auto it = pending.find(rank);
    if (it == pending.end()) return;
    Pending& entry = it->second;
    if (entry.step) {
      nlohmann::json& step = *entry.step;
      step["rank"] = rank;
      if (entry.compute_steps > 0) {
        step["compute"] = entry.compute_sum / static_cast<double>(entry.compute_steps);
        step["steps"] = entry.compute_steps;
      }
      // One message for both: half the launcher's work per rank.
      if (entry.alive && entry.alive->contains("collectives")) {
        step["collectives"] = std::move((*entry.alive)["collectives"]);
        entry.alive.reset();
      }
      batch.push_back(std::move(step));
    }
    if (entry.alive) {
      (*entry.alive)["rank"] = rank;
      batch.push_back(std::move(*entry.alive));
    }
    pending.erase(it);
  }

  // Queues `messages` for the launcher as batch lines of bounded size.
  // `droppable`: periodic batches give way when the launcher does not read;
  // hellos, goodbyes and closings never do (they are few).
  void send_batch(nlohmann::json& messages, bool droppable) {
    if (messages.empty()) return;
    nlohmann::json line = {{"type", "batch"}, {"messages", nlohmann::json::array()}};
    std::size_t bytes = 0;
    const auto emit = [&] {
      std::string text = line.dump();
      text += '\n';
      if (droppable && upstream_out.size() + text.size() > kMaxUnsent) {
        if (dropped_batches++ == 0) {
          log::warn("the launcher does not read this node's heartbeats; dropping them");
        }
      } else {
        upstream_out += text;
      }
      line["messages"] = nlohmann::json::array();
      bytes = 0;
    };
    for (nlohmann::json& message : messages) {
      std::string text = message.dump();
      if (bytes > 0 && bytes + text.size() > kMaxBatchBytes) emit();
      bytes += text.size() + 1;
      line["messages"].push_back(std::move(message));
    }
    emit();
    messages = nlohmann::json::array();
  }

  // Sends what the kernel takes without blocking; false when the launcher's
  // connection failed.
  bool flush_upstream() {
    while (!upstream_out.empty()) {
      const ssize_t sent = ::send(upstream_fd, upstream_out.data(), upstream_out.size(),
                                  MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent > 0) {
        upstream_out.erase(0, static_cast<std::size_t>(sent));
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      return sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
  }

  static void send_to(Rank& rank, std::string_view line) {
    if (rank.out.size() + line.size() > kMaxLine) return;  // a rank that never reads
    rank.out.append(line);
    while (!rank.out.empty()) {
      const ssize_t sent =
          ::send(rank.fd, rank.out.data(), rank.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent > 0) {
        rank.out.erase(0, static_cast<std::size_t>(sent));
      } else if (!(sent < 0 && errno == EINTR)) {
        return;
      }
    }
  }

  // A line from the launcher: a welcome for one rank, or a request for all.
  void from_launcher(const std::string& line) {
    const nlohmann::json message = nlohmann::json::parse(line, nullptr, false);
    if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) return;
    const std::string& type = message["type"].get_ref<const std::string&>();
    if (type == "welcome" && message.contains("rank") && message["rank"].is_number_integer()) {
      const int rank = message["rank"].get<int>();
      for (Rank& entry : ranks) {
        if (entry.rank == rank && !entry.welcomed) {
          entry.welcomed = true;
          send_to(entry, "{\"type\":\"welcome\"}\n");
        }
      }
    } else if (type != "welcome") {
      // Requests ("dump") are for every rank.
      const std::string text = line + "\n";
      // Only to welcomed ranks: a rank takes its first line for the welcome.
      for (Rank& entry : ranks) {
        if (entry.welcomed) send_to(entry, text);
      }
    }
  }

  // Returns false when the rank's connection must be closed.
  bool from_rank(Rank& rank, const std::string& line) {
    nlohmann::json message = nlohmann::json::parse(line, nullptr, false);
    if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) {
      return rank.rank >= 0;  // a rank's nonsense is the launcher's to count; a stranger's ends it
    }
    const std::string type = message["type"];
    if (rank.rank < 0) {
      if (type != "hello" || !message.contains("token") || !message["token"].is_string() ||
          !channel::same_token(message["token"].get<std::string>(), token) ||
          !message.contains("rank") || !message["rank"].is_number_integer() ||
          message["rank"].get<std::int64_t>() < 0 ||
          message["rank"].get<std::int64_t>() > (std::int64_t{1} << 24)) {
        return false;
      }
      rank.rank = message["rank"].get<int>();
      urgent.push_back(std::move(message));  // the launcher checks the token again
      return true;
    }
    if (type == "step") {
      Pending& entry = pending[rank.rank];
      if (message.contains("compute") && message["compute"].is_number() &&
          message.contains("steps") && message["steps"].is_number_integer()) {
        const double compute = message["compute"].get<double>();
        const auto steps = message["steps"].get<std::int64_t>();
        if (channel::plausible_compute(compute, steps)) {
          entry.compute_sum += compute * static_cast<double>(steps);
          entry.compute_steps += steps;
        }
        message.erase("compute");
        message.erase("steps");
      }
      entry.step = std::move(message);
      return true;
    }
    if (type == "alive") {
      pending[rank.rank].alive = std::move(message);
      return true;
    }
    // Anything else goes now, after the rank's pending step: the launcher
    // sees a checkpoint or a goodbye after the step it followed.
    take_pending(rank.rank, urgent);
    if (type == "exit") rank.said_exit = true;
    message["rank"] = rank.rank;
    urgent.push_back(std::move(message));
    return true;
  }

  // Reads what the rank sent; false when its connection ended.
  bool read_rank(Rank& rank) {
    char chunk[4096];
    while (true) {
      const ssize_t got = ::recv(rank.fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (got == 0) return false;
      if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      rank.in.append(chunk, static_cast<std::size_t>(got));
      for (std::size_t end; (end = rank.in.find('\n')) != std::string::npos;) {
        const std::string line = rank.in.substr(0, end);
        rank.in.erase(0, end + 1);
        if (!from_rank(rank, line)) return false;
      }
      if (rank.in.size() > kMaxLine) return false;
    }
  }

  void close_rank(std::size_t index) {
    Rank& rank = ranks[index];
    if (rank.rank >= 0) {
      // After a goodbye or not: the launcher tells the two apart.
      take_pending(rank.rank, urgent);
      urgent.push_back({{"type", "closed"}, {"rank", rank.rank}});
    }
    ::close(rank.fd);
    ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(index));
  }

  void accept_ranks() {
    while (true) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      // The abstract socket's name is visible to every user of the host
      // (/proc/net/unix): only this user's processes may even try a token.
      ucred peer{};
      socklen_t length = sizeof(peer);
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 ||
          peer.uid != ::getuid()) {
        ::close(fd);
        continue;
      }
      std::size_t strangers = 0;
      for (const Rank& rank : ranks) strangers += rank.rank < 0 ? 1u : 0u;
      if (ranks.size() >= options.max_connections || strangers >= kMaxUnauthenticated) {
        // Make room by dropping the oldest stranger, as the launcher does.
        const auto oldest = std::find_if(ranks.begin(), ranks.end(),
                                         [](const Rank& rank) { return rank.rank < 0; });
        if (oldest == ranks.end()) {
          ::close(fd);
          continue;
        }
        close_rank(static_cast<std::size_t>(oldest - ranks.begin()));
      }
      ranks.push_back({.fd = fd,
                       .rank = -1,
                       .welcomed = false,
                       .said_exit = false,
                       .opened = std::chrono::steady_clock::now(),
                       .in = {},
                       .out = {}});
      // A rank's hello comes with its connection: read it now, so that a
      // flood of strangers behind it cannot push it out.
      if (!read_rank(ranks.back())) close_rank(ranks.size() - 1);
    }
  }

  // Reads the launcher's lines; false when its connection ended.
  bool read_upstream() {
    char chunk[4096];
    while (true) {
      const ssize_t got = ::recv(upstream_fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (got == 0) return false;
      if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      upstream_in.append(chunk, static_cast<std::size_t>(got));
      for (std::size_t end; (end = upstream_in.find('\n')) != std::string::npos;) {
        from_launcher(upstream_in.substr(0, end));
        upstream_in.erase(0, end + 1);
      }
      if (upstream_in.size() > kMaxLine) upstream_in.clear();
    }
  }

  void flush_all_pending() {
    nlohmann::json batch = nlohmann::json::array();
    while (!pending.empty()) take_pending(pending.begin()->first, batch);
    send_batch(batch, /*droppable=*/true);
  }

  void run() {
    using Clock = std::chrono::steady_clock;
    auto next_batch = Clock::now() + options.interval;
    std::optional<Clock::time_point> finish_by;
    bool launcher_lost = false;
    while (true) {
      const auto now = Clock::now();
      // What could not wait is older than anything pending: it goes first.
      send_batch(urgent, /*droppable=*/false);
      if (now >= next_batch) {
        flush_all_pending();
        next_batch = now + options.interval;
      }
      if (!flush_upstream()) {
        launcher_lost = true;
        break;
      }
      for (std::size_t i = 0; i < ranks.size();) {
        if (ranks[i].rank < 0 && now - ranks[i].opened > options.hello_deadline) {
          close_rank(i);
        } else {
          ++i;
        }
      }
      if (const std::int64_t ms = finish_ms.load(); ms >= 0 && !finish_by) {
        finish_by = now + std::chrono::milliseconds(ms);
      }
      // Strangers do not hold the end: only ranks that showed the token.
      const bool ranks_gone =
          std::none_of(ranks.begin(), ranks.end(), [](const Rank& rank) { return rank.rank >= 0; });
      if (finish_by && (ranks_gone || now >= *finish_by)) break;
      std::vector<pollfd> fds;
      fds.reserve(ranks.size() + 3);
      fds.push_back({wake[0], POLLIN, 0});
      fds.push_back({upstream_fd,
                     static_cast<short>(POLLIN | POLLRDHUP | (upstream_out.empty() ? 0 : POLLOUT)),
                     0});
      fds.push_back({listen_fd, POLLIN, 0});
      for (const Rank& rank : ranks) fds.push_back({rank.fd, POLLIN | POLLRDHUP, 0});
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_batch - now);
      const int timeout = static_cast<int>(std::clamp<std::int64_t>(wait.count() + 1, 1, 100));
      if (::poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno == EINTR) continue;
        log::error("heartbeat relay: poll: {}", std::strerror(errno));
        launcher_lost = true;  // its ranks learn it, and report no more
        break;
      }
      if (fds[0].revents != 0) {
        char byte = 0;
        if (::read(wake[0], &byte, 1) == 1 && byte == 's') return;
      }
      if (fds[1].revents != 0 && !read_upstream()) {
        launcher_lost = true;
        break;
      }
      // Ranks first (by index, from the back, as closing erases), then new ones.
      for (std::size_t i = fds.size(); i-- > 3;) {
        if (fds[i].revents == 0) continue;
        const std::size_t index = i - 3;
        if (!read_rank(ranks[index])) close_rank(index);
      }
      if (fds[2].revents != 0) accept_ranks();
    }
    if (launcher_lost) {
      // The ranks learn it as they would directly: their connection closes.
      // Ranks that come later find nobody listening, and report directly.
      for (const Rank& rank : ranks) ::close(rank.fd);
      ranks.clear();
      ::close(listen_fd);
      listen_fd = -1;
      return;
    }
    // Finishing: the last lines go out, within a moment.
    send_batch(urgent, /*droppable=*/false);
    flush_all_pending();
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    while (!upstream_out.empty() && Clock::now() < deadline && flush_upstream()) {
      pollfd writable = {upstream_fd, POLLOUT, 0};
      ::poll(&writable, 1, 50);
    }
  }
};

NodeRelay::NodeRelay(const std::string& launcher_address, std::string token, std::string host,
                     Options options)
    : state_(std::make_unique<State>()) {
  State& state = *state_;
  state.token = std::move(token);
  state.host = std::move(host);
  state.options = options;
  const std::string name = random_name();
  address_ = "unix:@" + name;
  state.listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (state.listen_fd < 0) {
    throw IoError(fmt::format("heartbeat relay: socket: {}", std::strerror(errno)));
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(state.listen_fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      ::listen(state.listen_fd, 256) != 0) {
    throw IoError(
        fmt::format("heartbeat relay: cannot listen on @{}: {}", name, std::strerror(errno)));
  }
  detail::ChannelSocket upstream =
      detail::connect_channel(launcher_address, state.options.connect_timeout);
  if (upstream.fd < 0) {
    throw IoError(fmt::format("heartbeat relay of {} cannot reach the launcher at {} ({})",
                              state.host, launcher_address, upstream.problem));
  }
  state.upstream_fd = upstream.fd;
  if (::pipe2(state.wake, O_CLOEXEC) != 0) {
    throw IoError(fmt::format("heartbeat relay: pipe: {}", std::strerror(errno)));
  }
  state.upstream_out =
      nlohmann::json{
          {"type", "node"}, {"token", state.token}, {"host", state.host}, {"pid", ::getpid()}}
          .dump() +
      "\n";
  State* running = state_.get();
  thread_ = std::thread([running] { running->run(); });
}

void NodeRelay::finish(std::chrono::milliseconds timeout) {
  if (!thread_.joinable()) return;
  state_->finish_ms = std::max<std::int64_t>(0, timeout.count());
  const char byte = 'f';
  [[maybe_unused]] const ssize_t written = ::write(state_->wake[1], &byte, 1);
  thread_.join();
}

NodeRelay::~NodeRelay() {
  if (thread_.joinable()) {
    const char byte = 's';
    [[maybe_unused]] const ssize_t written = ::write(state_->wake[1], &byte, 1);
    thread_.join();
  }
}

}  // namespace lockstep
