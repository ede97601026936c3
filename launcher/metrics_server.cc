#include "metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <fmt/format.h>
#include <microhttpd.h>

#include "lockstep/error.h"
#include "unique_fd.h"

namespace lockstep::launcher {

namespace {

// A few scrapers at once are plenty; more connections are refused by
// libmicrohttpd rather than queued.
constexpr unsigned kMaxConnections = 32;
// Seconds an idle or slow connection may stay open.
constexpr unsigned kConnectionTimeout = 5;
constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Answers with `status` and `body`, copied (libmicrohttpd sends it after
// this returns).
MHD_Result reply(MHD_Connection* connection, unsigned status, std::string_view body,
                 const char* content_type) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
    MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  }
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

// libmicrohttpd's request handler: `self` is the server. Every request is
// answered at its first call, before any body it may carry is read.
MHD_Result answer(void* self, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  std::size_t* /*upload_data_size*/, void** /*request_state*/) {
  const std::string_view verb(method);
  if (verb != MHD_HTTP_METHOD_GET && verb != MHD_HTTP_METHOD_HEAD) {
    return reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics is served\n",
                 "text/plain");
  }
  const std::string_view path(url);
  if (path == "/metrics") {
    // No exception may cross libmicrohttpd's C frames.
    try {
      return reply(connection, MHD_HTTP_OK, static_cast<MetricsServer*>(self)->current(),
                   kContentType);
    } catch (const std::exception&) {
      return MHD_NO;  // closes the connection
    }
  }
  if (path == "/") {
    return reply(connection, MHD_HTTP_OK, "lockstep run: metrics at /metrics\n", "text/plain");
  }
  return reply(connection, MHD_HTTP_NOT_FOUND, "not found; metrics are at /metrics\n",
               "text/plain");
}

// A listening socket on address:port, with an error that says what to do.
UniqueFd listen_on(const std::string& address, int port) {
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &where.sin_addr) != 1) {
    throw UsageError(fmt::format(
        "--metrics-address '{}' is not an IPv4 address; give one of this host's addresses, "
        "127.0.0.1 (the default) or 0.0.0.0 for all",
        address));
  }
  UniqueFd socket_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket_fd) throw IoError(fmt::format("metrics: socket(): {}", std::strerror(errno)));
  const int on = 1;
  setsockopt(socket_fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (bind(socket_fd.get(), reinterpret_cast<const sockaddr*>(&where), sizeof(where)) != 0) {
    const int error = errno;
    throw UsageError(fmt::format(
        "--metrics-port {} on {}: cannot listen there ({}); {}", port, address,
        std::strerror(error),
        error == EADDRINUSE ? "another program has the port: choose another, or 0 for a free one"
        : error == EADDRNOTAVAIL ? "the address is not one of this host's"
                                 : "choose another port or address"));
  }
  if (listen(socket_fd.get(), static_cast<int>(kMaxConnections)) != 0) {
    throw IoError(fmt::format("metrics: listen(): {}", std::strerror(errno)));
  }
  return socket_fd;
}

int bound_port(int socket_fd) {
  sockaddr_in bound{};
  socklen_t length = sizeof(bound);
  if (getsockname(socket_fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    throw IoError(fmt::format("metrics: getsockname(): {}", std::strerror(errno)));
  }
  return ntohs(bound.sin_port);
}

}  // namespace

void MetricsServer::DaemonStop::operator()(MHD_Daemon* daemon) const { MHD_stop_daemon(daemon); }

MetricsServer::MetricsServer(const std::string& address, int port) : address_(address) {
  UniqueFd listener = listen_on(address, port);
  port_ = bound_port(listener.get());
  daemon_.reset(MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, nullptr, nullptr, &answer, this,
      MHD_OPTION_LISTEN_SOCKET, listener.get(), MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
      MHD_OPTION_CONNECTION_TIMEOUT, kConnectionTimeout, MHD_OPTION_END));
  if (!daemon_) throw IoError(fmt::format("metrics: cannot serve on {}:{}", address, port_));
  static_cast<void>(listener.release());  // the daemon owns and closes it now
}

MetricsServer::~MetricsServer() = default;

std::string MetricsServer::url() const {
  return fmt::format("http://{}:{}/metrics", address_, port_);
}

void MetricsServer::publish(std::string text) {
  MutexLock lock(mutex_);
  text_ = std::move(text);
}

std::string MetricsServer::current() const {
  MutexLock lock(mutex_);
  return text_;
}

}  // namespace lockstep::launcher
