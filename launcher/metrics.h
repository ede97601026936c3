// What `lockstep run --metrics-port` serves on /metrics: the run as the
// launcher sees it, in Prometheus' text exposition format (version 0.0.4).
// The facts are gathered by the supervisor; rendering them is a pure
// function, so the format is tested without a server.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "attempt.h"
#include "metrics_server.h"
#include "status_line.h"

namespace lockstep::launcher {

// One rank of the attempt in progress.
struct RankView {
  int rank = -1;
  std::string host;             // as the rank reported it; untrusted text
  double heartbeat_age = 0;     // seconds since its last message of any kind
  std::int64_t last_step = -1;  // -1: no step yet
  double step_seconds = 0;      // its last reported step time; 0: none yet
  bool exited = false;          // it said goodbye
  // The last straggler report's figures (straggler.h); unset before the
  // first report, or when the rank does not measure its compute time.
  std::optional<double> compute_seconds;
  std::optional<double> relative_score;
  bool straggler = false;  // named a straggler now
};

struct MetricsFacts {
  int attempt = 0;  // the attempt in progress (0: the first)
  int restarts = 0;
  std::int64_t step = -1;  // rank 0's last step; -1: none yet
  std::optional<std::int64_t> total_steps;
  double steps_per_second = 0;
  std::map<std::string, double> training;  // the program's metrics, "loss" ...
  Goodput goodput;                         // so far, the attempt in progress included
  std::optional<std::int64_t> checkpoint_step;
  double checkpoint_age = 0;  // seconds since that checkpoint was reported
  std::vector<RankView> ranks;
  std::int64_t heartbeats_refused = 0;
  std::int64_t heartbeats_malformed = 0;
};

// The text served on /metrics. Label values are escaped as the format
// requires, so whatever a rank reported (host names, metric names) cannot
// break a line; values that are not finite are written NaN, +Inf or -Inf.
std::string prometheus_text(const MetricsFacts& facts);

// Gathers the facts from the supervisor's records and publishes them to a
// server, at most once a second. The records are the supervisor's, read
// on its own thread only.
class MetricsFeed {
 public:
  // `server` null: nothing is gathered or published.
  MetricsFeed(MetricsServer* server, const std::vector<AttemptRecord>& finished,
              const std::vector<CheckpointEvent>& checkpoints, Clock::time_point run_start,
              const Monitor& monitor, const StatusLine& status)
      : server_(server),
        finished_(finished),
        checkpoints_(checkpoints),
        run_start_(run_start),
        monitor_(monitor),
        status_(status) {}

  bool due(Clock::time_point now) const { return server_ != nullptr && now >= next_; }
  // Publishes the run so far: the finished attempts and `current`, the one
  // in progress, whose ranks are `ranks`.
  void publish(Clock::time_point now, const AttemptRecord& current, std::vector<RankView> ranks);

 private:
  MetricsServer* server_;
  const std::vector<AttemptRecord>& finished_;
  const std::vector<CheckpointEvent>& checkpoints_;
  Clock::time_point run_start_;
  const Monitor& monitor_;
  const StatusLine& status_;
  Clock::time_point next_{};
};

}  // namespace lockstep::launcher
