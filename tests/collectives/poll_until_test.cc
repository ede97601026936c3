// poll_until: the bounded, pausing wait of the NCCL backend (finalize at
// teardown, non-blocking enqueues), which a unit test can drive without a GPU.
#include "poll_until.h"

#include <chrono>
#include <stdexcept>

#include <gtest/gtest.h>

namespace lockstep::detail {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST(PollUntil, ReturnsAtOnceWhenAlreadyDone) {
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls > 0; }, {.timeout = milliseconds(0)}));
  EXPECT_EQ(calls, 1);
}

TEST(PollUntil, PollsUntilDone) {
  int calls = 0;
  EXPECT_TRUE(poll_until([&] { return ++calls == 5; }, {.timeout = std::chrono::seconds(30)}));
  EXPECT_EQ(calls, 5);
}

TEST(PollUntil, GivesUpAtTheDeadlineWithoutSpinning) {
  int calls = 0;
  const auto start = steady_clock::now();
  const bool done = poll_until(
      [&] {
        ++calls;
        return false;
      },
      {.timeout = milliseconds(200),
       .first_pause = std::chrono::microseconds(10),
       .longest_pause = std::chrono::microseconds(10'000)});
  const auto waited = steady_clock::now() - start;
  EXPECT_FALSE(done);
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(2'000));
  // Pauses of 10 us doubling to 10 ms: about 30 polls in 200 ms. A loop that
  // spins makes hundreds of thousands.
  EXPECT_LE(calls, 100);
  EXPECT_GE(calls, 5);
}

TEST(PollUntil, ALapsedDeadlineStillPollsOnce) {
  int calls = 0;
  EXPECT_FALSE(poll_until(
      [&] {
        ++calls;
        return false;
      },
      {.timeout = milliseconds(-1)}));
  EXPECT_EQ(calls, 1);
}

TEST(PollUntil, ErrorsOfThePollPropagate) {
  int calls = 0;
  const auto failing = [&]() -> bool {
    if (++calls == 3) throw std::runtime_error("communicator in error");
    return false;
  };
  EXPECT_THROW(poll_until(failing, {.timeout = std::chrono::seconds(30)}), std::runtime_error);
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace lockstep::detail
