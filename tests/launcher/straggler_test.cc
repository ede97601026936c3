// The straggler detector: scores, persistence, recovery, and what it must
// not call a straggler (noise, a whole job slowing down, too few steps).
#include "straggler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace lockstep::launcher {
namespace {

using std::chrono::seconds;

// Feeds every rank 10 steps of `compute[rank]` seconds, then ends the
// interval; returns what the report changed.
std::vector<StragglerDetector::Change> report(StragglerDetector& detector, Clock::time_point& now,
                                              const std::vector<double>& compute,
                                              std::int64_t step = 0) {
  for (std::size_t rank = 0; rank < compute.size(); ++rank) {
    // Two heartbeats, as a rank whose lines cover several steps sends them.
    detector.on_step(static_cast<int>(rank), "host" + std::to_string(rank / 2), compute[rank], 4);
    detector.on_step(static_cast<int>(rank), "host" + std::to_string(rank / 2), compute[rank], 6);
  }
  now += seconds(10);
  return detector.tick(now, step);
}

StragglerOptions options() {
  return {.interval_seconds = 10, .threshold = 0.7, .reports = 3, .min_steps = 3};
}

TEST(StragglerDetector, NamesARankSlowInEnoughReportsInARow) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  const std::vector<double> compute = {0.010, 0.011, 0.030, 0.010};
  EXPECT_TRUE(report(detector, now, compute, 10).empty());
  EXPECT_TRUE(report(detector, now, compute, 20).empty());
  EXPECT_TRUE(detector.current().empty());
  const auto changes = report(detector, now, compute, 30);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].named);
  const StragglerRecord& record = changes[0].record;
  EXPECT_EQ(record.rank, 2);
  EXPECT_EQ(record.host, "host1");
  EXPECT_EQ(record.reports, 3);
  EXPECT_EQ(record.named_at_step, 30);
  // The median of the others, 10, 10 and 11 ms, is 10 ms.
  EXPECT_NEAR(record.median_seconds, 0.010, 1e-9);
  EXPECT_NEAR(record.slowdown, 3.0, 1e-9);
  EXPECT_NEAR(record.relative, 0.010 / 0.030, 1e-9);
  EXPECT_NEAR(record.individual, 1.0, 1e-9);  // slow all along
  EXPECT_TRUE(record.current);
  ASSERT_EQ(detector.current().size(), 1u);
  const std::string text = describe(record);
  EXPECT_NE(text.find("rank 2 on host1 computes 3.0x slower than the median of the other ranks"),
            std::string::npos)
      << text;
  // The scores of the last report, for /metrics.
  EXPECT_NEAR(detector.scores().at(0).relative, 1.0, 1e-9);
  EXPECT_NEAR(detector.scores().at(2).compute_seconds, 0.030, 1e-9);
  // Still slow: named once, the record keeps counting.
  EXPECT_TRUE(report(detector, now, compute, 40).empty());
  EXPECT_EQ(detector.current().front().reports, 4);
}

TEST(StragglerDetector, ClearsARankThatRecovers) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  for (int i = 0; i < 3; ++i) report(detector, now, {0.01, 0.01, 0.05});
  ASSERT_EQ(detector.current().size(), 1u);
  const auto changes = report(detector, now, {0.01, 0.01, 0.0101});
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].named);
  EXPECT_EQ(changes[0].record.rank, 2);
  EXPECT_TRUE(detector.current().empty());
  // The record stays, as it stood when the rank was slowest.
  const auto records = detector.records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].current);
  EXPECT_NEAR(records[0].slowdown, 5.0, 1e-9);
}

TEST(StragglerDetector, AnInterruptedStreakStartsAgain) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  report(detector, now, {0.01, 0.01, 0.05});
  report(detector, now, {0.01, 0.01, 0.05});
  report(detector, now, {0.01, 0.01, 0.01});
  report(detector, now, {0.01, 0.01, 0.05});
  report(detector, now, {0.01, 0.01, 0.05});
  EXPECT_TRUE(detector.current().empty());
  EXPECT_EQ(report(detector, now, {0.01, 0.01, 0.05}).size(), 1u);
}

TEST(StragglerDetector, TheIndividualScoreSaysARankSlowedDown) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  report(detector, now, {0.01, 0.01, 0.01, 0.01});
  for (int i = 0; i < 3; ++i) report(detector, now, {0.01, 0.01, 0.04, 0.01});
  ASSERT_EQ(detector.current().size(), 1u);
  EXPECT_NEAR(detector.current().front().individual, 0.25, 1e-9);
}

TEST(StragglerDetector, NoStragglerWhenEveryRankSlowsDownOrJittersALittle) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  for (int i = 0; i < 5; ++i) {
    // The whole job twice as slow in every other report: a data loader, not
    // a rank.
    const double scale = i % 2 == 0 ? 1 : 2;
    EXPECT_TRUE(report(detector, now, {0.01 * scale, 0.011 * scale, 0.0105 * scale}).empty());
  }
  // Relatively slow, but by microseconds: jitter of a tiny step.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(report(detector, now, {0.0001, 0.0001, 0.0003}).empty());
  }
  EXPECT_TRUE(detector.records().empty());
}

TEST(StragglerDetector, NeedsPeersStepsAndAFullInterval) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  // One rank: nobody to compare with.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(report(detector, now, {0.5}).empty());
  // Too few steps in an interval: not scored.
  for (int i = 0; i < 5; ++i) {
    detector.on_step(0, "a", 0.01, 1);
    detector.on_step(1, "a", 0.09, 1);
    now += seconds(10);
    EXPECT_TRUE(detector.tick(now, 0).empty());
  }
  EXPECT_TRUE(detector.scores().empty());
  // Before the interval is over nothing is scored, however slow.
  detector.on_step(0, "a", 0.01, 100);
  detector.on_step(1, "a", 0.09, 100);
  EXPECT_TRUE(detector.tick(now + seconds(9), 0).empty());
  EXPECT_TRUE(detector.scores().empty());
  EXPECT_TRUE(detector.records().empty());
}

// With two ranks the other rank is the yardstick: a rank 4x slower is 4x
// slower, not 1.6x (as against the median of both).
TEST(StragglerDetector, TwoRanksCompareWithEachOther) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  for (int i = 0; i < 3; ++i) report(detector, now, {0.01, 0.04});
  const auto current = detector.current();
  ASSERT_EQ(current.size(), 1u);
  EXPECT_EQ(current[0].rank, 1);
  EXPECT_NEAR(current[0].slowdown, 4.0, 1e-9);
}

// A rank no longer scored (it ended, or the job barely stepped) is no
// longer named, and its streak starts again.
TEST(StragglerDetector, ARankNotScoredIsNoLongerNamed) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  for (int i = 0; i < 3; ++i) report(detector, now, {0.01, 0.01, 0.05});
  ASSERT_EQ(detector.current().size(), 1u);
  detector.on_step(0, "a", 0.01, 10);
  detector.on_step(1, "a", 0.01, 10);
  now += std::chrono::seconds(10);
  const auto changes = detector.tick(now, 0);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].named);
  EXPECT_TRUE(detector.current().empty());
  report(detector, now, {0.01, 0.01, 0.05});
  EXPECT_TRUE(detector.current().empty()) << "one report is not a streak";
}

TEST(StragglerDetector, SeveralStragglersSlowestFirst) {
  Clock::time_point now{};
  StragglerDetector detector(options(), now);
  for (int i = 0; i < 3; ++i) report(detector, now, {0.01, 0.03, 0.01, 0.05, 0.01});
  const auto current = detector.current();
  ASSERT_EQ(current.size(), 2u);
  EXPECT_EQ(current[0].rank, 3);
  EXPECT_EQ(current[1].rank, 1);
  const nlohmann::json json = to_json(current[0]);
  EXPECT_EQ(json.at("rank"), 3);
  EXPECT_EQ(json.at("host"), "host1");
  EXPECT_NEAR(json.at("slowdown").get<double>(), 5.0, 1e-9);
  EXPECT_EQ(json.at("current"), true);
}

}  // namespace
}  // namespace lockstep::launcher
