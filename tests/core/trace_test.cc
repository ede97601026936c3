// The timeline recorder: what is recorded reaches the file, from every
// thread, in order per thread; a full ring drops and counts; names are cut
// safely; a symbolic link in the file's place is refused.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lockstep/error.h"
#include "lockstep/trace.h"

namespace lockstep::trace {
namespace {

namespace fs = std::filesystem;

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lockstep-trace-" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  TraceFile file(const std::string& name) {
    return {.path = dir_ / "attempt-0" / name, .rank = 3, .world_size = 4, .host = "node\"1"};
  }

  static std::vector<nlohmann::json> lines(const fs::path& path) {
    std::vector<nlohmann::json> parsed;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) parsed.push_back(nlohmann::json::parse(line));
    return parsed;
  }

  fs::path dir_;
};

TEST_F(TraceTest, RecordsNothingWithoutAWriter) {
  EXPECT_FALSE(enabled());
  span("step", "step 1", 1, 2);  // dropped silently: no ring is even taken
  const Scope scope("step", "ignored");
  EXPECT_FALSE(enabled());
}

TEST_F(TraceTest, WritesEveryThreadsRecordsWithTheirKinds) {
  {
    TraceWriter writer(file("rank-3.jsonl"));
    EXPECT_TRUE(enabled());
    name_thread("main");
    { const Scope scope("checkpoint", "save step 9"); }
    async_span("collective", "allreduce #1", 42, 100, 250);
    instant("checkpoint", "restored step 9");
    std::thread([] {
      name_thread("helper");
      span("gradsync", "helper span", 10, 20);
    }).join();
  }
  EXPECT_FALSE(enabled());
  const auto parsed = lines(dir_ / "attempt-0" / "rank-3.jsonl");
  ASSERT_GE(parsed.size(), 6u);
  EXPECT_EQ(parsed[0]["rank"], 3);
  EXPECT_EQ(parsed[0]["host"], "node\"1");
  EXPECT_GT(parsed[0]["started"].get<std::int64_t>(), 1'700'000'000'000'000'000);
  std::map<std::string, nlohmann::json> by_name;
  for (std::size_t i = 1; i < parsed.size(); ++i) by_name[parsed[i]["name"]] = parsed[i];
  EXPECT_EQ(by_name["save step 9"]["ph"], "X");
  EXPECT_GE(by_name["save step 9"]["dur"].get<std::int64_t>(), 0);
  EXPECT_EQ(by_name["allreduce #1"]["ph"], "A");
  EXPECT_EQ(by_name["allreduce #1"]["id"], 42);
  EXPECT_EQ(by_name["allreduce #1"]["dur"], 150);
  EXPECT_EQ(by_name["restored step 9"]["ph"], "i");
  EXPECT_EQ(by_name["helper"]["ph"], "M");
  // The helper's records carry its thread, not main's.
  EXPECT_EQ(by_name["helper span"]["tid"], by_name["helper"]["tid"]);
  EXPECT_NE(by_name["helper span"]["tid"], by_name["main"]["tid"]);
}

TEST_F(TraceTest, AFullRingDropsAndCounts) {
  std::uint64_t dropped = 0;
  {
    TraceWriter writer(file("rank-3.jsonl"));
    // The writer empties the rings every quarter second; this thread fills
    // its ring faster than that.
    std::thread([] {
      for (int i = 0; i < 20000; ++i) span("step", "s", i, i + 1);
    }).join();
    writer.flush();
    dropped = writer.dropped();
  }
  EXPECT_GT(dropped, 0u);
  const auto parsed = lines(dir_ / "attempt-0" / "rank-3.jsonl");
  std::size_t spans = 0;
  bool counted = false;
  for (const auto& line : parsed) {
    if (line.value("name", "") == "s") ++spans;
    if (line.value("ph", "") == "dropped") counted = line["count"].get<std::uint64_t>() == dropped;
  }
  EXPECT_EQ(spans + dropped, 20000u);
  EXPECT_TRUE(counted) << "the file says how many were dropped";
}

TEST_F(TraceTest, NamesAreCutWithoutBreakingTheFile) {
  {
    TraceWriter writer(file("rank-3.jsonl"));
    // 46 ASCII bytes, then a 3-byte character across the 47-byte cut.
    instant("x", std::string(46, 'a') + "\xe2\x82\xac tail");
    instant("x", "quote \" backslash \\ newline \n");
  }
  const auto parsed = lines(dir_ / "attempt-0" / "rank-3.jsonl");  // throws on bad JSON
  bool cut = false;
  for (const auto& line : parsed) {
    if (line.value("ph", "") != "i") continue;
    const std::string name = line["name"];
    if (name.starts_with(std::string(46, 'a')))
      cut = name.size() <= 49 && name.find("tail") == std::string::npos;
  }
  EXPECT_TRUE(cut);
}

TEST_F(TraceTest, RefusesASymbolicLinkInTheFilesPlace) {
  fs::create_directories(dir_ / "attempt-0");
  const fs::path victim = dir_ / "victim";
  std::ofstream(victim) << "precious\n";
  fs::create_symlink(victim, dir_ / "attempt-0" / "rank-3.jsonl");
  EXPECT_THROW(TraceWriter writer(file("rank-3.jsonl")), IoError);
  EXPECT_FALSE(enabled());
  std::ifstream in(victim);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "precious");
}

TEST_F(TraceTest, StopsGrowingAtItsLimit) {
  TraceFile limited = file("rank-3.jsonl");
  limited.max_bytes = 4096;
  {
    TraceWriter writer(limited);
    for (int i = 0; i < 500; ++i) span("step", "step", i, i + 1);
  }
  EXPECT_LE(fs::file_size(limited.path), 4096u + 128u);
  const auto parsed = lines(limited.path);
  EXPECT_EQ(parsed.back()["ph"], "truncated");
}

}  // namespace
}  // namespace lockstep::trace
