// MpiWork: one collective queued for the MPI backend's communication thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>

#include "lockstep/communicator.h"
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
  void rethrow_if_failed() const;  // needs mutex_ held

  const std::uint64_t sequence_;
  const std::string description_;
  const CollectiveTimeout timeout_;
  std::function<void()> body_;  // communication thread only
  mutable std::mutex mutex_;
  std::condition_variable done_changed_;
  bool done_ = false;         // guarded by mutex_
  std::exception_ptr error_;  // guarded by mutex_
};

}  // namespace lockstep::detail
