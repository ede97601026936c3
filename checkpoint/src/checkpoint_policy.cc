#include "lockstep/checkpoint_policy.h"

#include <cmath>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep {

double young_daly_interval(double save_cost_seconds, double mtbf_seconds) {
  if (!(save_cost_seconds >= 0) || !(mtbf_seconds > 0)) {
    throw UsageError(
        fmt::format("Young/Daly interval needs a save cost >= 0 and an MTBF > 0; got "
                    "{} s and {} s",
                    save_cost_seconds, mtbf_seconds));
  }
  return std::sqrt(2.0 * save_cost_seconds * mtbf_seconds);
}

std::optional<double> estimate_mtbf(double run_seconds, std::int64_t restarts) {
  if (restarts <= 0 || !(run_seconds > 0)) return std::nullopt;
  return run_seconds / static_cast<double>(restarts);
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

}  // namespace lockstep
