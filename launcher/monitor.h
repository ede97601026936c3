// Monitor: the launcher's end of the heartbeat channel. A background thread
// accepts TCP connections from ranks, authenticates each with the per-run
// token (first line), parses JSON-line messages into events, and queues them
// for the supervisor. Malformed input is dropped and counted; it never
// stops the monitor.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::launcher {

using Clock = std::chrono::steady_clock;

struct RankEvent {
  enum class Kind { kHello, kStep, kCheckpoint, kExit, kClosed };
  Kind kind = Kind::kHello;
  Clock::time_point time;
  int rank = -1;
  std::int64_t restart_count = -1;  // the attempt the rank belongs to
  // kHello
  int pid = 0;
  int world_size = 0;
  std::string host;
  // kStep, kCheckpoint, kExit (last_step)
  std::int64_t step = -1;
  double step_time = 0;
  std::map<std::string, double> metrics;
  double stall = 0;
  int exit_code = 0;
  bool stopped = false;  // kExit: the rank stopped early on request (a signal)
};

class Monitor {
 public:
  // Listens on `bind_address` ("127.0.0.1" or "0.0.0.0") on a free port.
  // Throws IoError when no socket can be opened.
  Monitor(const std::string& bind_address, std::string token);
  // Stops the thread and closes every connection.
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  int port() const { return port_; }

  // Events received since the last call, oldest first.
  std::vector<RankEvent> drain();

  // Connections closed for a missing or wrong token.
  std::int64_t refused() const { return refused_.load(); }
  // Lines that were not valid messages, dropped.
  std::int64_t malformed() const { return malformed_.load(); }

 private:
  struct Connection {
    int fd = -1;
    bool authenticated = false;
    int rank = -1;
    std::int64_t restart_count = -1;
    bool said_exit = false;
    std::string buffer;
    Clock::time_point opened;
  };

  void run();
  void accept_new();
  // Returns false when the connection must be closed.
  bool read_from(Connection& connection);
  bool handle_line(Connection& connection, const std::string& line);
  void close_connection(Connection& connection);
  void push(RankEvent event);

  std::string token_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe that interrupts poll() on shutdown
  int port_ = 0;
  std::vector<Connection> connections_;  // used by the monitor thread only
  std::mutex mutex_;
  std::vector<RankEvent> events_;  // guarded by mutex_
  std::atomic<std::int64_t> refused_{0};
  std::atomic<std::int64_t> malformed_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace lockstep::launcher
