#include "straggler.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

namespace lockstep::launcher {

nlohmann::json to_json(const StragglerRecord& record) {
  return {{"rank", record.rank},
          {"host", record.host},
          {"slowdown", record.slowdown},
          {"relative_score", record.relative},
          {"individual_score", record.individual},
          {"compute_seconds", record.compute_seconds},
          {"median_compute_seconds", record.median_seconds},
          {"reports", record.reports},
          {"named_at_step", record.named_at_step},
          {"current", record.current}};
}

std::string describe(const StragglerRecord& record) {
  return fmt::format(
      "rank {}{} computes {:.1f}x slower than the median of the other ranks ({:.3g} ms against "
      "{:.3g} ms a step; relative score {:.2f}, individual {:.2f}) for {} reports in a row",
      record.rank, record.host.empty() ? "" : " on " + record.host, record.slowdown,
      record.compute_seconds * 1e3, record.median_seconds * 1e3, record.relative, record.individual,
      record.reports);
}

StragglerDetector::StragglerDetector(StragglerOptions options, Clock::time_point start)
    : options_(options), interval_start_(start) {}

void StragglerDetector::on_step(int rank, const std::string& host, double compute,
                                std::int64_t steps) {
  Rank& state = ranks_[rank];
  if (state.host.empty()) state.host = host;
  state.compute_sum += compute * static_cast<double>(steps);
  state.steps += steps;
}

std::vector<StragglerDetector::Change> StragglerDetector::tick(Clock::time_point now,
                                                               std::int64_t step) {
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.interval_seconds));
  if (now - interval_start_ < interval) return {};
  interval_start_ = now;
  // (mean, rank) of every rank with enough steps, slowest last.
  std::vector<std::pair<double, int>> means;
  std::vector<Change> changes;
  for (auto& [rank, state] : ranks_) {
    if (state.steps >= options_.min_steps) {
      means.emplace_back(state.compute_sum / static_cast<double>(state.steps), rank);
    } else {
      // Not scored (it ended, or the whole job barely stepped): a streak
      // is of reports in a row, and a rank not seen straggling is not named.
      state.streak = 0;
      const auto record = records_.find(rank);
      if (record != records_.end() && record->second.current) {
        record->second.current = false;
        changes.push_back({record->second, false});
      }
    }
    state.compute_sum = 0;
    state.steps = 0;
  }
  scores_.clear();
  if (means.size() < 2) return changes;  // nobody to compare with
  std::sort(means.begin(), means.end());
  // Each rank is compared with the median of the others, so that a slow
  // rank does not pull its own yardstick up (with 2 ranks it would halve
  // its slowdown). The k-th of the others is the k-th of all but one.
  const std::size_t others = means.size() - 1;
  const auto median_without = [&](std::size_t skipped) {
    const auto kth = [&](std::size_t k) { return means[k < skipped ? k : k + 1].first; };
    return others % 2 == 1 ? kth(others / 2) : (kth(others / 2 - 1) + kth(others / 2)) / 2;
  };
  for (std::size_t index = 0; index < means.size(); ++index) {
    const auto [mean, rank] = means[index];
    const double median = median_without(index);
    Rank& state = ranks_[rank];
    state.best = state.best > 0 ? std::min(state.best, mean) : mean;
    const double relative = mean > 0 ? std::min(1.0, median / mean) : 1.0;
    const double individual = mean > 0 && state.best > 0 ? std::min(1.0, state.best / mean) : 1.0;
    scores_[rank] = {mean, relative, individual};
    const bool slow = relative < options_.threshold && mean - median >= options_.min_excess_seconds;
    if (!slow) {
      if (state.streak >= options_.reports) {
        StragglerRecord& record = records_[rank];
        record.current = false;
        changes.push_back({record, false});
      }
      state.streak = 0;
      continue;
    }
    ++state.streak;
    if (state.streak < options_.reports) continue;
    StragglerRecord& record = records_[rank];
    const bool named = !record.current;
    const double slowdown = median > 0 ? mean / median : mean / options_.min_excess_seconds;
    if (record.rank < 0) {
      record.rank = rank;
      record.host = state.host;
      record.named_at_step = step;
    }
    record.current = true;
    record.reports = std::max(record.reports, state.streak);
    if (named || slowdown > record.slowdown) {
      record.slowdown = slowdown;
      record.relative = relative;
      record.individual = individual;
      record.compute_seconds = mean;
      record.median_seconds = median;
    }
    if (named) changes.push_back({record, true});
  }
  return changes;
}

std::vector<StragglerRecord> StragglerDetector::records() const {
  std::vector<StragglerRecord> all;
  for (const auto& entry : records_) all.push_back(entry.second);
  std::sort(all.begin(), all.end(),
            [](const StragglerRecord& a, const StragglerRecord& b) { return a.rank < b.rank; });
  return all;
}

std::vector<StragglerRecord> StragglerDetector::current() const {
  std::vector<StragglerRecord> now;
  for (const auto& entry : records_) {
    if (entry.second.current) now.push_back(entry.second);
  }
  std::sort(now.begin(), now.end(), [](const StragglerRecord& a, const StragglerRecord& b) {
    return a.slowdown > b.slowdown || (a.slowdown == b.slowdown && a.rank < b.rank);
  });
  return now;
}

}  // namespace lockstep::launcher
