#include "work.h"

#include <fmt/format.h>

#include "lockstep/blocked_time.h"

namespace lockstep::detail {

MpiWork::MpiWork(std::uint64_t sequence, std::string description, CollectiveTimeout timeout,
                 std::function<void()> body)
    : sequence_(sequence),
      description_(std::move(description)),
      timeout_(timeout),
      body_(std::move(body)) {}

bool MpiWork::test() {
  MutexLock lock(mutex_);
  if (done_) rethrow_if_failed();
  return done_;
}

void MpiWork::wait(std::chrono::duration<double> timeout) {
  const blocked_time::Scope blocked;
  MutexLock lock(mutex_);
  const auto done = [this]() LOCKSTEP_REQUIRES(mutex_) { return done_; };
  if (timeout.count() < 0) {
    done_changed_.wait(lock, done);
  } else if (!done_changed_.wait_for(lock, timeout, done)) {
    throw TimeoutError(
        fmt::format("{} did not finish within {:.3g} s of waiting", describe(), timeout.count()));
  }
  rethrow_if_failed();
}

std::string MpiWork::describe() const { return fmt::format("{} #{}", description_, sequence_); }

void MpiWork::run() {
  std::exception_ptr error;
  try {
    body_();
  } catch (...) {
    error = std::current_exception();
  }
  body_ = nullptr;  // releases the captured tensors now, not when the handle dies
  {
    MutexLock lock(mutex_);
    error_ = error;
    done_ = true;
  }
  done_changed_.notify_all();
}

void MpiWork::rethrow_if_failed() const {
  if (error_) std::rethrow_exception(error_);
}

}  // namespace lockstep::detail
