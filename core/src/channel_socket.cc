#include "channel_socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::detail {

namespace {

// A launcher whose host vanishes sends no FIN; keep-alive probes notice
// that within idle + interval * count seconds.
constexpr int kKeepAliveIdleSeconds = 5;
constexpr int kKeepAliveIntervalSeconds = 2;
constexpr int kKeepAliveProbes = 3;

// One connect() bounded by `deadline`; the socket is left blocking again.
ChannelSocket try_connect(const addrinfo& candidate,
                          std::chrono::steady_clock::time_point deadline) {
  ChannelSocket result;
  const int fd = ::socket(candidate.ai_family, candidate.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                          candidate.ai_protocol);
  if (fd < 0) {
    result.problem = std::strerror(errno);
    return result;
  }
  int error = 0;
  if (::connect(fd, candidate.ai_addr, candidate.ai_addrlen) != 0) {
    error = errno;
    if (error == EINPROGRESS) {
      pollfd writable = {fd, POLLOUT, 0};
      int ready = 0;
      do {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        ready = ::poll(&writable, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
      } while (ready < 0 && errno == EINTR);
      socklen_t length = sizeof(error);
      if (ready == 0) {
        error = ETIMEDOUT;
      } else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        error = errno;
      }
    }
  }
  if (error != 0) {
    ::close(fd);
    result.problem = error == ETIMEDOUT ? "no answer" : std::strerror(error);
    result.error = error;
    return result;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  result.fd = fd;
  return result;
}

// Connects to the launcher at "host:port", trying every address the host
// resolves to, and again every 200 ms until `timeout` has passed (a
// launcher under a flood of connections may refuse for a moment).
ChannelSocket connect_tcp(const std::string& address, std::chrono::milliseconds timeout) {
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
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return {.fd = -1,
            .problem = fmt::format("cannot resolve {}: {}", host, gai_strerror(rc)),
            .error = 0};
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, freeaddrinfo);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  ChannelSocket result;
  while (true) {
    for (const addrinfo* candidate = found; candidate != nullptr; candidate = candidate->ai_next) {
      result = try_connect(*candidate, deadline);
      if (result.fd >= 0) break;
    }
    if (result.fd >= 0 ||
        std::chrono::steady_clock::now() + std::chrono::milliseconds(200) >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (result.fd < 0) {
    result.problem = fmt::format("{} within {:g} s", result.problem,
                                 std::chrono::duration<double>(timeout).count());
    return result;
  }
  const int one = 1;
  setsockopt(result.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(result.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  setsockopt(result.fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepAliveIdleSeconds, sizeof(int));
  setsockopt(result.fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepAliveIntervalSeconds, sizeof(int));
  setsockopt(result.fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepAliveProbes, sizeof(int));
  return result;
}

// The relay of this node, at "unix:@NAME".
ChannelSocket connect_unix(const std::string& name, std::chrono::milliseconds timeout) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (name.empty() || name.size() + 1 > sizeof(address.sun_path)) {
    throw UsageError(fmt::format("the heartbeat relay's name '{}' is empty or too long", name));
  }
  // Abstract: a leading NUL, no file.
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  const addrinfo candidate{.ai_flags = 0,
                           .ai_family = AF_UNIX,
                           .ai_socktype = SOCK_STREAM,
                           .ai_protocol = 0,
                           .ai_addrlen = length,
                           .ai_addr = reinterpret_cast<sockaddr*>(&address),
                           .ai_canonname = nullptr,
                           .ai_next = nullptr};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ChannelSocket result;
  while (true) {
    result = try_connect(candidate, deadline);
    // Nobody listens: the relay is gone, and waiting does not bring it back.
    // A full backlog (EAGAIN) is worth another try.
    if (result.fd >= 0 || result.error == ECONNREFUSED || result.error == ENOENT ||
        std::chrono::steady_clock::now() + std::chrono::milliseconds(200) >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (result.fd < 0 && result.error != ECONNREFUSED && result.error != ENOENT) {
    result.problem = fmt::format("{} within {:g} s", result.problem,
                                 std::chrono::duration<double>(timeout).count());
  }
  return result;
}

}  // namespace

ChannelSocket connect_channel(const std::string& address, std::chrono::milliseconds timeout) {
  constexpr std::string_view kUnix = "unix:@";
  if (address.starts_with(kUnix)) return connect_unix(address.substr(kUnix.size()), timeout);
  return connect_tcp(address, timeout);
}

}  // namespace lockstep::detail
