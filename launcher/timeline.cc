#include "timeline.h"

#include <unistd.h>

#include <chrono>
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace lockstep::launcher {

namespace {

std::int64_t system_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string dump(const nlohmann::json& line) {
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string session_name(std::int64_t unix_ns, int pid) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1'000'000'000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32] = {};
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  return fmt::format("{}-{}", stamp, pid);
}

LauncherTimeline::LauncherTimeline(std::filesystem::path session_dir, Clock::time_point run_start)
    : session_dir_(std::move(session_dir)),
      log_(session_dir_ / "launcher.jsonl"),
      run_start_(run_start),
      run_start_unix_ns_(
          system_now_ns() -
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - run_start).count()) {}

std::int64_t LauncherTimeline::unix_ns(Clock::time_point at) const {
  return run_start_unix_ns_ +
         std::chrono::duration_cast<std::chrono::nanoseconds>(at - run_start_).count();
}

std::string LauncherTimeline::start(const std::string& slurm_job, int slurm_restart_count) {
  nlohmann::json header = {{"launcher", true}, {"pid", getpid()}, {"started", run_start_unix_ns_}};
  if (!slurm_job.empty()) {
    header["slurm_job"] = slurm_job;
    header["slurm_restart_count"] = slurm_restart_count;
  }
  return log_.append(dump(header));
}

std::string LauncherTimeline::attempt(const AttemptRecord& record,
                                      const std::vector<CheckpointEvent>& checkpoints) {
  std::string name = fmt::format("attempt {}: {}", record.index, record.outcome);
  nlohmann::json args = {{"outcome", record.outcome}, {"ranks", record.ranks_started}};
  if (!record.failure.empty()) args["failure"] = record.failure;
  if (record.failed_rank >= 0) args["failed_rank"] = record.failed_rank;
  if (!record.failed_host.empty()) args["failed_host"] = record.failed_host;
  if (record.first_step >= 0) args["steps"] = {record.first_step, record.last_step};
  if (!record.flight.is_null()) args["flight_recorder"] = record.flight.value("text", "");
  for (const StragglerRecord& straggler : record.stragglers) {
    args["stragglers"].push_back(describe(straggler));
  }
  std::string problem;
  const auto keep = [&problem](std::string found) {
    if (problem.empty()) problem = std::move(found);
  };
  keep(log_.append(dump({{"ph", "X"},
                         {"cat", "attempt"},
                         {"name", name},
                         {"ts", unix_ns(record.start)},
                         {"dur", unix_ns(record.end) - unix_ns(record.start)},
                         {"attempt", record.index},
                         {"args", args}})));
  for (const CheckpointEvent& checkpoint : checkpoints) {
    if (checkpoint.at < record.start || checkpoint.at > record.end) continue;
    keep(log_.append(dump({{"ph", "i"},
                           {"cat", "checkpoint"},
                           {"name", fmt::format("checkpoint step {}", checkpoint.step)},
                           {"ts", unix_ns(checkpoint.at)}})));
  }
  if (record.failure_at && record.outcome != "success" && record.outcome != "stopped") {
    std::string what = record.failed_process.empty() && record.failed_rank >= 0
                           ? fmt::format("rank {}", record.failed_rank)
                           : record.failed_process;
    if (!record.failed_host.empty()) what += fmt::format(" on {}", record.failed_host);
    keep(log_.append(dump({{"ph", "i"},
                           {"cat", "failure"},
                           {"name", fmt::format("{}: {}", what, record.failure)},
                           {"ts", unix_ns(*record.failure_at)}})));
  }
  return problem;
}

std::string LauncherTimeline::note(std::string_view category, std::string_view what) {
  return log_.append(
      dump({{"ph", "i"}, {"cat", category}, {"name", what}, {"ts", unix_ns(Clock::now())}}));
}

}  // namespace lockstep::launcher
