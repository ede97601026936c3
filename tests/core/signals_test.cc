#include <csignal>

#include <gtest/gtest.h>

#include "lockstep/signals.h"

namespace lockstep {
namespace {

class Signals : public ::testing::Test {
 protected:
  void SetUp() override {
    signals::reset();
    signals::install();
  }
  void TearDown() override {
    signals::uninstall();
    signals::reset();
  }
};

TEST_F(Signals, Usr1RequestsOneCheckpoint) {
  EXPECT_EQ(signals::peek(), kRequestNone);
  std::raise(SIGUSR1);
  EXPECT_EQ(signals::peek(), kRequestCheckpoint);
  EXPECT_EQ(signals::take(), kRequestCheckpoint);
  EXPECT_EQ(signals::take(), kRequestNone) << "a checkpoint request is served once";
}

TEST_F(Signals, TermRequestsCheckpointAndStopAndStopSticks) {
  std::raise(SIGTERM);
  EXPECT_EQ(signals::take(), kRequestCheckpoint | kRequestStop);
  EXPECT_EQ(signals::take(), kRequestStop) << "a stop is final";
}

TEST_F(Signals, Usr2FromTheLauncherRequestsCheckpointAndStop) {
  std::raise(SIGUSR2);
  EXPECT_EQ(signals::take(), kRequestCheckpoint | kRequestStop);
  EXPECT_EQ(signals::take(), kRequestStop);
}

TEST_F(Signals, FirstSigintAsksSecondSigintKills) {
  std::raise(SIGINT);
  EXPECT_EQ(signals::peek(), kRequestCheckpoint | kRequestStop);
  EXPECT_EXIT(
      {
        std::raise(SIGINT);
        std::raise(SIGINT);
      },
      ::testing::KilledBySignal(SIGINT), "");
}

TEST_F(Signals, UninstallRestoresPreviousHandler) {
  signals::uninstall();
  struct sigaction current = {};
  sigaction(SIGUSR1, nullptr, &current);
  EXPECT_EQ(current.sa_handler, SIG_DFL);
  signals::install();
  sigaction(SIGUSR1, nullptr, &current);
  EXPECT_NE(current.sa_handler, SIG_DFL);
}

TEST(Decide, IntervalFiresAfterEveryNthStep) {
  for (std::int64_t step = 0; step < 30; ++step) {
    const Decision decision = decide(kRequestNone, step, 10);
    EXPECT_EQ(decision.checkpoint, step == 9 || step == 19 || step == 29) << step;
    EXPECT_FALSE(decision.stop);
  }
}

TEST(Decide, NoIntervalMeansOnlyOnRequest) {
  EXPECT_FALSE(decide(kRequestNone, 9, 0).checkpoint);
  EXPECT_FALSE(decide(kRequestNone, 9, -3).checkpoint);
  EXPECT_TRUE(decide(kRequestCheckpoint, 3, 0).checkpoint);
  EXPECT_FALSE(decide(kRequestCheckpoint, 3, 0).stop);
}

TEST(Decide, StopAlwaysCheckpointsFirst) {
  const Decision decision = decide(kRequestStop, 4, 0);
  EXPECT_TRUE(decision.stop);
  EXPECT_TRUE(decision.checkpoint);
}

TEST(Decide, OutsideTheLoopIntervalNeverFires) {
  EXPECT_FALSE(decide(kRequestNone, -1, 1).checkpoint);
  EXPECT_TRUE(decide(kRequestStop, -1, 1).stop);
}

}  // namespace
}  // namespace lockstep
