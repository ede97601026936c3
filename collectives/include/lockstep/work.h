// Work: the handle of one non-blocking collective.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace lockstep {

class Work {
 public:
  virtual ~Work() = default;

  // True once the operation has finished. Rethrows the operation's error
  // (BackendError, UsageError) if it failed. Never blocks; any thread may
  // call it.
  virtual bool test() = 0;

  // Blocks until the operation has finished or `timeout` has passed. Throws
  // TimeoutError naming the operation and its sequence number when the time
  // is up (the operation keeps running; the watchdog still guards it), and
  // rethrows the operation's error if it failed. A negative timeout waits
  // without limit. Any thread may call it, any number of times.
  virtual void wait(std::chrono::duration<double> timeout = std::chrono::duration<double>(-1)) = 0;

  // Position of this operation in its communicator's sequence, from 1, the
  // same on every rank for the same call.
  virtual std::uint64_t sequence_number() const = 0;

  // "allreduce #12 (4096 bytes, f32, sum)"
  virtual std::string describe() const = 0;
};

}  // namespace lockstep
