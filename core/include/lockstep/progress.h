// What this process's collectives are doing, for the launcher. Each
// communicator owns a CollectiveProgress and says when each of its
// collectives starts and finishes; the heartbeat channel sends a snapshot
// every second. Comparing the snapshots of all ranks, the launcher names a
// rank that never entered a collective the others wait in, over plain TCP,
// where MPI one-sided communication (the watchdog's own way) is missing.
#pragma once

#include <cstdint>
#include <filesystem>
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
  // number), was issued and waits for its turn (a backend with a queue).
  void queued(std::uint64_t sequence, const std::string& description);
  // Collective `sequence` started; it stays the one waited in until it
  // finishes.
  void started(std::uint64_t sequence, const std::string& description);
  void finished(std::uint64_t sequence);

 private:
  std::uint64_t id_;
};

// Every live communicator of this process, in creation order.
std::vector<CollectiveState> collective_progress();

// The flight recorder: the last collectives of each communicator, kept
// beside its progress (under the same lock, taken once per collective
// anyway), and written to a file when a watchdog fires, the runtime stops
// on an error, or the launcher asks at a hang.
enum class CollectiveStage { kQueued, kStarted, kDone };

struct FlightRecord {
  std::uint64_t sequence = 0;
  std::string description;  // "allreduce (4096 bytes, f32, sum) #12"
  CollectiveStage stage = CollectiveStage::kQueued;
  // Unix nanoseconds; 0: not reached (or the backend has no queue).
  std::int64_t queued_ns = 0;
  std::int64_t started_ns = 0;
  std::int64_t done_ns = 0;
};

struct FlightLog {
  std::string channel;                // as in CollectiveState
  std::vector<FlightRecord> records;  // oldest first
};

// How many collectives each communicator keeps (LOCKSTEP_FLIGHT_RECORDS;
// 0 keeps none). Applies to collectives recorded from now on.
void set_flight_capacity(std::size_t records);
std::vector<FlightLog> flight_records();

// Where dump_flight_records() writes, and who this process is. An empty
// path turns dumps off (the default).
struct FlightDumpTarget {
  std::filesystem::path path;
  int rank = 0;
  std::int64_t attempt = 0;
  std::string host;
};
void set_flight_dump_target(FlightDumpTarget target);
// Writes every communicator's records, with `reason`, to the target, through
// a temporary file and a rename. Thread-safe; never throws; false when there
// is no target or writing failed (logged). A later dump replaces an
// earlier one.
bool dump_flight_records(const std::string& reason) noexcept;

}  // namespace lockstep
