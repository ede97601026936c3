// What the supervisor records about each attempt, and the goodput summary
// computed from those records.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "monitor.h"
#include "process.h"
#include "straggler.h"

namespace lockstep::launcher {

struct AttemptRecord {
  int index = 0;  // 0 for the first attempt; equals the restart count
  Clock::time_point start;
  Clock::time_point end;
  std::optional<Clock::time_point> first_step_at;  // first step heartbeat
  std::optional<Clock::time_point> last_step_at;
  std::int64_t first_step = -1;  // step index of the first heartbeat
  std::int64_t last_step = -1;
  double step_seconds = 0;  // last reported duration of one step
  std::string outcome;      // "success", "failed", "hang", "stopped"
  std::optional<ExitStatus> mpirun_status;
  std::optional<Clock::time_point> failure_at;  // first death, or hang detection
  int failed_rank = -1;
  std::string failed_host;
  // Set when the first failure was the starter itself (mpirun or srun
  // killed), not a rank: "mpirun (pid 123)".
  std::string failed_process;
  // The failure came from outside the program (a SIGKILL: an operator, the
  // OOM killer, a lost starter or host), so it says nothing about a bug in
  // it.
  bool outside_kill = false;
  // The program caused the failure itself: a non-zero exit, MPI_Abort, a
  // signal it raises (SIGSEGV, SIGABRT, ...), or a fault it reported. Two
  // such failures in a row before a first step stop the restarts.
  bool program_fault = false;
  // The first failure was a whole host: failed_host went silent and cannot
  // be entered (or, under Slurm, went silent).
  bool host_lost = false;
  // When the launcher noticed the failure (failure_at is when it happened,
  // as far as the launcher can tell: a lost host's last message).
  std::optional<Clock::time_point> detected_at;
  std::vector<std::string> hosts;  // the hosts of a host list (or nodes) it ran on
  int ranks_started = 0;           // the world size it was started with (0: the allocation's)
  int ranks_reported = 0;          // ranks that introduced themselves to the launcher
  int world_size = 0;              // as the ranks reported it (0: none did)
  std::string failure;             // "killed by signal 9 (Killed)", ...
  std::vector<std::string> tail;   // last lines of the failed rank
  std::vector<pid_t> killed_after_grace;
  std::size_t survivors = 0;  // processes left after the stop (must be 0)
  // What ranks said when they could not reach the launcher: "rank 2 on
  // node2 cannot reach the launcher at 10.0.0.1:4000 (connection refused
  // within 10 s)", one per rank, at most kMaxUnreachable.
  std::vector<std::string> unreachable;
  static constexpr std::size_t kMaxUnreachable = 16;
  // What the ranks' flight recorders said about the collective the job
  // stopped in (FlightVerdict::to_json()); null when they said nothing.
  nlohmann::json flight;
  // The ranks named stragglers in this attempt (straggler.h).
  std::vector<StragglerRecord> stragglers;
};

struct CheckpointEvent {
  Clock::time_point at;
  std::int64_t step = -1;
  double stall_seconds = 0;
};

struct Goodput {
  double wall_seconds = 0;
  double productive_seconds = 0;  // training steps whose results were kept
  double lost_seconds = 0;        // steps recomputed after failures
  double restart_seconds = 0;     // from a failure to training again
  double checkpoint_seconds = 0;  // training stalled by checkpoints
  double other_seconds = 0;       // first start-up and final shut-down
  std::int64_t steps_completed = 0;
  int restarts = 0;
  double mean_time_to_recovery = 0;  // failure to first step after restart
  std::int64_t checkpoints = 0;      // saves reported by the ranks
};

// The "summary_version" of summary.json, raised when a field changes
// meaning or goes away (`lockstep plan --from` reads it).
inline constexpr int kSummaryVersion = 1;

Goodput compute_goodput(const std::vector<AttemptRecord>& attempts,
                        const std::vector<CheckpointEvent>& checkpoints, Clock::time_point start,
                        Clock::time_point end);

nlohmann::json to_json(const AttemptRecord& attempt, Clock::time_point run_start);
nlohmann::json to_json(const Goodput& goodput);
// A few lines for people.
std::string describe(const Goodput& goodput);

}  // namespace lockstep::launcher
