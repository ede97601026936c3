// What both readers of the heartbeat channel, the launcher's monitor and a
// node's relay, require of what a rank sends.
#pragma once

#include <cstdint>
#include <string_view>

namespace lockstep::channel {

// Whether `shown` is the job's token, compared without an early exit so
// that the time taken does not tell how much of a guess was right.
bool same_token(std::string_view shown, std::string_view token);

// Whether a step line's mean compute time and the steps it covers can be
// true: a finite time of 0 to a day, 1 to 10^9 steps. Anything else is
// dropped, not the step it came with.
bool plausible_compute(double seconds, std::int64_t steps);

}  // namespace lockstep::channel
