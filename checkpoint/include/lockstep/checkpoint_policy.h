// CheckpointPolicy: when to checkpoint. Every N steps, every T seconds, or
// automatically at the Young/Daly interval sqrt(2 · save stall · MTBF), which
// minimises the expected time lost to saving plus the time lost to redoing
// work after a failure.
#pragma once

#include <cstdint>
#include <optional>

namespace lockstep {

// sqrt(2 · save_cost · mtbf), in seconds. Throws UsageError for a negative
// cost or a non-positive MTBF.
double young_daly_interval(double save_cost_seconds, double mtbf_seconds);

// The MTBF that a run's history suggests: its total run time divided by the
// failures (restarts) seen; nullopt before the first failure.
std::optional<double> estimate_mtbf(double run_seconds, std::int64_t restarts);

class CheckpointPolicy {
 public:
  static CheckpointPolicy every_steps(std::int64_t steps);
  static CheckpointPolicy every_seconds(double seconds);
  // `mtbf_seconds` > 0 fixes the MTBF; 0 learns it from observe_restarts(),
  // and uses `fallback_mtbf_seconds` until the run has failed once.
  static CheckpointPolicy automatic(double mtbf_seconds = 0,
                                    double fallback_mtbf_seconds = 24 * 3600.0);

  // Whether to save after `step`, `now_seconds` into the run. Time-based
  // policies decide by the clock, so every rank must pass the same
  // `now_seconds` (rank 0's clock, broadcast) to reach the same answer. The
  // automatic policy answers yes once before any save was measured, to
  // learn what a save costs.
  bool due(std::int64_t step, double now_seconds) const;

  // Records a save taken at `now_seconds` that stalled training for
  // `stall_seconds` (SaveStats::stall_seconds): the next one is due one
  // interval later, and the automatic policy averages the stall.
  void record_save(double now_seconds, double stall_seconds);

  // Tells the automatic policy the run's total time over all attempts and
  // its restart count (Runtime::restart_count()).
  void observe_restarts(double run_seconds, std::int64_t restarts);

  // The current interval in seconds (time-based and automatic policies).
  double interval_seconds() const;
  // The MTBF the automatic policy uses now.
  double mtbf_seconds() const;

 private:
  enum class Mode { kSteps, kSeconds, kAutomatic };
  CheckpointPolicy(Mode mode) : mode_(mode) {}

  Mode mode_;
  std::int64_t every_steps_ = 0;
  double every_seconds_ = 0;
  double fixed_mtbf_ = 0;
  double fallback_mtbf_ = 0;
  std::optional<double> learned_mtbf_;
  double mean_stall_ = 0;
  std::int64_t saves_ = 0;
  std::optional<double> last_save_at_;
};

}  // namespace lockstep
