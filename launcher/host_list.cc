#include "host_list.h"

#include <charconv>
#include <cstdint>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::launcher {

namespace {

// Longer than any host entry: a line beyond it means the file is not a
// hostfile (and reading on would hold all of it in memory).
constexpr std::size_t kMaxLineLength = 4096;
constexpr std::uintmax_t kMaxFileSize = 16 << 20;
// The slots of all hosts count ranks, which are ints (mpirun's -n, the
// plan's rank count): a total beyond this would wrap around.
constexpr std::int64_t kMaxTotalSlots = std::numeric_limits<int>::max();

std::string_view trim(std::string_view text) {
  const std::size_t first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const std::size_t last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

bool valid_host_name(std::string_view name) {
  if (name.empty()) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Returns 0 when `text` is not a positive integer.
int parse_slots(std::string_view text) {
  int slots = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), slots);
  if (error != std::errc() || end != text.data() + text.size() || slots <= 0) return 0;
  return slots;
}

// Parses "name" or "name:N"; returns an error text or "".
std::string parse_entry(std::string_view entry, Host* host) {
  const std::size_t colon = entry.find(':');
  const std::string_view name = entry.substr(0, colon);
  if (!valid_host_name(name)) return fmt::format("'{}' is not a host name", name);
  host->name = std::string(name);
  host->slots = 1;
  if (colon != std::string_view::npos) {
    host->slots = parse_slots(entry.substr(colon + 1));
    if (host->slots == 0) {
      return fmt::format("'{}' has no positive slot count after ':'", entry);
    }
  }
  return "";
}

}  // namespace

std::vector<Host> parse_host_list(std::string_view text) {
  std::vector<Host> hosts;
  std::int64_t slots = 0;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::string_view entry = trim(text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    Host host;
    if (const std::string problem = parse_entry(entry, &host); !problem.empty()) {
      throw UsageError(
          fmt::format("bad host list '{}': {}; expected host:slots,host:slots "
                      "(e.g. node1:4,node2:4)",
                      text, entry.empty() ? "an entry is empty" : problem));
    }
    slots += host.slots;
    if (slots > kMaxTotalSlots) {
      throw UsageError(
          fmt::format("bad host list '{}': the slots add up to more than {}; check the slot counts",
                      text, kMaxTotalSlots));
    }
    hosts.push_back(host);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return hosts;
}

std::vector<Host> parse_hostfile(const std::filesystem::path& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw UsageError(
        fmt::format("hostfile {} is a directory; give a file with one host per line "
                    "('node1 slots=4' or 'node1:4')",
                    path.string()));
  }
  if (std::filesystem::is_regular_file(path, error) &&
      std::filesystem::file_size(path, error) > kMaxFileSize) {
    throw UsageError(
        fmt::format("hostfile {} is larger than {} bytes; is it a hostfile (one host "
                    "per line)?",
                    path.string(), kMaxFileSize));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UsageError(
        fmt::format("cannot read hostfile {}; check the path and permissions", path.string()));
  }
  std::string text;
  char chunk[65536];
  while (file.read(chunk, sizeof(chunk)) || file.gcount() > 0) {
    text.append(chunk, static_cast<std::size_t>(file.gcount()));
    if (text.size() > kMaxFileSize) {
      throw UsageError(
          fmt::format("hostfile {} is larger than {} bytes; is it a hostfile (one "
                      "host per line)?",
                      path.string(), kMaxFileSize));
    }
  }
  return parse_hostfile_text(text, path.string());
}

std::vector<Host> parse_hostfile_text(std::string_view contents, std::string_view name) {
  std::vector<Host> hosts;
  std::int64_t slots = 0;
  int number = 0;
  while (!contents.empty()) {
    ++number;
    const std::size_t newline = contents.find('\n');
    const std::string_view line = contents.substr(0, newline);
    contents =
        newline == std::string_view::npos ? std::string_view() : contents.substr(newline + 1);
    if (line.size() > kMaxLineLength) {
      throw UsageError(
          fmt::format("{}:{}: a line of {} bytes is not a host entry; is this a "
                      "hostfile?",
                      name, number, line.size()));
    }
    std::string_view text = trim(line.substr(0, line.find('#')));
    if (text.empty()) continue;
    const std::size_t space = text.find_first_of(" \t");
    const std::string_view first = text.substr(0, space);
    Host host;
    std::string problem = parse_entry(first, &host);
    if (problem.empty() && space != std::string_view::npos) {
      const std::string_view rest = trim(text.substr(space));
      if (rest.starts_with("slots=")) {
        host.slots = parse_slots(rest.substr(6));
        if (host.slots == 0) problem = fmt::format("'{}' is not a positive slot count", rest);
      } else {
        problem = fmt::format("unexpected '{}'", rest);
      }
    }
    if (!problem.empty()) {
      throw UsageError(fmt::format("{}:{}: {}; expected 'host', 'host slots=N' or 'host:N'", name,
                                   number, problem));
    }
    slots += host.slots;
    if (slots > kMaxTotalSlots) {
      throw UsageError(fmt::format("{}:{}: the slots add up to more than {}; check the slot counts",
                                   name, number, kMaxTotalSlots));
    }
    hosts.push_back(host);
  }
  if (hosts.empty()) {
    throw UsageError(fmt::format("hostfile {} names no host", name));
  }
  return hosts;
}

int total_slots(const std::vector<Host>& hosts) {
  int total = 0;
  for (const Host& host : hosts) total += host.slots;
  return total;
}

std::string host_list_string(const std::vector<Host>& hosts) {
  std::string text;
  for (const Host& host : hosts) {
    if (!text.empty()) text += ',';
    text += fmt::format("{}:{}", host.name, host.slots);
  }
  return text;
}

}  // namespace lockstep::launcher
