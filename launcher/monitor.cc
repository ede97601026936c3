#include "monitor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lockstep/channel_rules.h"
#include "lockstep/error.h"

namespace lockstep::launcher {

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;
// A relay's batch carries the messages of a node's ranks (it keeps its
// lines under 256 KiB plus one message).
constexpr std::size_t kMaxRelayLine = 1024 * 1024;
constexpr std::size_t kMaxRanksPerRelay = 1 << 16;
// More ranks than any machine has: a rank number beyond it is malformed.
constexpr int kMaxRanks = 1 << 24;
constexpr std::size_t kMaxFaultText = 2048;
// An alive line reports a few communicators with short descriptions.
constexpr std::size_t kMaxCollectives = 8;
constexpr std::size_t kMaxChannelText = 256;
// A step reports a handful of metrics, each under a short name; /metrics
// and the status line show every one (the first kMaxMetrics by name).
constexpr std::size_t kMaxMetrics = 32;
constexpr std::size_t kMaxMetricName = 64;

// A member that is not an integer its field can hold: a float, text, or a
// number out of range. Caught by parse_channel_line() like nlohmann's own
// type errors.
struct NotAnInteger {};

// `value` as a T, exactly. nlohmann's get<T>() would truncate an integer
// that T cannot hold into another valid-looking one, and converting a float
// out of T's range is undefined behaviour.
template <typename T>
T integer_value(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (number > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) throw NotAnInteger{};
    return static_cast<T>(number);
  }
  if (!value.is_number_integer()) throw NotAnInteger{};
  const auto number = value.get<std::int64_t>();
  if (number < std::numeric_limits<T>::min() || number > std::numeric_limits<T>::max()) {
    throw NotAnInteger{};
  }
  return static_cast<T>(number);
}

// The integer member `key` of `message`, or `fallback` when there is none.
template <typename T>
T integer_member(const nlohmann::json& message, const char* key, T fallback) {
  return message.contains(key) ? integer_value<T>(message.at(key)) : fallback;
}

}  // namespace

Monitor::Monitor(const std::string& bind_address, std::string token, MonitorLimits limits)
    : token_(std::move(token)), limits_(limits) {
  listen_fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_fd_) throw IoError(fmt::format("monitor socket: {}", std::strerror(errno)));
  const int one = 1;
  setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  if (inet_pton(AF_INET, bind_address.c_str(), &address.sin_addr) != 1) {
    throw UsageError(fmt::format("monitor bind address '{}' is not an IPv4 address", bind_address));
  }
  if (bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listen_fd_.get(), 1024) != 0) {
    throw IoError(
        fmt::format("monitor cannot listen on {}: {}", bind_address, std::strerror(errno)));
  }
  socklen_t length = sizeof(address);
  getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw IoError(fmt::format("monitor pipe: {}", std::strerror(errno)));
  }
  wake_read_.reset(wake[0]);
  wake_write_.reset(wake[1]);
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_) throw IoError(fmt::format("monitor epoll: {}", std::strerror(errno)));
  for (const int fd : {wake_read_.get(), listen_fd_.get()}) {
    epoll_event interest{};
    interest.events = EPOLLIN;
    interest.data.fd = fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &interest) != 0) {
      throw IoError(fmt::format("monitor epoll_ctl: {}", std::strerror(errno)));
    }
  }
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  const std::size_t soft =
      files.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 20 : std::size_t(files.rlim_cur);
  max_connections_ = soft > limits_.reserved_fds * 2 ? soft - limits_.reserved_fds : soft / 2;
  thread_ = std::thread([this] { run(); });
  // Named for top -H and the benchmarks, which count its CPU apart.
  pthread_setname_np(thread_.native_handle(), "monitor");
}

Monitor::~Monitor() {
  stopping_ = true;
  const char byte = 0;
  [[maybe_unused]] const ssize_t written = write(wake_write_.get(), &byte, 1);
  if (thread_.joinable()) thread_.join();
}

void Monitor::request_dump() {
  dump_requested_ = true;
  const char byte = 0;
  [[maybe_unused]] const ssize_t written = write(wake_write_.get(), &byte, 1);
}

void Monitor::send_to_ranks(std::string_view line) {
  for (const auto& [fd, connection] : connections_) {
    // A rank whose socket buffer is full is not waited for: the request is
    // best effort, and this thread serves every rank.
    if (connection.authenticated) send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

std::vector<RankEvent> Monitor::drain() {
  MutexLock lock(mutex_);
  std::vector<RankEvent> events;
  events.swap(events_);
  return events;
}

void Monitor::push(RankEvent event) {
  MutexLock lock(mutex_);
  events_.push_back(std::move(event));
}

void Monitor::push_all(std::vector<RankEvent>& events) {
  if (events.empty()) return;
  MutexLock lock(mutex_);
  for (RankEvent& event : events) events_.push_back(std::move(event));
  events.clear();
}

int Monitor::next_timeout_ms(Clock::time_point now) const {
  Clock::time_point wake = now + std::chrono::milliseconds(500);
  if (listen_paused_until_) wake = std::min(wake, *listen_paused_until_);
  for (const auto& [fd, id] : strangers_) {
    const auto it = connections_.find(fd);
    if (it == connections_.end() || it->second.id != id || it->second.authenticated) continue;
    wake = std::min(wake, it->second.opened + limits_.hello_deadline);
    break;  // the oldest stranger expires first
  }
  const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
  return static_cast<int>(std::clamp<std::int64_t>(wait, 0, 500)) + 1;
}

void Monitor::run() {
  std::vector<epoll_event> ready(256);
  while (!stopping_) {
    const int count = epoll_wait(epoll_fd_.get(), ready.data(), static_cast<int>(ready.size()),
                                 next_timeout_ms(Clock::now()));
    if (count < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < static_cast<std::size_t>(std::max(count, 0)); ++i) {
      const int fd = ready[i].data.fd;
      if (fd == wake_read_.get()) {
        // Woken for stopping_ (which ends the loop) or a request to send.
        char bytes[64];
        while (read(wake_read_.get(), bytes, sizeof(bytes)) > 0) {
        }
        continue;
      }
      if (fd == listen_fd_.get()) {
        if (!accept_new()) {
          // Out of descriptors or memory: stop listening for a moment
          // instead of spinning on a listener that stays readable.
          epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
          listen_paused_until_ = Clock::now() + limits_.accept_backoff;
        }
        continue;
      }
      const auto it = connections_.find(fd);
      if (it == connections_.end()) continue;  // closed earlier in this batch
      if (!read_from(it->second)) close_connection(fd);
    }
    const auto now = Clock::now();
    if (listen_paused_until_ && now >= *listen_paused_until_) {
      listen_paused_until_.reset();
      epoll_event interest{};
      interest.events = EPOLLIN;
      interest.data.fd = listen_fd_.get();
      epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_.get(), &interest);
    }
    expire_strangers(now);
    // The newline first ends a request an earlier short send left cut.
    if (dump_requested_.exchange(false)) send_to_ranks("\n{\"type\":\"dump\"}\n");
  }
  for (auto& [fd, connection] : connections_) connection.fd.reset();
  connections_.clear();
  open_connections_ = 0;
}

bool Monitor::make_room() {
  while (stranger_count_ >= limits_.max_strangers || connections_.size() >= max_connections_) {
    if (!drop_oldest_stranger()) return false;
  }
  return true;
}

bool Monitor::drop_oldest_stranger() {
  while (!strangers_.empty()) {
    const auto [fd, id] = strangers_.front();
    strangers_.pop_front();
    const auto it = connections_.find(fd);
    if (it == connections_.end() || it->second.id != id || it->second.authenticated) continue;
    ++refused_;
    close_connection(fd);
    return true;
  }
  return false;
}

void Monitor::expire_strangers(Clock::time_point now) {
  while (!strangers_.empty()) {
    const auto [fd, id] = strangers_.front();
    const auto it = connections_.find(fd);
    if (it != connections_.end() && it->second.id == id && !it->second.authenticated) {
      if (now - it->second.opened <= limits_.hello_deadline) return;
      ++refused_;
      close_connection(fd);
    }
    strangers_.pop_front();
  }
}

bool Monitor::accept_new() {
  while (true) {
    UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      ++accept_failures_;
      // Out of descriptors: free one by dropping the oldest stranger, and
      // rest before trying again.
      if (errno == EMFILE || errno == ENFILE) drop_oldest_stranger();
      return false;
    }
    if (!make_room()) {
      ++refused_;  // every connection is a rank's: the newcomer cannot be one
      continue;
    }
    Connection connection;
    connection.id = next_id_++;
    connection.opened = Clock::now();
    const int number = fd.get();
    epoll_event interest{};
    interest.events = EPOLLIN | EPOLLRDHUP;
    interest.data.fd = number;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, number, &interest) != 0) continue;
    connection.fd = std::move(fd);
    strangers_.emplace_back(number, connection.id);
    ++stranger_count_;
    auto [it, inserted] = connections_.emplace(number, std::move(connection));
    open_connections_ = connections_.size();
    // A rank's hello usually arrives with its connection: read it now, so
    // that a flood of strangers behind it cannot push it out.
    if (!read_from(it->second)) close_connection(number);
  }
}

bool Monitor::read_from(Connection& connection) {
  // One read per readiness: epoll is level-triggered and reports the
  // connection again while data is left, and a system call saved per
  // message is what 16,384 relays a second need most.
  const ssize_t got = read(connection.fd.get(), chunk_.data(), chunk_.size());
  if (got == 0) return false;  // closed by the rank
  if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  connection.buffer.append(chunk_.data(), static_cast<std::size_t>(got));
  std::size_t start = 0;
  for (std::size_t newline; (newline = connection.buffer.find('\n', start)) != std::string::npos;
       start = newline + 1) {
    if (!handle_line(connection,
                     std::string_view(connection.buffer).substr(start, newline - start))) {
      return false;
    }
  }
  connection.buffer.erase(0, start);
  if (connection.buffer.size() > (connection.relay ? kMaxRelayLine : kMaxLine)) {
    ++malformed_;
    return false;
  }
  return true;
}

namespace {

// The "collectives" of an alive report (or of a relayed step); false when
// they are malformed. Throws what nlohmann::json throws for wrong types.
bool read_collectives(const nlohmann::json& message, RankEvent& event) {
  if (!message.contains("collectives")) return true;
  event.has_collectives = true;
  const nlohmann::json& collectives = message.at("collectives");
  if (!collectives.is_array() || collectives.size() > kMaxCollectives) return false;
  for (const nlohmann::json& entry : collectives) {
    CollectiveReport report;
    report.channel = entry.at("channel").get<std::string>();
    report.started = integer_value<std::int64_t>(entry.at("started"));
    report.finished = integer_value<std::int64_t>(entry.at("finished"));
    report.waiting_in = entry.value("waiting_in", std::string());
    if (report.started < 0 || report.finished < 0 || report.channel.size() > kMaxChannelText ||
        report.waiting_in.size() > kMaxChannelText) {
      return false;
    }
    event.collectives.push_back(std::move(report));
  }
  return true;
}

}  // namespace

ChannelLine parse_channel_line(std::string_view line, bool authenticated, std::string_view token) {
  return parse_channel_message(nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false),
                               authenticated, token);
}

ChannelLine parse_channel_message(const nlohmann::json& message, bool authenticated,
                                  std::string_view token) {
  ChannelLine parsed;
  if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) {
    parsed.verdict = authenticated ? ChannelLine::kMalformed : ChannelLine::kGarbage;
    return parsed;
  }
  const std::string type = message["type"];
  RankEvent& event = parsed.event;
  event.time = Clock::now();
  parsed.verdict = ChannelLine::kMalformed;
  try {
    if (!authenticated && type == "node") {
      // A node's relay, with the token: its lines carry its ranks' messages.
      if (!message.contains("token") || !message["token"].is_string() ||
          !channel::same_token(message["token"].get<std::string>(), token)) {
        parsed.verdict = ChannelLine::kStranger;
        return parsed;
      }
      event.host = message.value("host", std::string());
      event.pid = integer_member(message, "pid", 0);
      parsed.verdict = event.host.size() > 255 ? ChannelLine::kBadHello : ChannelLine::kRelay;
      return parsed;
    }
    if (!authenticated) {
      if (type != "hello" || !message.contains("token") || !message["token"].is_string() ||
          !channel::same_token(message["token"].get<std::string>(), token)) {
        parsed.verdict = ChannelLine::kStranger;
        return parsed;
      }
      // Every field is read before the connection counts as a rank's, so a
      // malformed hello leaves it a stranger.
      event.kind = RankEvent::Kind::kHello;
      event.rank = integer_value<int>(message.at("rank"));
      event.restart_count = integer_member(message, "restart_count", std::int64_t{0});
      event.pid = integer_member(message, "pid", 0);
      event.world_size = integer_member(message, "world_size", 0);
      event.host = message.value("host", std::string());
      if (event.rank < 0 || event.rank >= kMaxRanks || event.world_size < 0 ||
          event.world_size > kMaxRanks || event.restart_count < 0 || event.host.size() > 255) {
        parsed.verdict = ChannelLine::kBadHello;
        return parsed;
      }
    } else if (type == "step") {
      event.kind = RankEvent::Kind::kStep;
      event.step = integer_value<std::int64_t>(message.at("step"));
      event.step_time = message.value("step_time", 0.0);
      if (message.contains("metrics")) {
        event.metrics = message["metrics"].get<std::map<std::string, double>>();
      }
      if (event.step < 0) return parsed;
      // Beyond the bounds, metrics are dropped, not the step: its heartbeat
      // is what keeps the job from counting as hung.
      std::erase_if(event.metrics, [](const auto& metric) {
        return metric.first.empty() || metric.first.size() > kMaxMetricName;
      });
      while (event.metrics.size() > kMaxMetrics)
        event.metrics.erase(std::prev(event.metrics.end()));
      // A relay sends a rank's step and alive report as one message.
      if (!read_collectives(message, event)) return parsed;
      // Like the metrics, a compute time out of bounds is dropped, not the step.
      if (message.contains("compute") && message.contains("steps") &&
          message["compute"].is_number() && message["steps"].is_number_integer()) {
        const double compute = message["compute"].get<double>();
        const auto steps = message["steps"].get<std::int64_t>();
        if (channel::plausible_compute(compute, steps)) {
          event.compute = compute;
          event.compute_steps = steps;
        }
      }
    } else if (type == "checkpoint") {
      event.kind = RankEvent::Kind::kCheckpoint;
      event.step = integer_value<std::int64_t>(message.at("step"));
      event.stall = message.value("stall", 0.0);
      if (event.step < 0) return parsed;
    } else if (type == "fault") {
      event.kind = RankEvent::Kind::kFault;
      event.what = message.at("what").get<std::string>();
      if (message.contains("ranks")) {
        const nlohmann::json& ranks = message.at("ranks");
        if (!ranks.is_array()) return parsed;
        for (const nlohmann::json& rank : ranks) event.blamed.push_back(integer_value<int>(rank));
      }
      if (event.what.size() > kMaxFaultText) event.what.resize(kMaxFaultText);
      if (std::any_of(event.blamed.begin(), event.blamed.end(),
                      [](int rank) { return rank < 0 || rank >= kMaxRanks; })) {
        return parsed;
      }
    } else if (type == "alive") {
      event.kind = RankEvent::Kind::kAlive;
      if (!read_collectives(message, event)) return parsed;
    } else if (type == "exit") {
      event.kind = RankEvent::Kind::kExit;
      event.exit_code = integer_member(message, "code", 0);
      event.step = integer_member(message, "last_step", std::int64_t{-1});
      event.stopped = message.value("stopped", false);
    } else {
      return parsed;
    }
  } catch (const nlohmann::json::exception&) {
    parsed.verdict = authenticated ? ChannelLine::kMalformed : ChannelLine::kBadHello;
    return parsed;
  } catch (const NotAnInteger&) {
    parsed.verdict = authenticated ? ChannelLine::kMalformed : ChannelLine::kBadHello;
    return parsed;
  }
  parsed.verdict = ChannelLine::kEvent;
  return parsed;
}

bool Monitor::handle_line(Connection& connection, std::string_view line) {
  if (connection.relay) return handle_batch(connection, line);
  ChannelLine parsed = parse_channel_line(line, connection.authenticated, token_);
  switch (parsed.verdict) {
    case ChannelLine::kRelay: {
      ++relays_;
      connection.relay = true;
      connection.relay_pid = parsed.event.pid;
      connection.authenticated = true;
      --stranger_count_;
      static constexpr char kWelcome[] = "{\"type\":\"welcome\"}\n";
      [[maybe_unused]] const ssize_t sent =
          send(connection.fd.get(), kWelcome, sizeof(kWelcome) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      return true;
    }
    case ChannelLine::kGarbage:
      ++malformed_;
      ++refused_;
      return false;
    case ChannelLine::kStranger:
      ++refused_;
      return false;
    case ChannelLine::kBadHello:
      ++malformed_;
      return false;
    case ChannelLine::kMalformed:
      ++malformed_;
      return true;
    case ChannelLine::kEvent:
      break;
  }
  RankEvent& event = parsed.event;
  if (event.kind == RankEvent::Kind::kHello) {
    connection.rank = event.rank;
    connection.restart_count = event.restart_count;
    connection.authenticated = true;
    --stranger_count_;
    // The welcome tells the rank that this launcher watches it; from now on
    // a closed connection means the launcher is gone.
    static constexpr char kWelcome[] = "{\"type\":\"welcome\"}\n";
    [[maybe_unused]] const ssize_t sent =
        send(connection.fd.get(), kWelcome, sizeof(kWelcome) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  if (event.kind == RankEvent::Kind::kExit) connection.said_exit = true;
  event.rank = connection.rank;
  event.restart_count = connection.restart_count;
  push(std::move(event));
  return true;
}

bool Monitor::handle_batch(Connection& connection, std::string_view line) {
  const nlohmann::json batch = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!batch.is_object() || !batch.contains("messages") || !batch["messages"].is_array()) {
    ++malformed_;
    return true;
  }
  // The batch's events go to the supervisor together, under one lock.
  std::vector<RankEvent> events;
  events.reserve(batch["messages"].size());
  for (const nlohmann::json& message : batch["messages"]) {
    if (!message.is_object() || !message.contains("rank") || !message["rank"].is_number_integer() ||
        message["rank"].get<std::int64_t>() < 0 ||
        message["rank"].get<std::int64_t>() >= kMaxRanks) {
      ++malformed_;
      continue;
    }
    const int rank = message["rank"].get<int>();
    const auto carried = connection.carried.find(rank);
    if (message.contains("type") && message["type"] == "closed") {
      // The rank's connection to the relay ended.
      if (carried != connection.carried.end()) {
        events.push_back(
            closed_event(rank, carried->second.restart_count, carried->second.said_exit));
        connection.carried.erase(carried);
      }
      continue;
    }
    const bool known = carried != connection.carried.end();
    ChannelLine parsed = parse_channel_message(message, known, token_);
    if (parsed.verdict != ChannelLine::kEvent) {
      ++malformed_;
      if (!known) ++refused_;
      continue;
    }
    RankEvent& event = parsed.event;
    if (event.kind == RankEvent::Kind::kHello) {
      if (event.rank != rank || connection.carried.size() >= kMaxRanksPerRelay) {
        ++malformed_;
        continue;
      }
      connection.carried[rank] = {
          .restart_count = event.restart_count, .said_exit = false, .pid = event.pid};
      const std::string welcome = fmt::format("{{\"type\":\"welcome\",\"rank\":{}}}\n", rank);
      [[maybe_unused]] const ssize_t sent =
          send(connection.fd.get(), welcome.data(), welcome.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      Connection::Carried& state = carried->second;
      if (event.kind == RankEvent::Kind::kExit) state.said_exit = true;
      event.rank = rank;
      event.restart_count = state.restart_count;
    }
    events.push_back(std::move(event));
  }
  push_all(events);
  return true;
}

RankEvent Monitor::closed_event(int rank, std::int64_t restart_count, bool said_exit) {
  RankEvent event;
  event.kind = RankEvent::Kind::kClosed;
  event.time = Clock::now();
  event.rank = rank;
  event.restart_count = restart_count;
  event.exit_code = said_exit ? 0 : -1;
  return event;
}

void Monitor::close_connection(int fd) {
  const auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  Connection& connection = it->second;
  if (connection.relay) {
    // A relay that ends takes its node's ranks with it: each one that did
    // not say goodbye counts as died, now.
    // The relay's own rank first: it is the one that died (or the relay
    // with it); the others end with it, and come after.
    std::vector<RankEvent> events;
    for (const bool relays_rank : {true, false}) {
      for (const auto& [rank, state] : connection.carried) {
        if ((state.pid == connection.relay_pid) == relays_rank) {
          events.push_back(closed_event(rank, state.restart_count, state.said_exit));
        }
      }
    }
    push_all(events);
  } else if (connection.authenticated) {
    // A rank whose connection ends without saying goodbye has died.
    push(closed_event(connection.rank, connection.restart_count, connection.said_exit));
  } else {
    --stranger_count_;
  }
  epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  connections_.erase(it);  // closes the descriptor
  open_connections_ = connections_.size();
}

}  // namespace lockstep::launcher
