#include "registration_check.h"

#include <cstdint>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lockstep/error.h"

namespace lockstep::detail {

namespace {

std::string fingerprint(const std::vector<std::string>& entries) {
  std::uint64_t hash = 14695981039346656037ULL;  // FNV-1a
  auto mix = [&hash](unsigned char byte) {
    hash ^= byte;
    hash *= 1099511628211ULL;
  };
  for (const std::string& entry : entries) {
    for (char c : entry) mix(static_cast<unsigned char>(c));
    mix('\n');
  }
  return fmt::format("{:016x}:{}", hash, entries.size());
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

}  // namespace

void check_same_on_every_rank(Communicator& communicator, const std::vector<std::string>& entries,
                              const std::string& what) {
  const std::vector<std::string> fingerprints =
      communicator.exchange_metadata(fingerprint(entries));
  bool all_same = true;
  for (const std::string& other : fingerprints) all_same = all_same && other == fingerprints[0];
  if (all_same) return;

  // Rare path: exchange the full lists and find the first difference.
  std::string mine;
  for (const std::string& entry : entries) mine += entry + "\n";
  std::vector<std::vector<std::string>> lists;
  for (const std::string& text : communicator.exchange_metadata(mine)) {
    lists.push_back(split_lines(text));
  }
  std::size_t longest = 0;
  for (const auto& list : lists) longest = std::max(longest, list.size());
  for (std::size_t index = 0; index < longest; ++index) {
    std::map<std::string, std::vector<int>> ranks_by_entry;
    for (std::size_t rank = 0; rank < lists.size(); ++rank) {
      const auto& list = lists[rank];
      ranks_by_entry[index < list.size() ? "'" + list[index] + "'" : "nothing"].push_back(
          static_cast<int>(rank));
    }
    if (ranks_by_entry.size() == 1) continue;
    std::vector<std::string> sides;
    for (const auto& [entry, ranks] : ranks_by_entry) {
      sides.push_back(fmt::format("{} on rank{} {}", entry, ranks.size() > 1 ? "s" : "",
                                  fmt::join(ranks, ", ")));
    }
    throw UsageError(fmt::format(
        "{}: the ranks registered different parameters; the first difference is parameter #{}: "
        "{}. Every rank must register the same names, shapes and dtypes in the same order.",
        what, index, fmt::join(sides, " but ")));
  }
  throw UsageError(what +
                   ": the ranks registered different parameters (same entries, different "
                   "fingerprints); every rank must register the same parameters");
}

}  // namespace lockstep::detail
