#include "host_pool.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace lockstep::launcher {

bool same_host(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) return false;
  return a == b || a.substr(0, a.find('.')) == b.substr(0, b.find('.'));
}

HostPool::HostPool(std::vector<Host> hosts, PoolRules rules)
    : hosts_(std::move(hosts)), rules_(std::move(rules)) {
  const int slots = total_slots(hosts_);
  if (slots > 0 && rules_.ranks > slots) ranks_per_slot_ = (rules_.ranks + slots - 1) / slots;
}

const Host* HostPool::find(const std::string& name) const {
  for (const Host& host : hosts_) {
    if (host.name == name) return &host;
  }
  for (const Host& host : hosts_) {
    if (same_host(host.name, name)) return &host;
  }
  return nullptr;
}

bool HostPool::is_left_out(const std::string& name) const {
  return std::any_of(left_out_.begin(), left_out_.end(),
                     [&](const LeftOut& entry) { return entry.host == name; });
}

int HostPool::remaining_count() const { return static_cast<int>(hosts_.size() - left_out_.size()); }

std::vector<std::string> HostPool::remaining() const {
  std::vector<std::string> names;
  for (const Host& host : hosts_) {
    if (!is_left_out(host.name)) names.push_back(host.name);
  }
  return names;
}

PoolLayout HostPool::layout() const {
  PoolLayout layout;
  long capacity = 0;
  for (const Host& host : hosts_) {
    if (!is_left_out(host.name)) capacity += static_cast<long>(host.slots) * ranks_per_slot_;
  }
  layout.ranks = static_cast<int>(std::min<long>(rules_.ranks, capacity));
  long placed = 0;
  for (const Host& host : hosts_) {
    if (is_left_out(host.name)) continue;
    if (placed < layout.ranks) {
      layout.hosts.push_back(host);
      placed += static_cast<long>(host.slots) * ranks_per_slot_;
    } else {
      layout.spares.push_back(host);
    }
  }
  return layout;
}

std::string HostPool::describe(const PoolLayout& layout) const {
  std::vector<std::string> names;
  for (const Host& host : layout.hosts) names.push_back(host.name);
  return fmt::format("{} ranks on {} {}(s) ({})", layout.ranks, layout.hosts.size(), rules_.noun,
                     fmt::join(names, ","));
}

std::optional<std::string> HostPool::implicate(const std::string& name, bool lost,
                                               const std::string& why, int attempt) {
  const Host* host = find(name);
  if (host == nullptr || is_left_out(host->name)) return std::nullopt;
  const int count = ++failures_[host->name];
  if (!lost && count < rules_.exclude_after) return std::nullopt;
  if (!lost && remaining_count() - 1 < rules_.min_hosts) {
    return fmt::format(
        "lockstep: {} {} is implicated in {} failed attempts, but leaving it out would leave {} "
        "{}(s), fewer than --min-nodes {}; it stays",
        rules_.noun, host->name, count, remaining_count() - 1, rules_.noun, rules_.min_hosts);
  }
  const PoolLayout before = layout();
  left_out_.push_back(
      {host->name, lost ? why : fmt::format("implicated in {} failed attempts", count), attempt});
  const PoolLayout after = layout();
  // A lost host's evidence is in the root cause already; the summary keeps it.
  const std::string reason = lost ? fmt::format("{} {} is lost", rules_.noun, host->name)
                                  : fmt::format("{} {} is implicated in {} failed attempts",
                                                rules_.noun, host->name, count);
  if (!shortfall().empty()) {
    return fmt::format("lockstep: {}: it is left out, and {}", reason, shortfall());
  }
  const bool was_used = std::any_of(before.hosts.begin(), before.hosts.end(),
                                    [&](const Host& used) { return used.name == host->name; });
  if (!was_used) {
    return fmt::format("lockstep: {}: the spare is left out; the next attempts still run {}",
                       reason, describe(after));
  }
  if (after.ranks == before.ranks) {
    std::vector<std::string> added;
    for (const Host& used : after.hosts) {
      const bool had = std::any_of(before.hosts.begin(), before.hosts.end(),
                                   [&](const Host& old) { return old.name == used.name; });
      if (!had) added.push_back(used.name);
    }
    return fmt::format(
        "lockstep: {}: the next attempts leave it out and take the spare {} {} in its place: "
        "{}, the same world size",
        reason, rules_.noun, fmt::join(added, ","), describe(after));
  }
  return fmt::format(
      "lockstep: {}: the next attempts leave it out and run {}; no spare {} is left, so the "
      "program resumes from its checkpoint at that size",
      reason, describe(after), rules_.noun);
}

std::string HostPool::shortfall() const {
  const int count = remaining_count();
  if (count >= rules_.min_hosts && count > 0) return "";
  std::vector<std::string> gone;
  for (const LeftOut& entry : left_out_) gone.push_back(entry.host);
  return fmt::format(
      "{} {}(s) remain ({}), fewer than --min-nodes {} (left out: {}); bring {}s back, give "
      "spare ones, or lower --min-nodes",
      count, rules_.noun,
      count == 0 ? std::string("none") : fmt::format("{}", fmt::join(remaining(), ",")),
      rules_.min_hosts, fmt::join(gone, ","), rules_.noun);
}

}  // namespace lockstep::launcher
