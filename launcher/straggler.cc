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
      "rank {}{} computes {:.1f}x slower than the median rank ({:.3g} ms against {:.3g} ms a "
      "step; relative score {:.2f}, individual {:.2f}) for {} reports in a row",
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
  std::vector<std::pair<int, double>> means;
  for (auto& [rank, state] : ranks_) {
    if (state.steps >= options_.min_steps) {
      means.emplace_back(rank, state.compute_sum / static_cast<double>(state.steps));
    }
    state.compute_sum = 0;
    state.steps = 0;
  }
  scores_.clear();
  std::vector<Change> changes;
  if (means.size() < 2) return changes;  // nobody to compare with
  std::vector<double> values;
  values.reserve(means.size());
  for (const auto& entry : means) values.push_back(entry.second);
  const std::size_t middle = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(middle),
                   values.end());
  double median = values[middle];
  if (values.size() % 2 == 0) {
    median = (median + *std::max_element(values.begin(),
                                         values.begin() + static_cast<std::ptrdiff_t>(middle))) /
             2;
  }
  for (const auto& [rank, mean] : means) {
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
