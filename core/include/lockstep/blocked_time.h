// Time this process spends blocked in lockstep's collectives: waiting for a
// collective's Work, or for the runtime's decision all-reduce. A rank's
// compute time per step is its step time less this (and less checkpoint
// stalls), which is what the launcher's straggler detection compares across
// ranks: in a synchronous job every rank's step takes as long as the
// slowest rank's, but only the slow rank computes for that long; the others
// wait for it inside a collective.
#pragma once

#include <chrono>
#include <cstdint>

namespace lockstep::blocked_time {

// Adds `duration` to the process's total. Thread-safe, lock-free.
void add(std::chrono::steady_clock::duration duration);

// Nanoseconds blocked since the process started, from all threads.
std::int64_t total_ns();

// Counts the time from construction to destruction as blocked.
class Scope {
 public:
  Scope() : start_(std::chrono::steady_clock::now()) {}
  ~Scope() { add(std::chrono::steady_clock::now() - start_); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace lockstep::blocked_time
