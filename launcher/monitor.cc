#include "monitor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lockstep/error.h"

namespace lockstep::launcher {

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;
constexpr auto kHelloDeadline = std::chrono::seconds(10);

// Compares without an early exit so that timing does not leak the token.
bool same_token(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    difference = static_cast<unsigned char>(difference | (a[i] ^ b[i]));
  }
  return difference == 0;
}

}  // namespace

Monitor::Monitor(const std::string& bind_address, std::string token) : token_(std::move(token)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) throw IoError(fmt::format("monitor socket: {}", std::strerror(errno)));
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  if (inet_pton(AF_INET, bind_address.c_str(), &address.sin_addr) != 1) {
    throw UsageError(fmt::format("monitor bind address '{}' is not an IPv4 address", bind_address));
  }
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listen_fd_, 1024) != 0) {
    throw IoError(
        fmt::format("monitor cannot listen on {}: {}", bind_address, std::strerror(errno)));
  }
  socklen_t length = sizeof(address);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  if (pipe2(wake_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw IoError(fmt::format("monitor pipe: {}", std::strerror(errno)));
  }
  thread_ = std::thread([this] { run(); });
}

Monitor::~Monitor() {
  stopping_ = true;
  const char byte = 0;
  [[maybe_unused]] const ssize_t written = write(wake_fds_[1], &byte, 1);
  if (thread_.joinable()) thread_.join();
  for (Connection& connection : connections_) close(connection.fd);
  close(listen_fd_);
  close(wake_fds_[0]);
  close(wake_fds_[1]);
}

std::vector<RankEvent> Monitor::drain() {
  std::scoped_lock lock(mutex_);
  std::vector<RankEvent> events;
  events.swap(events_);
  return events;
}

void Monitor::push(RankEvent event) {
  std::scoped_lock lock(mutex_);
  events_.push_back(std::move(event));
}

void Monitor::run() {
  std::vector<pollfd> fds;
  while (!stopping_) {
    fds.clear();
    fds.push_back({wake_fds_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Connection& connection : connections_) fds.push_back({connection.fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), 500) < 0 && errno != EINTR) break;
    if (fds[1].revents & POLLIN) accept_new();
    const auto now = Clock::now();
    // fds[i + 2] belongs to connections_[i] as it was before accept_new().
    for (std::size_t i = 0; i + 2 < fds.size(); ++i) {
      Connection& connection = connections_[i];
      bool keep = true;
      if (fds[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) keep = read_from(connection);
      if (keep && !connection.authenticated && now - connection.opened > kHelloDeadline) {
        ++refused_;
        keep = false;
      }
      if (!keep) close_connection(connection);
    }
    std::erase_if(connections_, [](const Connection& c) { return c.fd < 0; });
  }
}

void Monitor::accept_new() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    Connection connection;
    connection.fd = fd;
    connection.opened = Clock::now();
    connections_.push_back(std::move(connection));
  }
}

bool Monitor::read_from(Connection& connection) {
  char chunk[4096];
  while (true) {
    const ssize_t got = read(connection.fd, chunk, sizeof(chunk));
    if (got == 0) return false;  // closed by the rank
    if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    connection.buffer.append(chunk, static_cast<std::size_t>(got));
    std::size_t newline;
    while ((newline = connection.buffer.find('\n')) != std::string::npos) {
      const std::string line = connection.buffer.substr(0, newline);
      connection.buffer.erase(0, newline + 1);
      if (!handle_line(connection, line)) return false;
    }
    if (connection.buffer.size() > kMaxLine) {
      ++malformed_;
      return false;
    }
  }
}

bool Monitor::handle_line(Connection& connection, const std::string& line) {
  nlohmann::json message = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) {
    ++malformed_;
    // Before authentication, garbage is a stranger: close. After, drop it.
    if (!connection.authenticated) ++refused_;
    return connection.authenticated;
  }
  const std::string type = message["type"];
  RankEvent event;
  event.time = Clock::now();
  try {
    if (!connection.authenticated) {
      if (type != "hello" || !message.contains("token") || !message["token"].is_string() ||
          !same_token(message["token"].get<std::string>(), token_)) {
        ++refused_;
        return false;
      }
      connection.authenticated = true;
      connection.rank = message.at("rank").get<int>();
      connection.restart_count = message.value("restart_count", std::int64_t{0});
      event.kind = RankEvent::Kind::kHello;
      event.pid = message.value("pid", 0);
      event.world_size = message.value("world_size", 0);
      event.host = message.value("host", std::string());
    } else if (type == "step") {
      event.kind = RankEvent::Kind::kStep;
      event.step = message.at("step").get<std::int64_t>();
      event.step_time = message.value("step_time", 0.0);
      if (message.contains("metrics")) {
        event.metrics = message["metrics"].get<std::map<std::string, double>>();
      }
    } else if (type == "checkpoint") {
      event.kind = RankEvent::Kind::kCheckpoint;
      event.step = message.at("step").get<std::int64_t>();
      event.stall = message.value("stall", 0.0);
    } else if (type == "exit") {
      event.kind = RankEvent::Kind::kExit;
      event.exit_code = message.value("code", 0);
      event.step = message.value("last_step", std::int64_t{-1});
      event.stopped = message.value("stopped", false);
      connection.said_exit = true;
    } else {
      ++malformed_;
      return true;
    }
  } catch (const nlohmann::json::exception&) {
    ++malformed_;
    return connection.authenticated;
  }
  event.rank = connection.rank;
  event.restart_count = connection.restart_count;
  push(std::move(event));
  return true;
}

void Monitor::close_connection(Connection& connection) {
  if (connection.authenticated) {
    // A rank whose connection ends without saying goodbye has died.
    RankEvent event;
    event.kind = RankEvent::Kind::kClosed;
    event.time = Clock::now();
    event.rank = connection.rank;
    event.restart_count = connection.restart_count;
    event.exit_code = connection.said_exit ? 0 : -1;
    push(std::move(event));
  }
  close(connection.fd);
  connection.fd = -1;
}

}  // namespace lockstep::launcher
