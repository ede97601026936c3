// `lockstep report RUN_DIR`: one self-contained HTML page about a run (no
// script, no network: inline SVG and CSS): its attempts on a time axis with
// failures, checkpoints, restarts and requeues marked, where the time went,
// each rank's step time, and the root cause of each failed attempt.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lockstep::launcher {

// What the page shows, gathered from the run's timeline and summary.json.
// Times are seconds from the earliest start in the run directory.
struct ReportData {
  struct Attempt {
    std::string name;  // "attempt 1", "start 2, attempt 0" with several starts
    double start = 0;
    double end = 0;
    std::string outcome;  // success, failed, hang, stopped
    std::string cause;    // "rank 2 on node1: killed by signal 9 (Killed)"
    std::string flight;   // what the flight recorders said
  };
  struct Mark {
    double at = 0;
    std::string kind;  // checkpoint, failure, restart, requeue, start
    std::string text;
  };
  std::string run_dir;
  std::vector<Attempt> attempts;
  std::vector<Mark> marks;
  std::map<int, std::string> rank_names;
  // rank -> (time, step seconds) of each step it recorded
  std::map<int, std::vector<std::pair<double, double>>> steps;
  std::optional<nlohmann::json> summary;  // summary.json of the latest start
  std::size_t skipped_lines = 0;
};

// Reads the run directory (untrusted files, as `lockstep trace` reads
// them). Throws UsageError when it holds no timeline.
ReportData read_report_data(const std::filesystem::path& run_dir);

// The page.
std::string report_html(const ReportData& data);

}  // namespace lockstep::launcher
