// What the flight recorders of an attempt's ranks say about a hang: the
// collective that stopped first, the ranks that wait in it, those whose
// records show them elsewhere, and those that left none ("collective #12 on
// mpi 1 (allreduce (26214400 bytes, f32, sum) #12) never joined by rank 3;
// ranks 0-2 wait in it").
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lockstep::launcher {

struct FlightVerdict {
  std::string channel;          // "mpi 1"
  std::uint64_t sequence = 0;   // the collective's number on that channel
  std::string description;      // "allreduce (26214400 bytes, f32, sum) #12"
  std::vector<int> waiting;     // ranks that started it and did not finish it
  std::vector<int> not_joined;  // ranks whose records stop before it
  std::vector<int> no_record;   // ranks of the attempt that wrote no records
  int dumps = 0;                // files read

  // "collective #12 on mpi 1 (allreduce (...)) never joined by rank 3; ranks
  // 0-2, 4-6 wait in it; no flight record from rank 7 (stopped, dead, ...)"
  std::string text() const;
  nlohmann::json to_json() const;
};

// Reads the flight-rank-<R>.json files of one attempt's directory (written
// by the ranks; untrusted: a file that is too large or not a valid record
// is left out) for an attempt of `world_size` ranks. With `written_before`
// (Unix nanoseconds), records written later are left out: a stopped rank
// that the job's stop resumed writes what it did after the hang, not at it.
// Nothing when no file holds a collective that is unfinished.
std::optional<FlightVerdict> read_flight_records(
    const std::filesystem::path& attempt_dir, int world_size,
    std::optional<std::int64_t> written_before = std::nullopt);

}  // namespace lockstep::launcher
