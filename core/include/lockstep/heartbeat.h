// HeartbeatClient: tells the launcher (`lockstep run`) that this rank is
// alive and how far it got. Messages are JSON lines over TCP; the first one
// carries the per-run token, without which the launcher closes the
// connection, and the launcher answers a valid one with a welcome line.
// Every second the client also says that the rank is alive, with where its
// collectives are (lockstep/progress.h): the launcher counts a host whose
// ranks all fall silent as lost, and names a rank that never entered a
// collective the others wait in. Sending never blocks training: when the
// launcher is slow or gone, messages are dropped.
//
// The channel also ties the rank to the launcher's life: a background thread
// watches the connection, and when the launcher that welcomed this rank goes
// away (its process died: the connection closes; its host vanished: TCP
// keep-alive fails) it calls the owner's `on_launcher_lost`, then ends the
// process after `exit_after` unless the client is destroyed first. A job
// must never train on, holding its GPUs and its allocation, with nobody
// left to watch it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstep {

class HeartbeatClient {
 public:
  // Called once, from the watcher thread, with why the launcher counts as
  // lost. It must be quick and thread-safe (e.g. request a stop).
  using LauncherLost = std::function<void(const std::string& reason)>;

  // A client that sends nothing (not started by `lockstep run`).
  HeartbeatClient();
  // Connects to `address` ("host:port"), trying for up to
  // `connect_timeout`, and introduces this rank. Throws UsageError for a
  // malformed address. A launcher that cannot be reached: when `required`,
  // logs why (resolution, refused, no answer) with the options that fix it
  // and throws IoError, so that a rank its launcher cannot watch never
  // trains; otherwise logs a warning and the client stays silent.
  // `relay_address`, when given, is this node's NodeRelay
  // ("unix:@NAME"): the client reports through it, and straight to the
  // launcher when it cannot be reached within a few seconds.
  HeartbeatClient(const std::string& address, const std::string& token, int rank, int world_size,
                  const std::string& host, std::int64_t restart_count,
                  LauncherLost on_launcher_lost = {},
                  std::chrono::milliseconds exit_after = std::chrono::seconds(10),
                  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10),
                  bool required = false, const std::string& relay_address = "");

  // Owns a socket and a thread: not copyable; movable (the state lives on
  // the heap, so the thread never sees a moved object; the moved-from
  // client is silent).
  HeartbeatClient(const HeartbeatClient&) = delete;
  HeartbeatClient& operator=(const HeartbeatClient&) = delete;
  HeartbeatClient(HeartbeatClient&& other) noexcept;
  HeartbeatClient& operator=(HeartbeatClient&& other) noexcept;
  // Stops the watcher (an exit pending after a lost launcher included).
  ~HeartbeatClient();

  bool connected() const;
  // Whether it reports through this node's relay (NodeRelay).
  bool through_relay() const;

  // Step `step` (0-based) finished after `step_seconds`; `metrics` such as
  // {"loss": 0.3}. `compute_seconds`, when known, is the part of the step
  // not spent waiting for other ranks (lockstep/blocked_time.h), which the
  // launcher compares across ranks to find stragglers. Sent at most every
  // 200 ms: a line carries the newest step, and the mean compute time of
  // every step since the last line sent, with how many steps that covers.
  void step(std::int64_t step, double step_seconds, const std::map<std::string, double>& metrics,
            std::optional<double> compute_seconds = std::nullopt);
  // A checkpoint of step `step` was taken; training stalled `stall_seconds`.
  void checkpoint(std::int64_t step, double stall_seconds);
  // This rank is leaving normally with `exit_code`; the launcher will not
  // treat the closing connection as a crash. Carries the last step reported
  // and whether the run stopped early on request (a signal), not at its end.
  void exit(int exit_code, bool stopped_on_request);
  // A fault this rank found, blaming `ranks`, sent before the attempt ends.
  void fault(const std::string& what, const std::vector<int>& ranks);

 private:
  struct Channel;
  void send_line(const std::string& line);
  void send_held_step();

  std::unique_ptr<Channel> channel_;
  std::int64_t last_step_ = -1;
  std::chrono::steady_clock::time_point last_step_sent_{};
  std::chrono::milliseconds min_interval_{200};
  // The newest step line that the rate limit held back, sent before the
  // next checkpoint or the goodbye, so the launcher ends with the last
  // step's metrics. The caller's thread only.
  std::string held_step_;
  // Compute time of the steps since the last step line sent, and how many.
  double pending_compute_ = 0;
  std::int64_t pending_steps_ = 0;
};

}  // namespace lockstep
