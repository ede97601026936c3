// `lockstep trace RUN_DIR`: merges the timelines of every rank, attempt and
// start of `lockstep run` under <run dir>/trace/ with the launcher's events
// into one Chrome Trace Event JSON document (chrome://tracing, Perfetto).
// One track group per rank ("rank 3"), one track per thread and attempt
// ("main, attempt 1"), and one for the launcher ("lockstep run": attempts,
// failures, checkpoints, restarts, requeues). Times are microseconds from
// the earliest start in the run directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lockstep::launcher {

// A rank's tracks: (attempt over all starts) * this + the thread's number.
inline constexpr std::int64_t kTraceThreadsPerAttempt = 1000;

struct MergeReport {
  std::size_t events = 0;             // written, metadata included
  std::size_t sessions = 0;           // starts of `lockstep run`
  std::size_t attempts = 0;           // over all sessions
  std::set<int> ranks;                // that left a timeline
  std::size_t skipped_lines = 0;      // malformed, unknown or too long
  std::vector<std::string> problems;  // files left out, and why
};

// Receives each Trace Event of the merged timeline: a rank's metadata
// (process_name, thread_name) before its events; the launcher's first.
using TraceSink = std::function<void(const nlohmann::json& event)>;

// Visits the run's merged timeline. The files are untrusted, as below.
// Throws UsageError when `run_dir` has no trace/ directory.
MergeReport visit_trace(const std::filesystem::path& run_dir, const TraceSink& sink);

// Writes the merged document to `out`. The files are untrusted: a line that
// is not a valid record is skipped and counted, a file without a valid
// first line is left out and named, symbolic links are not followed.
// Throws UsageError when `run_dir` has no trace/ directory.
MergeReport merge_trace(const std::filesystem::path& run_dir, std::ostream& out);

}  // namespace lockstep::launcher
