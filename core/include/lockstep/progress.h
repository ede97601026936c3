// What this process's collectives are doing, for the launcher. Each
// communicator owns a CollectiveProgress and says when each of its
// collectives starts and finishes; the heartbeat channel sends a snapshot
// every second. Comparing the snapshots of all ranks, the launcher names a
// rank that never entered a collective the others wait in, over plain TCP,
// where MPI one-sided communication (the watchdog's own way) is missing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lockstep {

// One communicator's progress at one moment.
struct CollectiveState {
  // "mpi 1": the backend and the communicator's place among the ones of that
  // backend this process made. Ranks that create their communicators in the
  // same order (as collective creation requires) give each the same name.
  std::string channel;
  std::uint64_t started = 0;   // the last collective started (0: none yet)
  std::uint64_t finished = 0;  // the last collective finished
  std::string waiting_in;      // the oldest unfinished one, "" when none
};

// A communicator's entry in the process-wide table; removed on destruction.
// Thread-safe.
class CollectiveProgress {
 public:
  explicit CollectiveProgress(const std::string& backend);
  ~CollectiveProgress();
  CollectiveProgress(const CollectiveProgress&) = delete;
  CollectiveProgress& operator=(const CollectiveProgress&) = delete;

  // Collective `sequence`, described by `description` (which names its
  // number), started; it stays the one waited in until it finishes.
  void started(std::uint64_t sequence, const std::string& description);
  void finished(std::uint64_t sequence);

 private:
  std::uint64_t id_;
};

// Every live communicator of this process, in creation order.
std::vector<CollectiveState> collective_progress();

}  // namespace lockstep
