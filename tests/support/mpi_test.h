// Shared by the multi-rank gtest binaries.
#pragma once

#include <lockstep/lockstep.h>

namespace lockstep::testing {
// The Runtime constructed by the test main.
Runtime& runtime();
}  // namespace lockstep::testing
