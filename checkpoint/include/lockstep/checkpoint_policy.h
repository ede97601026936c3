// CheckpointPolicy: when to checkpoint. Every N steps, every T seconds, or
// automatically at the Young/Daly interval sqrt(2 · save stall · MTBF), which
// minimises the expected time lost to saving plus the time lost to redoing
// work after a failure.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include <mpi.h>

#include "lockstep/mpi_comm.h"
#include "lockstep/young_daly.h"  // young_daly_interval(), which the automatic policy uses

namespace lockstep {

class Runtime;

// The MTBF that a run's history suggests: its total run time divided by the
// failures (restarts) seen; nullopt before the first failure.
std::optional<double> estimate_mtbf(double run_seconds, std::int64_t restarts);

// What earlier attempts of a run tell about its failure rate.
struct RunHistory {
  double seconds = 0;         // wall time of the earlier attempts together
  std::int64_t failures = 0;  // attempts that ended in a failure or a hang
  // Only the count is known (Runtime::restart_count() without a log):
  // assume every earlier attempt lasted as long as the current one so far.
  bool seconds_unknown = false;
};

// Reads <run_dir>/attempts.jsonl, which `lockstep run` appends one JSON line
// to per attempt ({"start_s", "end_s", "outcome", ...}). Returns nullopt
// when the file does not exist; skips lines it cannot parse.
std::optional<RunHistory> read_run_history(const std::filesystem::path& attempts_jsonl);

class CheckpointPolicy {
 public:
  static CheckpointPolicy every_steps(std::int64_t steps);
  static CheckpointPolicy every_seconds(double seconds);
  // `mtbf_seconds` > 0 fixes the MTBF; 0 learns it from observe_restarts(),
  // and uses `fallback_mtbf_seconds` until the run has failed once.
  static CheckpointPolicy automatic(double mtbf_seconds = 0,
                                    double fallback_mtbf_seconds = 24 * 3600.0);
  // Never due: saves happen only when something else asks (a signal through
  // Runtime::should_checkpoint).
  static CheckpointPolicy never();

  // Makes should_checkpoint() a collective decision over (a duplicate of)
  // `comm`: rank 0 decides with its own clock and measurements and every
  // rank returns rank 0's answer. Collective over `comm`.
  CheckpointPolicy& agree_over(MPI_Comm comm);

  // Tells the automatic policy about the attempts before this one. Until a
  // failure is known it uses the fallback MTBF; afterwards
  // (history.seconds + now) / history.failures, updated at every
  // should_checkpoint().
  void set_history(RunHistory history);

  // Whether every rank should save after `step`, `now_seconds` into this
  // attempt. With agree_over() every rank must call it at the same steps and
  // gets the same answer (one small broadcast for time-based policies; the
  // step policy needs none, its answer depends on `step` only). Without it,
  // the answer is this rank's due().
  bool should_checkpoint(std::int64_t step, double now_seconds);

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
  enum class Mode { kNever, kSteps, kSeconds, kAutomatic };
  explicit CheckpointPolicy(Mode mode) : mode_(mode) {}

  Mode mode_;
  std::int64_t every_steps_ = 0;
  double every_seconds_ = 0;
  double fixed_mtbf_ = 0;
  double fallback_mtbf_ = 0;
  std::optional<double> learned_mtbf_;
  double mean_stall_ = 0;
  std::int64_t saves_ = 0;
  std::optional<double> last_save_at_;
  RunHistory history_;
  // Shared by copies of the policy, which all decide over the same ranks.
  std::shared_ptr<MpiComm> comm_;
};

// The policy that LOCKSTEP_CHECKPOINT_POLICY and its companions describe
// (steps: LOCKSTEP_CHECKPOINT_EVERY; seconds: LOCKSTEP_CHECKPOINT_SECONDS;
// auto: LOCKSTEP_MTBF, learning from <run_dir>/attempts.jsonl or, without
// it, from Runtime::restart_count()), deciding over the Runtime's ranks.
// Collective over runtime.comm().
CheckpointPolicy checkpoint_policy(const Runtime& runtime);

}  // namespace lockstep
