#include "flight_report.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

namespace lockstep::launcher {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::uintmax_t kMaxFile = 64 << 20;
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

// One rank's records of one channel: state by sequence number.
struct Channel {
  std::map<std::uint64_t, std::string> state;
  std::map<std::uint64_t, std::string> description;
};

// The channels of one rank's file; nothing when it is not a valid record.
std::optional<std::pair<int, std::map<std::string, Channel>>> read_file(
    const fs::path& path, std::optional<std::int64_t> written_before) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error || size > kMaxFile || !fs::is_regular_file(fs::symlink_status(path))) return {};
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const json dump = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!dump.is_object() || !dump.contains("rank") || !dump["rank"].is_number_integer() ||
      !dump.contains("channels") || !dump["channels"].is_array()) {
    return {};
  }
  const auto rank = dump["rank"].get<std::int64_t>();
  if (rank < 0 || rank >= kMaxRanks) return {};
  if (written_before && (!dump.contains("dumped_ns") || !dump["dumped_ns"].is_number_integer() ||
                         dump["dumped_ns"].get<std::int64_t>() >= *written_before)) {
    return {};
  }
  std::map<std::string, Channel> channels;
  for (const json& channel : dump["channels"]) {
    if (!channel.is_object() || !channel.contains("channel") || !channel["channel"].is_string() ||
        !channel.contains("records") || !channel["records"].is_array()) {
      return {};
    }
    Channel& mine = channels[channel["channel"].get<std::string>().substr(0, 64)];
    for (const json& record : channel["records"]) {
      if (!record.is_object() || !record.contains("seq") || !record["seq"].is_number_unsigned() ||
          !record.contains("state") || !record["state"].is_string()) {
        return {};
      }
      const auto sequence = record["seq"].get<std::uint64_t>();
      mine.state[sequence] = record["state"].get<std::string>();
      if (record.contains("description") && record["description"].is_string()) {
        mine.description[sequence] = record["description"].get<std::string>().substr(0, 200);
      }
    }
  }
  return std::make_pair(static_cast<int>(rank), std::move(channels));
}

}  // namespace

std::string FlightVerdict::text() const {
  std::string line = fmt::format("collective #{} on {}", sequence, channel);
  if (!description.empty()) line += fmt::format(" ({})", description);
  std::vector<int> absent = not_joined;
  absent.insert(absent.end(), no_record.begin(), no_record.end());
  std::sort(absent.begin(), absent.end());
  line += absent.empty() ? " was started by every rank that left records, but did not finish"
                         : fmt::format(" never joined by {}", ranks_text(absent));
  if (!no_record.empty()) {
    line += fmt::format(" (no flight record from {}: stopped, dead or unreachable)",
                        ranks_text(no_record));
  }
  if (!waiting.empty()) {
    line +=
        fmt::format("; {} {} in it", ranks_text(waiting), waiting.size() == 1 ? "waits" : "wait");
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
  std::map<int, std::map<std::string, Channel>> ranks;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(attempt_dir, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("flight-rank-") || !name.ends_with(".json")) continue;
    if (auto parsed = read_file(entry.path(), written_before)) {
      ranks[parsed->first] = std::move(parsed->second);
    }
  }
  if (ranks.empty()) return std::nullopt;
  // The oldest collective some rank has started or queued but not finished,
  // over every channel.
  std::optional<FlightVerdict> verdict;
  std::set<std::string> names;
  for (const auto& [rank, channels] : ranks) {
    for (const auto& [name, channel] : channels) names.insert(name);
  }
  for (const std::string& name : names) {
    std::optional<std::uint64_t> stuck;
    std::string description;
    for (const auto& [rank, channels] : ranks) {
      const auto it = channels.find(name);
      if (it == channels.end()) continue;
      for (const auto& [sequence, state] : it->second.state) {
        if (state == "done") continue;
        if (!stuck || sequence < *stuck) {
          stuck = sequence;
          const auto text = it->second.description.find(sequence);
          description = text != it->second.description.end() ? text->second : "";
        }
        break;
      }
    }
    if (!stuck) continue;
    FlightVerdict found;
    found.channel = name;
    found.sequence = *stuck;
    found.description = description;
    for (const auto& [rank, channels] : ranks) {
      const auto it = channels.find(name);
      if (it == channels.end()) {
        found.not_joined.push_back(rank);
        continue;
      }
      const auto& states = it->second.state;
      if (const auto state = states.find(*stuck); state != states.end()) {
        // Queued: issued, but the rank never got to start it.
        if (state->second == "started") found.waiting.push_back(rank);
        if (state->second == "queued") found.not_joined.push_back(rank);
        continue;
      }
      // No record of it: the rank is behind when its records end before
      // it (a ring that dropped it has passed it).
      if (states.empty() || states.rbegin()->first < *stuck) found.not_joined.push_back(rank);
    }
    if (!verdict) verdict = std::move(found);
  }
  if (!verdict) return std::nullopt;
  verdict->dumps = static_cast<int>(ranks.size());
  for (int rank = 0; rank < world_size; ++rank) {
    if (!ranks.contains(rank)) verdict->no_record.push_back(rank);
  }
  return verdict;
}

}  // namespace lockstep::launcher
