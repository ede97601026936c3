// HeartbeatClient: tells the launcher (`lockstep run`) that this rank is
// alive and how far it got. Messages are JSON lines over TCP; the first one
// carries the per-run token, without which the launcher closes the
// connection. Sending never blocks training: when the launcher is slow or
// gone, messages are dropped.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace lockstep {

class HeartbeatClient {
 public:
  // A client that sends nothing (not started by `lockstep run`).
  HeartbeatClient() = default;
  // Connects to `address` ("host:port") and introduces this rank. Throws
  // UsageError for a malformed address; a launcher that cannot be reached
  // is logged once and the client stays silent.
  HeartbeatClient(const std::string& address, const std::string& token, int rank, int world_size,
                  const std::string& host, std::int64_t restart_count);

  // Owns a socket: not copyable; movable (the moved-from client is silent).
  HeartbeatClient(const HeartbeatClient&) = delete;
  HeartbeatClient& operator=(const HeartbeatClient&) = delete;
  HeartbeatClient(HeartbeatClient&& other) noexcept;
  HeartbeatClient& operator=(HeartbeatClient&& other) noexcept;
  ~HeartbeatClient();

  bool connected() const { return socket_ >= 0; }

  // Step `step` (0-based) finished after `step_seconds`; `metrics` such as
  // {"loss": 0.3}. Sent at most every `min_interval` unless `force`.
  void step(std::int64_t step, double step_seconds, const std::map<std::string, double>& metrics);
  // A checkpoint of step `step` was taken; training stalled `stall_seconds`.
  void checkpoint(std::int64_t step, double stall_seconds);
  // This rank is leaving normally with `exit_code`; the launcher will not
  // treat the closing connection as a crash. Carries the last step reported
  // and whether the run stopped early on request (a signal), not at its end.
  void exit(int exit_code, bool stopped_on_request);

 private:
  void send_line(const std::string& line);

  int socket_ = -1;
  std::int64_t last_step_ = -1;
  std::chrono::steady_clock::time_point last_step_sent_{};
  std::chrono::milliseconds min_interval_{200};
};

}  // namespace lockstep
