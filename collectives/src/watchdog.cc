#include "watchdog.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mpi.h>

#include "lockstep/log.h"
#include "lockstep/trace.h"

namespace lockstep::detail {

namespace {

// Reading the other ranks' progress needs MPI to work; if it hangs as well,
// the job must still end.
constexpr auto kReportGrace = std::chrono::seconds(10);

// Each watchdog's collectives are told apart in the timeline by the
// watchdog's number in the high bits of their id.
std::atomic<std::uint64_t> g_next_watchdog{1};

std::string join(const std::vector<int>& ranks) {
  return ranks.empty() ? std::string("none") : fmt::format("{}", fmt::join(ranks, ", "));
}

}  // namespace

Watchdog::Watchdog(std::string backend, SequenceBoard& board, std::function<void()> before_abort)
    : backend_(std::move(backend)),
      board_(board),
      before_abort_(std::move(before_abort)),
      progress_(backend_),
      trace_id_base_(g_next_watchdog.fetch_add(1) << 40),
      thread_([this] { watch(); }) {}

Watchdog::~Watchdog() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void Watchdog::started(std::uint64_t sequence, std::string description, Seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
  progress_.started(sequence, description);
  const std::int64_t begin_ns = trace::enabled() ? trace::now_ns() : 0;
  bool earlier = false;
  {
    MutexLock lock(mutex_);
    pending_[sequence] = Pending{std::move(description), deadline, timeout, begin_ns};
    earlier = deadline < sleeping_until_;
  }
  // Waking the watchdog costs a thread switch per collective; it is needed
  // only when it sleeps past the new deadline.
  if (earlier) changed_.notify_all();
}

void Watchdog::queued(std::uint64_t sequence, const std::string& description) {
  progress_.queued(sequence, description);
}

void Watchdog::finished(std::uint64_t sequence) {
  progress_.finished(sequence);
  std::string description;
  std::int64_t begin_ns = 0;
  {
    MutexLock lock(mutex_);
    if (const auto it = pending_.find(sequence); it != pending_.end()) {
      begin_ns = it->second.begin_ns;
      if (begin_ns != 0) description = std::move(it->second.description);
      pending_.erase(it);
    }
    last_finished_ = std::max(last_finished_, sequence);
  }
  if (begin_ns != 0) {
    trace::async_span("collective", description, trace_id_base_ | sequence, begin_ns,
                      trace::now_ns());
  }
}

void Watchdog::watch() {
  MutexLock lock(mutex_);
  while (!stopping_) {
    if (pending_.empty()) {
      sleeping_until_ = std::chrono::steady_clock::time_point::max();
      changed_.wait(lock);
      continue;
    }
    auto earliest = std::min_element(pending_.begin(), pending_.end(), [](auto& a, auto& b) {
      return a.second.deadline < b.second.deadline;
    });
    if (std::chrono::steady_clock::now() >= earliest->second.deadline) {
      const std::uint64_t sequence = earliest->first;
      const Pending pending = earliest->second;
      const std::uint64_t last_finished = last_finished_;
      lock.unlock();
      fire(sequence, pending, last_finished);
    }
    // A finished collective does not wake us: at its old deadline the loop
    // finds the next one and sleeps again.
    sleeping_until_ = earliest->second.deadline;
    changed_.wait_until(lock, sleeping_until_);
  }
}

void Watchdog::fire(std::uint64_t sequence, const Pending& pending, std::uint64_t last_finished) {
  log::error("watchdog: {} on backend {} did not finish within {:.3g} s (last finished: #{})",
             pending.description, backend_, pending.timeout.count(), last_finished);
  dump_flight_records(fmt::format("the watchdog: {} on {} did not finish within {:.3g} s",
                                  pending.description, backend_, pending.timeout.count()));
  std::thread([] {
    std::this_thread::sleep_for(kReportGrace);
    MPI_Abort(MPI_COMM_WORLD, kWatchdogExitCode);
  }).detach();
  try {
    const std::vector<std::uint64_t> reached = board_.read_all();
    std::vector<int> behind;
    std::vector<int> inside;
    for (std::size_t rank = 0; rank < reached.size(); ++rank) {
      (reached[rank] < sequence ? behind : inside).push_back(static_cast<int>(rank));
    }
    std::vector<std::string> last_started;
    for (int rank : behind) {
      last_started.push_back(
          fmt::format("rank {} last started #{}", rank, reached[static_cast<std::size_t>(rank)]));
    }
    if (behind.empty()) {
      log::error("watchdog: every rank started #{}; the hang is inside the {} backend", sequence,
                 backend_);
    } else {
      log::error("watchdog: ranks that have not reached #{}: {} ({}); waiting in it: {}", sequence,
                 join(behind), fmt::join(last_started, ", "), join(inside));
    }
  } catch (const std::exception& error) {
    log::error(
        "watchdog: could not read the other ranks' progress: {}; under `lockstep run` the "
        "launcher names them from their heartbeats",
        error.what());
  }
  if (before_abort_) before_abort_();
  log::error("watchdog: aborting the job (exit code {}) so that it can be restarted",
             kWatchdogExitCode);
  MPI_Abort(MPI_COMM_WORLD, kWatchdogExitCode);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace lockstep::detail
