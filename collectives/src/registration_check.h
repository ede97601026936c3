// Compares what every rank registered with GradSync, cheaply when all agree
// (one exchange of a hash) and with a precise message when they do not.
#pragma once

#include <string>
#include <vector>

#include "lockstep/communicator.h"

namespace lockstep::detail {

// `entries` describes this rank's registration, one line per parameter
// ("fc1.weight f32[256, 784]"). Collective. Throws UsageError naming the
// first differing entry and which ranks hold which version of it.
void check_same_on_every_rank(Communicator& communicator, const std::vector<std::string>& entries,
                              const std::string& what);

}  // namespace lockstep::detail
