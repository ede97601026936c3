#include <algorithm>

#include <fmt/format.h>

#include "attempt.h"

namespace lockstep::launcher {

namespace {

double seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

// Time spent running steps in one attempt: from the start of its first
// reported step to the end of its last.
double training_seconds(const AttemptRecord& attempt) {
  if (!attempt.first_step_at || !attempt.last_step_at) return 0;
  return seconds(*attempt.last_step_at - *attempt.first_step_at) + attempt.step_seconds;
}

}  // namespace

Goodput compute_goodput(const std::vector<AttemptRecord>& attempts,
                        const std::vector<CheckpointEvent>& checkpoints, Clock::time_point start,
                        Clock::time_point end) {
  Goodput goodput;
  goodput.wall_seconds = seconds(end - start);
  double training = 0;
  double recovery_total = 0;
  int recoveries = 0;
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    const AttemptRecord& attempt = attempts[i];
    training += training_seconds(attempt);
    goodput.steps_completed = std::max(goodput.steps_completed, attempt.last_step + 1);
    if (attempt.failure_at && attempt.last_step >= 0) {
      // Steps after the newest checkpoint taken before the failure are
      // computed again by the next attempt.
      std::int64_t saved = attempt.first_step - 1;
      for (const CheckpointEvent& checkpoint : checkpoints) {
        if (checkpoint.at <= *attempt.failure_at) saved = std::max(saved, checkpoint.step);
      }
      const auto lost_steps =
          static_cast<double>(std::max<std::int64_t>(0, attempt.last_step - saved));
      goodput.lost_seconds +=
          std::min(training_seconds(attempt), lost_steps * attempt.step_seconds);
    }
    if (i > 0 && attempts[i - 1].failure_at) {
      const Clock::time_point failed = *attempts[i - 1].failure_at;
      const Clock::time_point training_again =
          attempt.first_step_at
              ? *attempt.first_step_at - std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(attempt.step_seconds))
              : attempt.end;
      goodput.restart_seconds += std::max(0.0, seconds(training_again - failed));
      if (attempt.first_step_at) {
        recovery_total += seconds(*attempt.first_step_at - failed);
        ++recoveries;
      }
    }
  }
  goodput.restarts = attempts.empty() ? 0 : static_cast<int>(attempts.size()) - 1;
  for (const CheckpointEvent& checkpoint : checkpoints) {
    goodput.checkpoint_seconds += checkpoint.stall_seconds;
  }
  goodput.checkpoints = static_cast<std::int64_t>(checkpoints.size());
  goodput.productive_seconds =
      std::max(0.0, training - goodput.lost_seconds - goodput.checkpoint_seconds);
  goodput.other_seconds =
      std::max(0.0, goodput.wall_seconds - goodput.productive_seconds - goodput.lost_seconds -
                        goodput.checkpoint_seconds - goodput.restart_seconds);
  goodput.mean_time_to_recovery = recoveries > 0 ? recovery_total / recoveries : 0;
  return goodput;
}

nlohmann::json to_json(const AttemptRecord& attempt, Clock::time_point run_start) {
  const auto offset = [&](Clock::time_point at) { return seconds(at - run_start); };
  nlohmann::json record = {
      {"attempt", attempt.index},
      {"outcome", attempt.outcome},
      {"start_s", offset(attempt.start)},
      {"end_s", offset(attempt.end)},
      {"first_step", attempt.first_step},
      {"last_step", attempt.last_step},
      {"step_seconds", attempt.step_seconds},
      {"mpirun_status", attempt.mpirun_status ? attempt.mpirun_status->str() : "unknown"},
      {"killed_after_grace", attempt.killed_after_grace},
      {"survivors", attempt.survivors},
      {"ranks_reported", attempt.ranks_reported},
  };
  if (attempt.first_step_at) record["first_step_s"] = offset(*attempt.first_step_at);
  if (!attempt.hosts.empty()) record["hosts"] = attempt.hosts;
  if (attempt.ranks_started > 0) record["ranks_started"] = attempt.ranks_started;
  if (attempt.failure_at) {
    record["failure_s"] = offset(*attempt.failure_at);
    record["failed_rank"] = attempt.failed_rank;
    record["failed_host"] = attempt.failed_host;
    if (!attempt.failed_process.empty()) record["failed_process"] = attempt.failed_process;
    if (attempt.host_lost) record["host_lost"] = true;
    if (attempt.detected_at) record["detected_s"] = offset(*attempt.detected_at);
    record["outside_kill"] = attempt.outside_kill;
    record["program_fault"] = attempt.program_fault;
    record["failure"] = attempt.failure;
    record["tail"] = attempt.tail;
  }
  if (!attempt.unreachable.empty()) record["unreachable"] = attempt.unreachable;
  if (!attempt.flight.is_null()) record["flight_recorder"] = attempt.flight;
  if (!attempt.stragglers.empty()) {
    nlohmann::json stragglers = nlohmann::json::array();
    for (const StragglerRecord& straggler : attempt.stragglers) {
      stragglers.push_back(to_json(straggler));
    }
    record["stragglers"] = stragglers;
  }
  return record;
}

nlohmann::json to_json(const Goodput& goodput) {
  return {
      {"summary_version", kSummaryVersion},
      {"wall_seconds", goodput.wall_seconds},
      {"productive_seconds", goodput.productive_seconds},
      {"lost_recompute_seconds", goodput.lost_seconds},
      {"restart_seconds", goodput.restart_seconds},
      {"checkpoint_stall_seconds", goodput.checkpoint_seconds},
      {"checkpoints", goodput.checkpoints},
      {"other_seconds", goodput.other_seconds},
      {"goodput", goodput.wall_seconds > 0 ? goodput.productive_seconds / goodput.wall_seconds : 0},
      {"steps_completed", goodput.steps_completed},
      {"restarts", goodput.restarts},
      {"mean_time_to_recovery_seconds", goodput.mean_time_to_recovery},
  };
}

std::string describe(const Goodput& goodput) {
  const auto share = [&](double part) {
    return goodput.wall_seconds > 0 ? 100.0 * part / goodput.wall_seconds : 0.0;
  };
  std::string text = fmt::format("goodput: {:.1f}% of {:.1f} s wall time was productive training\n",
                                 share(goodput.productive_seconds), goodput.wall_seconds);
  text += fmt::format("  productive training   {:8.1f} s  {:5.1f}%\n", goodput.productive_seconds,
                      share(goodput.productive_seconds));
  text += fmt::format("  lost (recomputed)     {:8.1f} s  {:5.1f}%\n", goodput.lost_seconds,
                      share(goodput.lost_seconds));
  text += fmt::format("  restarts              {:8.1f} s  {:5.1f}%\n", goodput.restart_seconds,
                      share(goodput.restart_seconds));
  text += fmt::format("  checkpoint stall      {:8.1f} s  {:5.1f}%\n", goodput.checkpoint_seconds,
                      share(goodput.checkpoint_seconds));
  text += fmt::format("  start-up, shut-down   {:8.1f} s  {:5.1f}%\n", goodput.other_seconds,
                      share(goodput.other_seconds));
  text += fmt::format("  steps completed {}, restarts {}, mean time to recovery {:.1f} s",
                      goodput.steps_completed, goodput.restarts, goodput.mean_time_to_recovery);
  return text;
}

}  // namespace lockstep::launcher
