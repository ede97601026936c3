#include "lockstep/heartbeat.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "lockstep/error.h"
#include "lockstep/log.h"

namespace lockstep {

namespace {

int connect_to(const std::string& address) {
  const std::size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw UsageError("LOCKSTEP_MONITOR_ADDRESS='" + address +
                     "' is not host:port; it is set by `lockstep run`, unset it to run alone");
  }
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    log::warn("heartbeats disabled: cannot resolve launcher {}: {}", address, gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  for (addrinfo* candidate = found; candidate != nullptr; candidate = candidate->ai_next) {
    fd =
        socket(candidate->ai_family, candidate->ai_socktype | SOCK_CLOEXEC, candidate->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, candidate->ai_addr, candidate->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  if (fd < 0) {
    log::warn("heartbeats disabled: cannot connect to the launcher at {}", address);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

HeartbeatClient::HeartbeatClient(const std::string& address, const std::string& token, int rank,
                                 int world_size, const std::string& host,
                                 std::int64_t restart_count)
    : socket_(connect_to(address)) {
  nlohmann::json hello = {{"type", "hello"},
                          {"token", token},
                          {"rank", rank},
                          {"world_size", world_size},
                          {"pid", ::getpid()},
                          {"host", host},
                          {"restart_count", restart_count}};
  send_line(hello.dump());
}

HeartbeatClient::HeartbeatClient(HeartbeatClient&& other) noexcept
    : socket_(other.socket_), last_step_(other.last_step_), last_step_sent_(other.last_step_sent_) {
  other.socket_ = -1;
}

HeartbeatClient& HeartbeatClient::operator=(HeartbeatClient&& other) noexcept {
  if (this != &other) {
    if (socket_ >= 0) close(socket_);
    socket_ = other.socket_;
    last_step_ = other.last_step_;
    last_step_sent_ = other.last_step_sent_;
    other.socket_ = -1;
  }
  return *this;
}

HeartbeatClient::~HeartbeatClient() {
  if (socket_ >= 0) close(socket_);
}

void HeartbeatClient::send_line(const std::string& line) {
  if (socket_ < 0) return;
  const std::string framed = line + "\n";
  // MSG_DONTWAIT: a launcher that does not read must not stall training.
  const ssize_t sent = ::send(socket_, framed.data(), framed.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    log::debug("heartbeat connection lost ({}); no more heartbeats", std::strerror(errno));
    close(socket_);
    socket_ = -1;
  }
}

void HeartbeatClient::step(std::int64_t step, double step_seconds,
                           const std::map<std::string, double>& metrics) {
  if (socket_ < 0) return;
  last_step_ = step;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_step_sent_ < min_interval_) return;
  last_step_sent_ = now;
  send_line(nlohmann::json{
      {"type", "step"}, {"step", step}, {"step_time", step_seconds}, {"metrics", metrics}}
                .dump());
}

void HeartbeatClient::checkpoint(std::int64_t step, double stall_seconds) {
  send_line(
      nlohmann::json{{"type", "checkpoint"}, {"step", step}, {"stall", stall_seconds}}.dump());
}

void HeartbeatClient::exit(int exit_code, bool stopped_on_request) {
  send_line(nlohmann::json{{"type", "exit"},
                           {"code", exit_code},
                           {"last_step", last_step_},
                           {"stopped", stopped_on_request}}
                .dump());
}

}  // namespace lockstep
