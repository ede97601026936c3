#include "lockstep/channel_rules.h"

#include <cmath>
#include <cstddef>

namespace lockstep::channel {

namespace {

constexpr double kMaxComputeSeconds = 86400;
constexpr std::int64_t kMaxComputeSteps = 1'000'000'000;

}  // namespace

bool same_token(std::string_view shown, std::string_view token) {
  if (shown.size() != token.size()) return false;
  unsigned char difference = 0;
  for (std::size_t i = 0; i < shown.size(); ++i) {
    difference = static_cast<unsigned char>(difference | (shown[i] ^ token[i]));
  }
  return difference == 0;
}

bool plausible_compute(double seconds, std::int64_t steps) {
  return std::isfinite(seconds) && seconds >= 0 && seconds <= kMaxComputeSeconds && steps > 0 &&
         steps <= kMaxComputeSteps;
}

}  // namespace lockstep::channel
