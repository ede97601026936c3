// Waiting on calls that can only be asked whether they are done yet (the
// non-blocking NCCL communicator's, through ncclCommGetAsyncError). A peer
// that died must turn such a wait into an error, not a hang; and a waiting
// thread must not take a core from the ranks' work, so it pauses between
// polls, longer the longer the wait lasts.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace lockstep::detail {

struct PollSchedule {
  // How long to wait before giving up.
  std::chrono::duration<double> timeout{0};
  // The pause after the first poll that finds the call unfinished; each
  // later pause is twice the one before, up to longest_pause. The first poll
  // is made at once.
  std::chrono::microseconds first_pause{5};
  std::chrono::microseconds longest_pause{5'000};
};

// Calls `done()` until it returns true, pausing between calls as `schedule`
// says. Returns true when done() did, false when schedule.timeout passed
// first. Exceptions of done() propagate. Holds no lock of its own: callers
// must not hold one that the call they wait for needs.
template <class Done>
bool poll_until(Done&& done, const PollSchedule& schedule) {
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(schedule.timeout);
  auto pause = schedule.first_pause;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, schedule.longest_pause);
  }
}

}  // namespace lockstep::detail
