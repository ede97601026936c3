#include "flight_report.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>

#include "lockstep/files.h"

namespace lockstep::launcher {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A rank keeps at most LOCKSTEP_FLIGHT_RECORDS (2,000 by default) records
// per communicator, about 250 bytes each in its file.
constexpr std::uintmax_t kMaxFile = 16 << 20;
constexpr std::size_t kMaxChannels = 64;
constexpr int kMaxRanks = 1 << 24;

// "0-2, 4, 6-7"
std::string ranges(const std::vector<int>& ranks) {
  std::string text;
  for (std::size_t i = 0; i < ranks.size();) {
    std::size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!text.empty()) text += ", ";
    text += j == i ? std::to_string(ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[j]);
    i = j + 1;
  }
  return text;
}

std::string ranks_text(const std::vector<int>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", ranges(ranks));
}

// A collective on one rank: its stage, when it started, what it was.
struct Seen {
  char stage = 'q';  // q: queued, s: started, d: done
  std::int64_t started_ns = 0;
  std::string description;
};
// One rank's records of one channel, by sequence number.
using Channel = std::map<std::uint64_t, Seen>;

// The channels of one rank's file; nothing when it is not a valid record of
// `rank`, or was written at or after `written_before`.
std::optional<std::map<std::string, Channel>> read_file(
    const fs::path& path, int rank, std::optional<std::int64_t> written_before) {
  const std::optional<std::string> text = files::read_regular(path, kMaxFile);
  if (!text) return std::nullopt;
  const json dump = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!dump.is_object() || !dump.contains("rank") || !dump["rank"].is_number_integer() ||
      dump["rank"].get<std::int64_t>() != rank || !dump.contains("channels") ||
      !dump["channels"].is_array() || dump["channels"].size() > kMaxChannels) {
    return std::nullopt;
  }
  if (written_before && (!dump.contains("dumped_ns") || !dump["dumped_ns"].is_number_integer() ||
                         dump["dumped_ns"].get<std::int64_t>() >= *written_before)) {
    return std::nullopt;
  }
  std::map<std::string, Channel> channels;
  for (const json& channel : dump["channels"]) {
    if (!channel.is_object() || !channel.contains("channel") || !channel["channel"].is_string() ||
        !channel.contains("records") || !channel["records"].is_array()) {
      return std::nullopt;
    }
    Channel& mine = channels[channel["channel"].get<std::string>().substr(0, 64)];
    for (const json& record : channel["records"]) {
      if (!record.is_object() || !record.contains("seq") || !record["seq"].is_number_unsigned() ||
          !record.contains("state") || !record["state"].is_string()) {
        return std::nullopt;
      }
      const std::string state = record["state"].get<std::string>();
      Seen& seen = mine[record["seq"].get<std::uint64_t>()];
      seen.stage = state == "done" ? 'd' : state == "started" ? 's' : 'q';
      if (record.contains("started_ns") && record["started_ns"].is_number_integer()) {
        seen.started_ns = record["started_ns"].get<std::int64_t>();
      }
      if (record.contains("description") && record["description"].is_string()) {
        seen.description = record["description"].get<std::string>().substr(0, 200);
      }
    }
  }
  return channels;
}

using Ranks = std::map<int, std::map<std::string, Channel>>;

// The readable flight-rank-<R>.json files of ranks below `world_size`: the
// directory is listed, not every rank probed (world_size is what the ranks
// said, up to 2^24).
Ranks read_ranks(const fs::path& attempt_dir, int world_size,
                 std::optional<std::int64_t> written_before) {
  Ranks ranks;
  std::error_code error;
  for (fs::directory_iterator it(attempt_dir, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    constexpr std::string_view kPrefix = "flight-rank-";
    constexpr std::string_view kSuffix = ".json";
    if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) continue;
    const std::string_view digits(name.data() + kPrefix.size(),
                                  name.size() - kPrefix.size() - kSuffix.size());
    int rank = -1;
    const auto [stop, failed] = std::from_chars(digits.data(), digits.data() + digits.size(), rank);
    if (failed != std::errc() || stop != digits.data() + digits.size() || rank < 0 ||
        rank >= std::min(world_size, kMaxRanks) ||
        name != fmt::format("flight-rank-{}.json", rank)) {
      continue;
    }
    if (auto channels = read_file(it->path(), rank, written_before)) {
      ranks[rank] = std::move(*channels);
    }
  }
  return ranks;
}

// The verdict on `name`'s oldest unfinished collective (the lowest number
// some rank has not finished); nothing when every collective finished.
std::optional<FlightVerdict> verdict_on(const Ranks& ranks, const std::string& name,
                                        std::int64_t& started_ns) {
  std::optional<std::uint64_t> stuck;
  for (const auto& [rank, channels] : ranks) {
    const auto it = channels.find(name);
    if (it == channels.end()) continue;
    for (const auto& [sequence, seen] : it->second) {
      if (seen.stage == 'd') continue;
      if (!stuck || sequence < *stuck) stuck = sequence;
      break;
    }
  }
  if (!stuck) return std::nullopt;
  FlightVerdict found;
  found.channel = name;
  found.sequence = *stuck;
  started_ns = std::numeric_limits<std::int64_t>::max();
  for (const auto& [rank, channels] : ranks) {
    const auto it = channels.find(name);
    if (it == channels.end()) {
      found.not_joined.push_back(rank);
      continue;
    }
    const Channel& seen = it->second;
    if (const auto record = seen.find(*stuck); record != seen.end()) {
      if (found.description.empty()) found.description = record->second.description;
      if (record->second.stage == 's') {
        found.waiting.push_back(rank);
        if (record->second.started_ns > 0) {
          started_ns = std::min(started_ns, record->second.started_ns);
        }
      }
      // Queued: issued, but the rank never got to start it.
      if (record->second.stage == 'q') found.not_joined.push_back(rank);
      continue;
    }
    // No record of it: the rank is behind when its records end before it
    // (a ring that dropped it has passed it).
    if (seen.empty() || seen.rbegin()->first < *stuck) found.not_joined.push_back(rank);
  }
  return found;
}

}  // namespace

std::string FlightVerdict::text() const {
  std::string line = fmt::format("collective #{} on {}", sequence, channel);
  if (!description.empty()) line += fmt::format(" ({})", description);
  if (!not_joined.empty()) line += fmt::format(" never joined by {}", ranks_text(not_joined));
  if (!waiting.empty()) {
    line += fmt::format("{}{} {} in it", not_joined.empty() ? ": " : "; ", ranks_text(waiting),
                        waiting.size() == 1 ? "waits" : "wait");
  }
  if (not_joined.empty() && waiting.empty()) line += " did not finish";
  if (!no_record.empty()) {
    line += fmt::format(
        "; no flight record from {} (stopped, dead, or its host keeps its own run directory)",
        ranks_text(no_record));
  }
  return line;
}

json FlightVerdict::to_json() const {
  return {{"channel", channel},
          {"sequence", sequence},
          {"description", description},
          {"waiting", waiting},
          {"not_joined", not_joined},
          {"no_record", no_record},
          {"dumps", dumps},
          {"text", text()}};
}

std::optional<FlightVerdict> read_flight_records(const fs::path& attempt_dir, int world_size,
                                                 std::optional<std::int64_t> written_before) {
  const Ranks ranks = read_ranks(attempt_dir, world_size, written_before);
  // Of the channels with an unfinished collective, the one whose collective
  // began first: sequence numbers of different channels do not compare.
  std::set<std::string> names;
  for (const auto& [rank, channels] : ranks) {
    for (const auto& [name, channel] : channels) names.insert(name);
  }
  std::optional<FlightVerdict> verdict;
  std::int64_t earliest = std::numeric_limits<std::int64_t>::max();
  for (const std::string& name : names) {
    std::int64_t started_ns = 0;
    auto found = verdict_on(ranks, name, started_ns);
    if (found && (!verdict || started_ns < earliest)) {
      verdict = std::move(found);
      earliest = started_ns;
    }
  }
  if (!verdict) return std::nullopt;
  verdict->dumps = static_cast<int>(ranks.size());
  for (int rank = 0; rank < world_size; ++rank) {
    if (!ranks.contains(rank)) verdict->no_record.push_back(rank);
  }
  return verdict;
}

}  // namespace lockstep::launcher
