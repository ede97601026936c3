#include "lockstep/checkpoint_policy.h"

#include <cmath>
#include <exception>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "collective_text.h"
#include "lockstep/error.h"
#include "lockstep/knobs.h"
#include "lockstep/mpi_check.h"
#include "lockstep/runtime.h"

namespace lockstep {

std::optional<double> estimate_mtbf(double run_seconds, std::int64_t restarts) {
  if (restarts <= 0 || !(run_seconds > 0)) return std::nullopt;
  return run_seconds / static_cast<double>(restarts);
}

std::optional<RunHistory> read_run_history(const std::filesystem::path& attempts_jsonl) {
  std::ifstream file(attempts_jsonl);
  if (!file) return std::nullopt;
  RunHistory history;
  std::string line;
  while (std::getline(file, line)) {
    // A line being appended while we read, or damaged: it tells nothing.
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object()) continue;
    const double start = record.value("start_s", 0.0);
    const double end = record.value("end_s", start);
    if (end > start) history.seconds += end - start;
    const std::string outcome = record.value("outcome", "");
    if (outcome == "failed" || outcome == "hang") ++history.failures;
  }
  return history;
}

CheckpointPolicy CheckpointPolicy::never() { return CheckpointPolicy(Mode::kNever); }

CheckpointPolicy& CheckpointPolicy::agree_over(MPI_Comm comm) {
  comm_ = std::make_shared<MpiComm>(MpiComm::dup(comm));
  return *this;
}

void CheckpointPolicy::set_history(RunHistory history) { history_ = history; }

bool CheckpointPolicy::should_checkpoint(std::int64_t step, double now_seconds) {
  if (mode_ == Mode::kNever) return false;
  if (mode_ == Mode::kSteps) return due(step, now_seconds);  // the same on every rank
  if (mode_ == Mode::kAutomatic && history_.failures > 0) {
    const double earlier = history_.seconds_unknown
                               ? now_seconds * static_cast<double>(history_.failures)
                               : history_.seconds;
    observe_restarts(earlier + now_seconds, history_.failures);
  }
  if (!comm_) return due(step, now_seconds);
  // Rank 0 decides; a failure of its decision (-1) is every rank's, or the
  // others would go on without it.
  int answer = 0;
  std::exception_ptr failure;
  if (comm_->rank() == 0) {
    try {
      answer = due(step, now_seconds) ? 1 : 0;
    } catch (...) {
      failure = std::current_exception();
      answer = -1;
    }
  }
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&answer, 1, MPI_INT, 0, comm_->get()));
  if (answer < 0) checkpoint::agree_or_throw(comm_->get(), failure);
  return answer != 0;
}

CheckpointPolicy CheckpointPolicy::every_steps(std::int64_t steps) {
  if (steps < 1) throw UsageError(fmt::format("checkpoint every {} steps: need at least 1", steps));
  CheckpointPolicy policy(Mode::kSteps);
  policy.every_steps_ = steps;
  return policy;
}

CheckpointPolicy CheckpointPolicy::every_seconds(double seconds) {
  if (!(seconds > 0)) {
    throw UsageError(fmt::format("checkpoint every {} seconds: need a positive interval", seconds));
  }
  CheckpointPolicy policy(Mode::kSeconds);
  policy.every_seconds_ = seconds;
  return policy;
}

CheckpointPolicy CheckpointPolicy::automatic(double mtbf_seconds, double fallback_mtbf_seconds) {
  if (mtbf_seconds < 0 || !(fallback_mtbf_seconds > 0)) {
    throw UsageError(
        fmt::format("automatic checkpoint policy: MTBF {} s must be >= 0 (0 learns "
                    "it) and the fallback {} s positive",
                    mtbf_seconds, fallback_mtbf_seconds));
  }
  CheckpointPolicy policy(Mode::kAutomatic);
  policy.fixed_mtbf_ = mtbf_seconds;
  policy.fallback_mtbf_ = fallback_mtbf_seconds;
  return policy;
}

double CheckpointPolicy::mtbf_seconds() const {
  if (fixed_mtbf_ > 0) return fixed_mtbf_;
  return learned_mtbf_.value_or(fallback_mtbf_);
}

double CheckpointPolicy::interval_seconds() const {
  switch (mode_) {
    case Mode::kNever:
    case Mode::kSteps:
      return 0;
    case Mode::kSeconds:
      return every_seconds_;
    case Mode::kAutomatic:
      return young_daly_interval(mean_stall_, mtbf_seconds());
  }
  return 0;
}

bool CheckpointPolicy::due(std::int64_t step, double now_seconds) const {
  if (mode_ == Mode::kNever) return false;
  if (mode_ == Mode::kSteps) return (step + 1) % every_steps_ == 0;
  if (!last_save_at_) return mode_ == Mode::kAutomatic || now_seconds >= every_seconds_;
  return now_seconds - *last_save_at_ >= interval_seconds();
}

void CheckpointPolicy::record_save(double now_seconds, double stall_seconds) {
  last_save_at_ = now_seconds;
  ++saves_;
  // A running mean: the first save is often slower (page faults in the
  // staging buffer), and the mean forgets it as saves accumulate.
  mean_stall_ += (stall_seconds - mean_stall_) / static_cast<double>(saves_);
}

void CheckpointPolicy::observe_restarts(double run_seconds, std::int64_t restarts) {
  learned_mtbf_ = estimate_mtbf(run_seconds, restarts);
}

CheckpointPolicy checkpoint_policy(const Runtime& runtime) {
  const Config& config = runtime.config();
  const std::string mode = config.get(knobs::checkpoint_policy);
  CheckpointPolicy policy = CheckpointPolicy::never();
  if (mode == "steps") {
    const std::int64_t every = config.get(knobs::checkpoint_every);
    if (every > 0) policy = CheckpointPolicy::every_steps(every);
  } else if (mode == "seconds") {
    policy = CheckpointPolicy::every_seconds(config.get(knobs::checkpoint_seconds));
  } else {
    policy = CheckpointPolicy::automatic(config.get(knobs::mtbf));
    // Only rank 0's history matters (it decides), but reading it everywhere
    // keeps every rank's policy the same object.
    if (auto history = read_run_history(runtime.run_dir() / "attempts.jsonl")) {
      policy.set_history(*history);
    } else if (runtime.restart_count() > 0) {
      policy.set_history(
          {.seconds = 0, .failures = runtime.restart_count(), .seconds_unknown = true});
    }
  }
  policy.agree_over(runtime.comm());
  return policy;
}

}  // namespace lockstep
