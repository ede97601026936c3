// MpiWork: one collective queued for the MPI backend's communication thread.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <string>

#include "lockstep/communicator.h"
#include "lockstep/mutex.h"
#include "lockstep/work.h"

namespace lockstep::detail {

class MpiWork final : public Work {
 public:
  // `body` performs the MPI calls; it captures the Tensors it uses by value,
  // which keeps their storage alive until the operation has finished.
  MpiWork(std::uint64_t sequence, std::string description, CollectiveTimeout timeout,
          std::function<void()> body);

  bool test() override;
  void wait(std::chrono::duration<double> timeout) override;
  std::uint64_t sequence_number() const override { return sequence_; }
  std::string describe() const override;

  // Communication thread only: runs the body once and wakes the waiters.
  // Never throws; an error is kept for test()/wait().
  void run();
  CollectiveTimeout timeout() const { return timeout_; }

 private:
  void rethrow_if_failed() const LOCKSTEP_REQUIRES(mutex_);

  const std::uint64_t sequence_;
  const std::string description_;
  const CollectiveTimeout timeout_;
  std::function<void()> body_;  // communication thread only
  mutable Mutex mutex_;
  CondVar done_changed_;
  bool done_ LOCKSTEP_GUARDED_BY(mutex_) = false;
  std::exception_ptr error_ LOCKSTEP_GUARDED_BY(mutex_);
};

}  // namespace lockstep::detail
