// Reading the ranks' flight records after a hang: the oldest collective a
// rank waits in, who never joined it, who left no record; damaged files are
// left out, not believed.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "flight_report.h"

namespace lockstep::launcher {
namespace {

namespace fs = std::filesystem;

class FlightReport : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lockstep-flight-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes rank `rank`'s records of channel "mpi 1": (sequence, state).
  void write(int rank, const std::vector<std::pair<int, std::string>>& records,
             std::int64_t dumped_ns = 100) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [sequence, state] : records) {
      list.push_back(
          {{"seq", sequence},
           {"state", state},
           {"description", fmt::format("allreduce (4096 bytes, f32, sum) #{}", sequence)}});
    }
    const nlohmann::json dump = {{"rank", rank},
                                 {"dumped_ns", dumped_ns},
                                 {"channels", {{{"channel", "mpi 1"}, {"records", list}}}}};
    std::ofstream(dir_ / fmt::format("flight-rank-{}.json", rank)) << dump.dump();
  }

  fs::path dir_;
};

TEST_F(FlightReport, NamesTheRanksThatNeverJoined) {
  write(0, {{10, "done"}, {11, "started"}});
  write(1, {{9, "done"}, {10, "done"}});     // behind: its records stop before #11
  write(2, {{10, "done"}, {11, "queued"}});  // issued it, never started it
  write(3, {{10, "done"}, {11, "started"}});
  std::ofstream(dir_ / "flight-rank-4.json") << "{\"rank\": 4, \"channels\": ";  // torn
  const auto verdict = read_flight_records(dir_, 6);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->channel, "mpi 1");
  EXPECT_EQ(verdict->sequence, 11u);
  EXPECT_EQ(verdict->waiting, (std::vector<int>{0, 3}));
  EXPECT_EQ(verdict->not_joined, (std::vector<int>{1, 2}));
  EXPECT_EQ(verdict->no_record, (std::vector<int>{4, 5}));
  EXPECT_EQ(verdict->dumps, 4);
  EXPECT_EQ(verdict->text(),
            "collective #11 on mpi 1 (allreduce (4096 bytes, f32, sum) #11) never joined by "
            "ranks 1-2; ranks 0, 3 wait in it; no flight record from ranks 4-5 (stopped, dead, or "
            "its host keeps its own run directory)");
  EXPECT_EQ(verdict->to_json()["not_joined"], nlohmann::json({1, 2}));
}

// A rank stopped at the hang writes only once the job's stop resumes it,
// about what it did since: such late records are not believed.
TEST_F(FlightReport, LeavesOutRecordsWrittenAfterTheDeadline) {
  write(0, {{7, "done"}, {8, "started"}}, 100);
  write(1, {{7, "done"}, {8, "started"}}, 300);
  const auto verdict = read_flight_records(dir_, 2, 200);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->waiting, std::vector<int>{0});
  EXPECT_EQ(verdict->no_record, std::vector<int>{1});
  EXPECT_EQ(read_flight_records(dir_, 2)->waiting, (std::vector<int>{0, 1}));
}

// Sequence numbers of two communicators do not compare: the one whose
// unfinished collective began first is named.
TEST_F(FlightReport, NamesTheChannelThatStoppedFirst) {
  for (int rank = 0; rank < 2; ++rank) {
    const nlohmann::json dump = {
        {"rank", rank},
        {"dumped_ns", 1},
        {"channels",
         {{{"channel", "a 1"},
           {"records", {{{"seq", 2}, {"state", "started"}, {"started_ns", 900}}}}},
          {{"channel", "z 1"},
           {"records", {{{"seq", 90}, {"state", "started"}, {"started_ns", 500}}}}}}}};
    std::ofstream(dir_ / fmt::format("flight-rank-{}.json", rank)) << dump.dump();
  }
  const auto verdict = read_flight_records(dir_, 2);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->channel, "z 1");
  EXPECT_EQ(verdict->sequence, 90u);
}

// A file must be the record of the rank its name says, of this attempt's
// ranks: one that claims another rank is left out.
TEST_F(FlightReport, BelievesOnlyTheRankItsNameSays) {
  write(0, {{3, "started"}});
  write(1, {{3, "started"}});
  fs::rename(dir_ / "flight-rank-1.json", dir_ / "flight-rank-7.json");
  std::ofstream(dir_ / "flight-rank-1.json") << R"({"rank": 0, "channels": []})";
  const auto verdict = read_flight_records(dir_, 2);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_EQ(verdict->waiting, std::vector<int>{0});
  EXPECT_EQ(verdict->no_record, std::vector<int>{1});
  EXPECT_EQ(verdict->dumps, 1);
}

TEST_F(FlightReport, SaysNothingWhenEveryCollectiveFinished) {
  write(0, {{1, "done"}, {2, "done"}});
  write(1, {{1, "done"}, {2, "done"}});
  EXPECT_FALSE(read_flight_records(dir_, 2).has_value());
  EXPECT_FALSE(read_flight_records(dir_ / "missing", 2).has_value());
}

TEST_F(FlightReport, LeavesOutFilesThatAreNotRecords) {
  write(0, {{5, "started"}});
  for (const char* text :
       {R"({"rank": -1, "channels": []})", R"({"rank": "1", "channels": []})",
        R"({"rank": 1, "channels": [{"channel": 3, "records": []}]})",
        R"({"rank": 1, "channels": [{"channel": "c", "records": [{"seq": -2}]}]})",
        R"([1, 2, 3])"}) {
    std::ofstream(dir_ / "flight-rank-1.json") << text;
    const auto verdict = read_flight_records(dir_, 2);
    ASSERT_TRUE(verdict.has_value()) << text;
    EXPECT_EQ(verdict->no_record, std::vector<int>{1}) << text;
  }
  // Not opened: a FIFO in a record's place (reading it would wait forever).
  fs::remove(dir_ / "flight-rank-1.json");
  ASSERT_EQ(mkfifo((dir_ / "flight-rank-1.json").c_str(), 0600), 0);
  EXPECT_EQ(read_flight_records(dir_, 2)->no_record, std::vector<int>{1});
  // Not followed: a link in a record's place.
  fs::remove(dir_ / "flight-rank-1.json");
  std::ofstream(dir_ / "elsewhere.json") << R"({"rank": 1, "channels": []})";
  fs::create_symlink(dir_ / "elsewhere.json", dir_ / "flight-rank-1.json");
  EXPECT_EQ(read_flight_records(dir_, 2)->no_record, std::vector<int>{1});
}

}  // namespace
}  // namespace lockstep::launcher
