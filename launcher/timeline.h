// The launcher's part of the run's timeline: each start of `lockstep run`
// is a session directory <run dir>/trace/<UTC start>-<pid>/ that the ranks
// write their timelines into (LOCKSTEP_TRACE_DIR) and the launcher its
// events: attempts with their outcome, failures, checkpoints, restarts,
// requeues. `lockstep trace` merges the sessions (trace_merge.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "attempt.h"
#include "line_log.h"

namespace lockstep::launcher {

// "20261206T191500Z-4242": sorts by start time.
std::string session_name(std::int64_t unix_ns, int pid);

class LauncherTimeline {
 public:
  // Records into <session_dir>/launcher.jsonl; `run_start` is when the run
  // began on the launcher's clock. Writes nothing yet.
  LauncherTimeline(std::filesystem::path session_dir, Clock::time_point run_start);

  const std::filesystem::path& session_dir() const { return session_dir_; }

  // The first line: who started, when. Returns a problem, or "".
  std::string start(const std::string& slurm_job, int slurm_restart_count);
  // An attempt that ended, with its failure and the checkpoints taken in it.
  std::string attempt(const AttemptRecord& record, const std::vector<CheckpointEvent>& checkpoints);
  // A moment of the launcher's: "restarting (1 of 3)", "requeued job 42".
  std::string note(std::string_view category, std::string_view what);

 private:
  std::int64_t unix_ns(Clock::time_point at) const;

  std::filesystem::path session_dir_;
  LineLog log_;
  Clock::time_point run_start_;
  std::int64_t run_start_unix_ns_;
};

}  // namespace lockstep::launcher
