// The launcher's view of progress: one live line at the bottom of a terminal,
// or a plain line every few seconds when stderr is a file or pipe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "monitor.h"

namespace lockstep::launcher {

class StatusLine {
 public:
  // `total_steps` 0 means unknown (no ETA); `interval_seconds` is the period
  // of plain lines when not on a terminal.
  StatusLine(std::int64_t total_steps, double interval_seconds);

  void set_restarts(int restarts) { restarts_ = restarts; }
  void on_step(std::int64_t step, const std::map<std::string, double>& metrics,
               Clock::time_point at);
  void on_checkpoint(std::int64_t step) { last_checkpoint_ = step; }
  // "straggler rank 2 (n1) 3.1x", shown until replaced; "" for none.
  void set_stragglers(std::string text) { stragglers_ = std::move(text); }

  // Redraws the live line or prints a plain one when it is due.
  void tick(Clock::time_point now);
  // Prints one line of output above the live line.
  void print_line(const std::string& text, bool to_stderr);
  // Clears the live line for good.
  void finish();

  // "step 119 (120 of 1000 done) | 2.31 steps/s | loss 0.312 | ckpt step 99 | restarts 1 |
  // ETA 6m20s": step numbers as the program reports them.
  std::string text() const;

  std::int64_t step() const { return step_; }  // -1: none yet
  double steps_per_second() const { return steps_per_second_; }
  const std::map<std::string, double>& metrics() const { return metrics_; }
  std::optional<std::int64_t> last_checkpoint() const { return last_checkpoint_; }
  int restarts() const { return restarts_; }
  std::int64_t total_steps() const { return total_steps_; }  // 0: unknown

 private:
  void clear_live();

  std::int64_t total_steps_;
  double interval_seconds_;
  bool live_;
  bool drawn_ = false;
  int restarts_ = 0;
  std::int64_t step_ = -1;
  std::optional<std::int64_t> last_checkpoint_;
  std::map<std::string, double> metrics_;
  std::string stragglers_;
  double steps_per_second_ = 0;
  std::optional<std::pair<std::int64_t, Clock::time_point>> previous_;
  Clock::time_point last_drawn_{};
  std::string last_printed_;  // the last plain line, not to repeat it
};

}  // namespace lockstep::launcher
