// Straggler detection: which ranks compute persistently slower than their
// peers. In a synchronous job one slow rank (a throttled GPU, a bad DIMM, a
// noisy neighbour) holds back every step of every rank, yet every rank's
// step takes the same time; only the compute time (the step less its waits
// for other ranks, as each rank measures and sends it with its step
// heartbeats) tells the slow rank from those that wait for it.
//
// Each report interval the detector takes every rank's mean compute time
// per step over the interval and scores it:
//   relative score   = the median of the other ranks' compute times / this
//                      rank's (at most 1; 0.5: twice as slow as the
//                      typical rank),
//   individual score = this rank's best interval so far / this interval (at
//                      most 1; 0.5: twice as slow as it has been).
// A rank whose relative score is below the threshold in `reports` intervals
// in a row is named a straggler until an interval finds it above again, or
// does not score it (it ended).
// The individual score is reported beside it: a low one says the rank
// slowed down, a high one that it has been slow all along.
//
// Per heartbeat the work is O(1) (a hash lookup and two additions); per
// interval O(N) for N ranks.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "monitor.h"

namespace lockstep::launcher {

struct StragglerOptions {
  double interval_seconds = 60;  // one report per interval
  double threshold = 0.7;        // a relative score below this straggles
  int reports = 3;               // intervals in a row before a rank is named
  // Below this many steps in an interval a rank is not scored (its mean
  // would be noise), and below this excess over the median (seconds per
  // step) nobody straggles (microseconds of jitter on a tiny step are not
  // a slow rank).
  std::int64_t min_steps = 3;
  double min_excess_seconds = 0.0005;
};

// A rank named a straggler in an attempt: as it stood when it was slowest.
struct StragglerRecord {
  int rank = -1;
  std::string host;
  double slowdown = 1;              // its compute time over the others' median
  double relative = 1;              // relative score then
  double individual = 1;            // individual score then
  double compute_seconds = 0;       // its mean compute time per step then
  double median_seconds = 0;        // the median of the other ranks'
  int reports = 0;                  // intervals it straggled in, in a row, at most
  std::int64_t named_at_step = -1;  // the job's step when it was first named
  bool current = false;             // still straggling at the last report
};

nlohmann::json to_json(const StragglerRecord& record);
// "rank 2 on n1 computes 3.1x slower than the median of the other ranks (3.2 ms against
// 1.0 ms a step; relative score 0.32, individual 0.95) for 3 reports"
std::string describe(const StragglerRecord& record);

class StragglerDetector {
 public:
  StragglerDetector(StragglerOptions options, Clock::time_point start);

  // Rank `rank` on `host` computed a mean of `compute` seconds over `steps`
  // steps (a step heartbeat's "compute" and "steps").
  void on_step(int rank, const std::string& host, double compute, std::int64_t steps);

  // What a report changed.
  struct Change {
    StragglerRecord record;
    bool named = false;  // true: newly named; false: no longer straggles
  };
  // Scores the interval when it is over (else returns nothing); `step` is
  // the job's step now, for the record.
  std::vector<Change> tick(Clock::time_point now, std::int64_t step);

  // Every rank named in this detector's life, current or not, by rank.
  std::vector<StragglerRecord> records() const;
  // The ranks that straggle now, slowest first.
  std::vector<StragglerRecord> current() const;

  // The last report's scores of one rank, for /metrics; false when it was
  // not scored.
  struct Score {
    double compute_seconds = 0;
    double relative = 1;
    double individual = 1;
  };
  const std::unordered_map<int, Score>& scores() const { return scores_; }

 private:
  struct Rank {
    std::string host;
    double compute_sum = 0;  // this interval: sum over its steps
    std::int64_t steps = 0;
    double best = 0;  // the lowest interval mean so far; 0: none yet
    int streak = 0;   // intervals in a row below the threshold
  };

  StragglerOptions options_;
  Clock::time_point interval_start_;
  std::unordered_map<int, Rank> ranks_;
  std::unordered_map<int, Score> scores_;
  std::unordered_map<int, StragglerRecord> records_;
};

}  // namespace lockstep::launcher
