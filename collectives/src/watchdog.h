// Watchdog: guards the collectives of one communicator. Each collective is
// registered when it starts and removed when it finishes; one that is still
// there after its timeout produces a report (operation, sequence number,
// bytes, which ranks have not reached it) and aborts the whole job, so that
// the launcher can restart it instead of every rank waiting forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "lockstep/mutex.h"
#include "lockstep/progress.h"
#include "sequence_board.h"

namespace lockstep::detail {

// Exit status of a job that the watchdog aborted.
inline constexpr int kWatchdogExitCode = 3;

class Watchdog {
 public:
  using Seconds = std::chrono::duration<double>;

  // `board` must outlive the watchdog. `before_abort` runs on the watchdog
  // thread right before MPI_Abort (the NCCL backend aborts its communicator
  // there so that its kernels release the GPU).
  Watchdog(std::string backend, SequenceBoard& board, std::function<void()> before_abort = {});
  // Owns a thread that refers to this object: neither copyable nor movable.
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog();

  // Collective `sequence`, described by `description` (which names its
  // sequence number), has started on this
  // rank and must finish within `timeout`. Thread-safe.
  void started(std::uint64_t sequence, std::string description, Seconds timeout);
  // Collective `sequence` was issued and waits for its turn (for the
  // flight recorder; the timeout starts when it starts). Thread-safe.
  void queued(std::uint64_t sequence, const std::string& description);
  // Collective `sequence` has finished (successfully or not). Thread-safe.
  void finished(std::uint64_t sequence);

 private:
  struct Pending {
    std::string description;
    std::chrono::steady_clock::time_point deadline;
    Seconds timeout;
    std::int64_t begin_ns = 0;  // for the timeline; 0 when it records nothing
  };

  void watch();
  [[noreturn]] void fire(std::uint64_t sequence, const Pending& pending,
                         std::uint64_t last_finished);

  std::string backend_;
  SequenceBoard& board_;
  std::function<void()> before_abort_;
  // What the heartbeat channel tells the launcher about this communicator.
  CollectiveProgress progress_;
  const std::uint64_t trace_id_base_;
  Mutex mutex_;
  CondVar changed_;
  std::map<std::uint64_t, Pending> pending_ LOCKSTEP_GUARDED_BY(mutex_);
  std::uint64_t last_finished_ LOCKSTEP_GUARDED_BY(mutex_) = 0;
  // When the watchdog thread wakes next unless notified.
  std::chrono::steady_clock::time_point sleeping_until_ LOCKSTEP_GUARDED_BY(mutex_) =
      std::chrono::steady_clock::time_point::max();
  bool stopping_ LOCKSTEP_GUARDED_BY(mutex_) = false;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace lockstep::detail
