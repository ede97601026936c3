// Which rank holds the others up, from the collectives' progress the ranks
// report on the heartbeat channel every second. On a communicator where
// some ranks wait in collective #S, a rank that never started #S is behind
// them; the one furthest behind is named. This works over plain TCP, where
// the ranks' own watchdog cannot read the others' progress (no MPI
// one-sided communication).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "monitor.h"

namespace lockstep::launcher {

struct RankProgress {
  std::string host;
  std::vector<CollectiveReport> collectives;  // as last reported
};

struct Laggard {
  int rank = -1;
  std::string host;
  // "never entered allreduce (...) #812 (its last was #811); ranks 0, 1, 2
  // wait in it"
  std::string what;
};

// The rank furthest behind a collective that other ranks wait in; nullopt
// when no rank waits, or when every rank has entered what the others wait
// in (the hang is then inside the collective).
std::optional<Laggard> find_laggard(const std::map<int, RankProgress>& ranks);

}  // namespace lockstep::launcher
