#include "metrics.h"

#include <algorithm>
#include <cmath>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace lockstep::launcher {

namespace {

using Labels = std::vector<std::pair<std::string_view, std::string>>;

// Backslash, double quote and line feed are the three characters the format
// escapes in a label value; everything else stands as it is.
std::string escaped(std::string_view value) {
  std::string text;
  text.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      text += "\\\\";
    } else if (c == '"') {
      text += "\\\"";
    } else if (c == '\n') {
      text += "\\n";
    } else {
      text += c;
    }
  }
  return text;
}

std::string number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

// Writes families one after the other: a family's samples must follow its
// HELP and TYPE lines without another family between them.
class Exposition {
 public:
  Exposition& family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    return *this;
  }
  Exposition& sample(double value, const Labels& labels = {}) {
    text_ += name_;
    if (!labels.empty()) {
      text_ += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) text_ += ',';
        text_ += fmt::format("{}=\"{}\"", labels[i].first, escaped(labels[i].second));
      }
      text_ += '}';
    }
    text_ += ' ';
    text_ += number(value);
    text_ += '\n';
    return *this;
  }
  std::string take() { return std::move(text_); }

 private:
  std::string name_;
  std::string text_;
};

Labels rank_labels(const RankView& rank) {
  return {{"rank", std::to_string(rank.rank)}, {"host", rank.host}};
}

}  // namespace

std::string prometheus_text(const MetricsFacts& facts) {
  Exposition out;
  const Goodput& goodput = facts.goodput;
  out.family("lockstep_attempt", "gauge", "The attempt in progress; 0 is the first start.")
      .sample(facts.attempt);
  out.family("lockstep_restarts_total", "counter", "Restarts of the job after failures so far.")
      .sample(facts.restarts);
  if (facts.step >= 0) {
    out.family("lockstep_step", "gauge",
               "The last step rank 0 reported, as the program numbers it.")
        .sample(static_cast<double>(facts.step));
  }
  if (facts.total_steps) {
    out.family("lockstep_total_steps", "gauge", "Steps of the whole run (--total-steps).")
        .sample(static_cast<double>(*facts.total_steps));
  }
  out.family("lockstep_steps_per_second", "gauge", "Training speed, a moving average.")
      .sample(facts.steps_per_second);
  if (!facts.training.empty()) {
    out.family("lockstep_training_metric", "gauge",
               "The program's own metrics (loss ...) as rank 0 last reported them.");
    for (const auto& [name, value] : facts.training) out.sample(value, {{"name", name}});
  }
  out.family("lockstep_run_seconds", "gauge", "Wall time since lockstep run started.")
      .sample(goodput.wall_seconds);
  out.family("lockstep_goodput_seconds", "gauge",
             "Where the wall time went so far: productive training, steps lost to failures, "
             "restarts, checkpoint stalls, other (start-up, shut-down).")
      .sample(goodput.productive_seconds, {{"category", "productive"}})
      .sample(goodput.lost_seconds, {{"category", "lost"}})
      .sample(goodput.restart_seconds, {{"category", "restart"}})
      .sample(goodput.checkpoint_seconds, {{"category", "checkpoint"}})
      .sample(goodput.other_seconds, {{"category", "other"}});
  out.family("lockstep_goodput_ratio", "gauge", "Productive time over wall time so far.")
      .sample(goodput.wall_seconds > 0 ? goodput.productive_seconds / goodput.wall_seconds : 0);
  out.family("lockstep_time_to_recovery_seconds", "gauge",
             "Mean time from a failure to the first step after the restart; 0 before any.")
      .sample(goodput.mean_time_to_recovery);
  out.family("lockstep_checkpoints_total", "counter", "Checkpoints the ranks reported.")
      .sample(static_cast<double>(goodput.checkpoints));
  if (facts.checkpoint_step) {
    out.family("lockstep_checkpoint_last_step", "gauge", "The step of the newest checkpoint.")
        .sample(static_cast<double>(*facts.checkpoint_step));
    out.family("lockstep_checkpoint_age_seconds", "gauge",
               "Seconds since the newest checkpoint was reported.")
        .sample(facts.checkpoint_age);
  }
  out.family("lockstep_ranks_reporting", "gauge",
             "Ranks of the attempt in progress that have reported to the launcher.")
      .sample(static_cast<double>(facts.ranks.size()));
  if (!facts.ranks.empty()) {
    out.family("lockstep_rank_heartbeat_age_seconds", "gauge",
               "Seconds since the launcher last heard from each rank.");
    for (const RankView& rank : facts.ranks) out.sample(rank.heartbeat_age, rank_labels(rank));
    out.family("lockstep_rank_step", "gauge", "The last step each rank reported; -1: none yet.");
    for (const RankView& rank : facts.ranks) {
      out.sample(static_cast<double>(rank.last_step), rank_labels(rank));
    }
    out.family("lockstep_rank_step_seconds", "gauge",
               "The last step time each rank reported; 0: none yet.");
    for (const RankView& rank : facts.ranks) out.sample(rank.step_seconds, rank_labels(rank));
    out.family("lockstep_rank_exited", "gauge", "1 when the rank said it exits.");
    for (const RankView& rank : facts.ranks) out.sample(rank.exited ? 1 : 0, rank_labels(rank));
    const bool scored = std::any_of(facts.ranks.begin(), facts.ranks.end(),
                                    [](const RankView& rank) { return rank.compute_seconds; });
    if (scored) {
      out.family("lockstep_rank_compute_seconds", "gauge",
                 "Each rank's mean compute time per step (the step less its waits for other "
                 "ranks) over the last straggler report interval.");
      for (const RankView& rank : facts.ranks) {
        if (rank.compute_seconds) out.sample(*rank.compute_seconds, rank_labels(rank));
      }
      out.family(
          "lockstep_rank_relative_score", "gauge",
          "The other ranks' median compute time over each rank's (1: typical or faster; 0.5: "
          "twice as slow), at the last straggler report.");
      for (const RankView& rank : facts.ranks) {
        if (rank.relative_score) out.sample(*rank.relative_score, rank_labels(rank));
      }
    }
    out.family("lockstep_stragglers", "gauge", "Ranks named stragglers now.")
        .sample(static_cast<double>(
            std::count_if(facts.ranks.begin(), facts.ranks.end(),
                          [](const RankView& rank) { return rank.straggler; })));
  }
  out.family("lockstep_heartbeats_refused_total", "counter",
             "Heartbeat connections refused (no or a wrong token, too slow, over the limits).")
      .sample(static_cast<double>(facts.heartbeats_refused));
  out.family("lockstep_heartbeats_malformed_total", "counter",
             "Heartbeat lines from ranks that were not valid messages, dropped.")
      .sample(static_cast<double>(facts.heartbeats_malformed));
  return out.take();
}

void MetricsFeed::publish(Clock::time_point now, const AttemptRecord& current,
                          std::vector<RankView> ranks) {
  if (server_ == nullptr) return;
  next_ = now + std::chrono::seconds(1);
  std::vector<AttemptRecord> attempts = finished_;
  attempts.push_back(current);
  attempts.back().end = now;
  MetricsFacts facts;
  facts.attempt = current.index;
  facts.restarts = status_.restarts();
  facts.step = status_.step();
  if (status_.total_steps() > 0) facts.total_steps = status_.total_steps();
  facts.steps_per_second = status_.steps_per_second();
  facts.training = status_.metrics();
  facts.goodput = compute_goodput(attempts, checkpoints_, run_start_, now);
  if (!checkpoints_.empty()) {
    facts.checkpoint_step = checkpoints_.back().step;
    facts.checkpoint_age = std::chrono::duration<double>(now - checkpoints_.back().at).count();
  }
  facts.ranks = std::move(ranks);
  facts.heartbeats_refused = monitor_.refused();
  facts.heartbeats_malformed = monitor_.malformed();
  server_->publish(prometheus_text(facts));
}

}  // namespace lockstep::launcher
