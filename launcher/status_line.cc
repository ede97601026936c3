#include "status_line.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace lockstep::launcher {

namespace {
std::string duration_text(double seconds) {
  const auto total = static_cast<std::int64_t>(seconds);
  if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60);
  if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}s", total);
}
}  // namespace

StatusLine::StatusLine(std::int64_t total_steps, double interval_seconds)
    : total_steps_(total_steps),
      interval_seconds_(interval_seconds),
      live_(isatty(STDERR_FILENO) == 1),
      last_drawn_(Clock::now()) {}

void StatusLine::on_step(std::int64_t step, const std::map<std::string, double>& metrics,
                         Clock::time_point at) {
  if (previous_ && step > previous_->first) {
    const double elapsed = std::chrono::duration<double>(at - previous_->second).count();
    if (elapsed > 0) {
      const double rate = static_cast<double>(step - previous_->first) / elapsed;
      // A moving average: steady enough to read, quick to follow a restart.
      steps_per_second_ = steps_per_second_ == 0 ? rate : 0.7 * steps_per_second_ + 0.3 * rate;
    }
  }
  previous_ = {step, at};
  step_ = step;
  for (const auto& [name, value] : metrics) metrics_[name] = value;
}

std::string StatusLine::text() const {
  // Step numbers are the program's own, as its heartbeats, checkpoints and
  // logs name them; the total is a count of steps numbered from 0.
  std::string line = step_ < 0 ? std::string("starting") : fmt::format("step {}", step_);
  if (total_steps_ > 0 && step_ >= 0) {
    line += fmt::format(" ({} of {} done)", step_ + 1, total_steps_);
  }
  if (steps_per_second_ > 0) line += fmt::format(" | {:.2f} steps/s", steps_per_second_);
  for (const auto& [name, value] : metrics_) line += fmt::format(" | {} {:.4g}", name, value);
  line += last_checkpoint_ ? fmt::format(" | ckpt step {}", *last_checkpoint_) : " | no ckpt";
  line += fmt::format(" | restarts {}", restarts_);
  if (!stragglers_.empty()) line += " | " + stragglers_;
  if (total_steps_ > 0 && steps_per_second_ > 0 && step_ >= 0) {
    line += " | ETA " +
            duration_text(static_cast<double>(total_steps_ - step_ - 1) / steps_per_second_);
  }
  return line;
}

void StatusLine::clear_live() {
  if (live_ && drawn_) {
    std::fputs("\r\033[K", stderr);
    drawn_ = false;
  }
}

void StatusLine::tick(Clock::time_point now) {
  const double since = std::chrono::duration<double>(now - last_drawn_).count();
  if (live_) {
    if (since < 0.5) return;
    std::fputs(("\r\033[K" + text()).c_str(), stderr);
    std::fflush(stderr);
    drawn_ = true;
  } else {
    if (since < interval_seconds_) return;
    last_printed_ = text();
    std::fprintf(stderr, "lockstep: %s\n", last_printed_.c_str());
  }
  last_drawn_ = now;
}

void StatusLine::print_line(const std::string& text, bool to_stderr) {
  clear_live();
  std::FILE* stream = to_stderr ? stderr : stdout;
  std::fputs(text.c_str(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
  if (live_) last_drawn_ = {};  // redraw at the next tick
}

void StatusLine::finish() {
  clear_live();
  if (step_ >= 0 && text() != last_printed_) std::fprintf(stderr, "lockstep: %s\n", text().c_str());
}

}  // namespace lockstep::launcher
