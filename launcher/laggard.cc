#include "laggard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace lockstep::launcher {

std::optional<Laggard> find_laggard(const std::map<int, RankProgress>& ranks) {
  // Per communicator: the oldest collective some rank waits in, and who.
  struct Waited {
    std::int64_t sequence = 0;
    std::string description;
    std::vector<int> waiters;
  };
  std::map<std::string, Waited> waited;
  for (const auto& [rank, progress] : ranks) {
    for (const CollectiveReport& report : progress.collectives) {
      if (report.waiting_in.empty()) continue;
      // The oldest unfinished collective of this rank is the one after its
      // last finished one.
      const std::int64_t sequence = report.finished + 1;
      Waited& entry = waited[report.channel];
      if (entry.waiters.empty() || sequence < entry.sequence) {
        entry = Waited{sequence, report.waiting_in, {rank}};
      } else if (sequence == entry.sequence) {
        entry.waiters.push_back(rank);
      }
    }
  }
  std::optional<Laggard> found;
  std::int64_t furthest_behind = 0;
  for (const auto& [channel, entry] : waited) {
    for (const auto& [rank, progress] : ranks) {
      for (const CollectiveReport& report : progress.collectives) {
        if (report.channel != channel || report.started >= entry.sequence) continue;
        const std::int64_t behind = entry.sequence - report.started;
        if (found && behind <= furthest_behind) continue;
        furthest_behind = behind;
        found = Laggard{
            rank, progress.host,
            fmt::format("never entered {} (its last was #{}); {} {} wait in it", entry.description,
                        report.started, entry.waiters.size() == 1 ? "rank" : "ranks",
                        fmt::join(entry.waiters, ", "))};
      }
    }
  }
  return found;
}

}  // namespace lockstep::launcher
