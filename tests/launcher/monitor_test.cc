// The heartbeat channel over real TCP: the rank side (HeartbeatClient) and
// the launcher side (Monitor), including strangers and garbage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>

#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "lockstep/heartbeat.h"
#include "lockstep/progress.h"
#include "monitor.h"

namespace lockstep::launcher {
namespace {

// Collects events until `count` arrived or two seconds passed.
std::vector<RankEvent> wait_for(Monitor& monitor, std::size_t count) {
  std::vector<RankEvent> events;
  for (int i = 0; i < 200 && events.size() < count; ++i) {
    for (RankEvent& event : monitor.drain()) events.push_back(std::move(event));
    if (events.size() < count) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return events;
}

// A raw connection that sends `text` and closes.
void send_raw(int port, const std::string& text) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  close(fd);
}

void wait_until(const auto& condition) {
  for (int i = 0; i < 200 && !condition(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST(Monitor, ReceivesHeartbeatsFromAnAuthenticatedRank) {
  Monitor monitor("127.0.0.1", "right-token");
  const std::string address = "127.0.0.1:" + std::to_string(monitor.port());
  {
    HeartbeatClient client(address, "right-token", 3, 4, "node7", 2);
    ASSERT_TRUE(client.connected());
    client.step(41, 0.25, {{"loss", 1.5}});
    client.checkpoint(41, 0.75);
    client.exit(0, true);
  }
  const std::vector<RankEvent> events = wait_for(monitor, 5);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].kind, RankEvent::Kind::kHello);
  EXPECT_EQ(events[0].rank, 3);
  EXPECT_EQ(events[0].host, "node7");
  EXPECT_EQ(events[0].pid, getpid());
  EXPECT_EQ(events[0].restart_count, 2);
  EXPECT_EQ(events[1].kind, RankEvent::Kind::kStep);
  EXPECT_EQ(events[1].step, 41);
  EXPECT_DOUBLE_EQ(events[1].metrics.at("loss"), 1.5);
  EXPECT_EQ(events[2].kind, RankEvent::Kind::kCheckpoint);
  EXPECT_DOUBLE_EQ(events[2].stall, 0.75);
  EXPECT_EQ(events[3].kind, RankEvent::Kind::kExit);
  EXPECT_EQ(events[3].step, 41);
  EXPECT_TRUE(events[3].stopped) << "the rank stopped early on request";
  EXPECT_EQ(events[4].kind, RankEvent::Kind::kClosed);
  EXPECT_EQ(events[4].exit_code, 0) << "a goodbye was said: not a crash";
  EXPECT_EQ(monitor.refused(), 0);
  EXPECT_EQ(monitor.malformed(), 0);
}

TEST(Monitor, AConnectionThatEndsWithoutGoodbyeIsADeath) {
  Monitor monitor("127.0.0.1", "t");
  { HeartbeatClient client("127.0.0.1:" + std::to_string(monitor.port()), "t", 1, 2, "h", 0); }
  const std::vector<RankEvent> events = wait_for(monitor, 2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, RankEvent::Kind::kClosed);
  EXPECT_EQ(events[1].rank, 1);
  EXPECT_EQ(events[1].exit_code, -1);
}

TEST(Monitor, RefusesWrongOrMissingTokens) {
  Monitor monitor("127.0.0.1", "right-token");
  HeartbeatClient wrong("127.0.0.1:" + std::to_string(monitor.port()), "wrong-token", 0, 1, "h", 0);
  send_raw(monitor.port(), R"({"type":"step","step":1})"
                           "\n");
  send_raw(monitor.port(), "GET / HTTP/1.1\r\n\r\n");
  wait_until([&] { return monitor.refused() >= 3; });
  EXPECT_EQ(monitor.refused(), 3);
  EXPECT_TRUE(wait_for(monitor, 1).empty()) << "strangers produce no events";
}

TEST(Monitor, DropsAndCountsMalformedMessagesButKeepsTheRank) {
  Monitor monitor("127.0.0.1", "t");
  send_raw(monitor.port(), R"({"type":"hello","token":"t","rank":0,"pid":1})"
                           "\n"
                           "this is not json\n"
                           R"({"type":"step"})"
                           "\n"
                           R"({"type":"step","step":"seven"})"
                           "\n"
                           R"({"type":"teleport","step":1})"
                           "\n"
                           R"({"type":"step","step":7,"metrics":{"loss":0.5}})"
                           "\n" +
                               std::string(70 * 1024, 'x'));
  wait_until([&] { return monitor.malformed() >= 5; });
  EXPECT_EQ(monitor.malformed(), 5);
  EXPECT_EQ(monitor.refused(), 0);
  const std::vector<RankEvent> events = wait_for(monitor, 3);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].kind, RankEvent::Kind::kStep);
  EXPECT_EQ(events[1].step, 7);
  EXPECT_EQ(events[2].kind, RankEvent::Kind::kClosed);
}

// The integers of a message are read exactly: a float, or a number that
// its field cannot hold, is malformed, not truncated into another valid
// value (2^32 + 3 is not rank 3) or converted out of range.
TEST(ChannelLine, ReadsIntegersExactly) {
  const auto verdict = [](const std::string& line, bool authenticated) {
    return parse_channel_line(line, authenticated, "t").verdict;
  };
  EXPECT_EQ(verdict(R"({"type":"hello","token":"t","rank":3,"world_size":4})", false),
            ChannelLine::kEvent);
  for (const char* hello : {R"({"type":"hello","token":"t","rank":4294967299,"world_size":4})",
                            R"({"type":"hello","token":"t","rank":3.5})",
                            R"({"type":"hello","token":"t","rank":3,"pid":1e300})",
                            R"({"type":"hello","token":"t","rank":3,"restart_count":0.5})"}) {
    EXPECT_EQ(verdict(hello, false), ChannelLine::kBadHello) << hello;
  }
  EXPECT_EQ(verdict(R"({"type":"step","step":41})", true), ChannelLine::kEvent);
  for (const char* line :
       {R"({"type":"step","step":41.5})", R"({"type":"step","step":1e300})",
        R"({"type":"checkpoint","step":40.0})", R"({"type":"fault","what":"x","ranks":[1.5]})",
        R"({"type":"fault","what":"x","ranks":2})", R"({"type":"exit","code":4294967296})",
        R"({"type":"exit","code":0,"last_step":1e19})"}) {
    EXPECT_EQ(verdict(line, true), ChannelLine::kMalformed) << line;
  }
}

// Metrics reach /metrics and the status line: of a step with very many of
// them, the first 32 by name are kept; empty or long names are dropped. The
// step itself counts: it is the heartbeat that keeps the job from hanging.
TEST(ChannelLine, BoundsTheMetricsOfAStep) {
  const auto step_with = [](int count, std::size_t name_length) {
    std::string line = R"({"type":"step","step":1,"metrics":{"":1,)";
    for (int i = 0; i < count; ++i) {
      line += fmt::format(R"({}"{}{:02}":1)", i ? "," : "", std::string(name_length, 'm'), i);
    }
    return parse_channel_line(line + "}}", true, "t");
  };
  const ChannelLine many = step_with(40, 10);
  ASSERT_EQ(many.verdict, ChannelLine::kEvent);
  ASSERT_EQ(many.event.metrics.size(), 32u);
  EXPECT_EQ(many.event.metrics.begin()->first, "mmmmmmmmmm00");
  EXPECT_EQ(many.event.metrics.rbegin()->first, "mmmmmmmmmm31");
  EXPECT_EQ(step_with(1, 62).event.metrics.size(), 1u);
  const ChannelLine long_name = step_with(1, 63);
  EXPECT_EQ(long_name.verdict, ChannelLine::kEvent);
  EXPECT_TRUE(long_name.event.metrics.empty());
}

// A step line carries the mean compute time of the steps since the last
// line; nonsense in it drops the compute time, never the step.
TEST(ChannelLine, ReadsComputeTimesAndDropsNonsense) {
  const auto compute_of = [](const std::string& fields) {
    const ChannelLine parsed =
        parse_channel_line(R"({"type":"step","step":7,)" + fields + "}", true, "t");
    EXPECT_EQ(parsed.verdict, ChannelLine::kEvent) << fields;
    EXPECT_EQ(parsed.event.step, 7) << fields;
    return std::make_pair(parsed.event.compute, parsed.event.compute_steps);
  };
  EXPECT_EQ(compute_of(R"("compute":0.25,"steps":3)"), std::make_pair(0.25, std::int64_t{3}));
  EXPECT_EQ(compute_of(R"("compute":0,"steps":1)"), std::make_pair(0.0, std::int64_t{1}));
  for (const char* nonsense :
       {R"("compute":-1,"steps":3)", R"("compute":1e300,"steps":3)", R"("compute":0.1,"steps":0)",
        R"("compute":0.1,"steps":-2)", R"("compute":0.1,"steps":2.5)",
        R"("compute":"0.1","steps":2)", R"("compute":null,"steps":2)", R"("compute":0.1)",
        R"("steps":2)", R"("compute":0.1,"steps":1e18)", R"("compute":[1],"steps":2)"}) {
    EXPECT_EQ(compute_of(nonsense).second, 0) << nonsense;
  }
}

TEST(Monitor, StepLinesCarryTheMeanComputeOfTheStepsTheyCover) {
  Monitor monitor("127.0.0.1", "t");
  {
    HeartbeatClient client("127.0.0.1:" + std::to_string(monitor.port()), "t", 1, 2, "node1", 0);
    ASSERT_TRUE(client.connected());
    client.step(0, 0.5, {}, 0.05);  // sent at once
    client.step(1, 0.5, {}, 0.1);   // held back by the rate limit ...
    client.step(2, 0.5, {}, 0.2);   // ... and replaced, covering both
    client.exit(0, false);          // sends the held line first
  }
  std::vector<RankEvent> steps;
  for (int i = 0; i < 300 && steps.size() < 2; ++i) {
    for (RankEvent& event : monitor.drain()) {
      if (event.kind == RankEvent::Kind::kStep) steps.push_back(std::move(event));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].step, 0);
  EXPECT_DOUBLE_EQ(steps[0].compute, 0.05);
  EXPECT_EQ(steps[0].compute_steps, 1);
  EXPECT_EQ(steps[1].step, 2);
  EXPECT_DOUBLE_EQ(steps[1].compute, 0.15);
  EXPECT_EQ(steps[1].compute_steps, 2);
}

// Every second a rank says it is alive, with where its collectives are:
// that is how the launcher tells a lost host from a slow one, and names a
// rank that never entered a collective the others wait in.
TEST(Monitor, RanksSayTheyAreAliveWithTheirCollectivesProgress) {
  Monitor monitor("127.0.0.1", "t");
  CollectiveProgress progress("alive-test");
  progress.started(4, "allreduce (8 bytes, f32, sum) #4");
  progress.finished(4);
  progress.started(5, "allreduce (8 bytes, f32, sum) #5");
  HeartbeatClient client("127.0.0.1:" + std::to_string(monitor.port()), "t", 2, 4, "node2", 0);
  std::optional<RankEvent> alive;
  for (int i = 0; i < 300 && !alive; ++i) {
    for (RankEvent& event : monitor.drain()) {
      if (event.kind == RankEvent::Kind::kAlive) alive = std::move(event);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(alive.has_value()) << "no alive line within 3 s";
  EXPECT_EQ(alive->rank, 2);
  const auto it =
      std::find_if(alive->collectives.begin(), alive->collectives.end(),
                   [](const CollectiveReport& report) { return report.channel == "alive-test 1"; });
  ASSERT_NE(it, alive->collectives.end());
  EXPECT_EQ(it->started, 5);
  EXPECT_EQ(it->finished, 4);
  EXPECT_EQ(it->waiting_in, "allreduce (8 bytes, f32, sum) #5");
  EXPECT_EQ(monitor.malformed(), 0);
}

TEST(ChannelLine, AliveLinesAreCheckedLikeTheRest) {
  const auto verdict = [](const std::string& line) {
    return parse_channel_line(line, true, "t").verdict;
  };
  EXPECT_EQ(verdict(R"({"type":"alive"})"), ChannelLine::kEvent);
  EXPECT_EQ(verdict(R"({"type":"alive","collectives":[{"channel":"mpi 1","started":3,)"
                    R"("finished":2,"waiting_in":"allreduce #3"}]})"),
            ChannelLine::kEvent);
  std::string nine = R"({"type":"alive","collectives":[)";
  for (int i = 0; i < 9; ++i) {
    nine += std::string(i ? "," : "") + R"({"channel":"c","started":1,"finished":1})";
  }
  nine += "]}";
  for (const std::string& line :
       {std::string(R"({"type":"alive","collectives":{}})"),
        std::string(
            R"({"type":"alive","collectives":[{"channel":"c","started":-1,"finished":0}]})"),
        std::string(
            R"({"type":"alive","collectives":[{"channel":"c","started":1.5,"finished":0}]})"),
        std::string(R"({"type":"alive","collectives":[{"started":1,"finished":0}]})"),
        std::string(R"({"type":"alive","collectives":[{"channel":")") + std::string(300, 'x') +
            R"(","started":1,"finished":0}]})",
        nine}) {
    EXPECT_EQ(verdict(line), ChannelLine::kMalformed) << line;
  }
}

// A port nothing listens on: a monitor's, closed again.
int closed_port() {
  Monitor closed_soon("127.0.0.1", "t");
  return closed_soon.port();
}

TEST(HeartbeatClient, AnUnreachableLauncherIsNotAnErrorWhenUnmonitoredRunsAreAllowed) {
  const auto start = std::chrono::steady_clock::now();
  HeartbeatClient client("127.0.0.1:" + std::to_string(closed_port()), "t", 0, 1, "h", 0, {},
                         std::chrono::seconds(5), std::chrono::milliseconds(600),
                         /*required=*/false);
  EXPECT_FALSE(client.connected());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  client.step(1, 0.1, {});  // silently nothing
  EXPECT_THROW(HeartbeatClient("no-port", "t", 0, 1, "h", 0), UsageError);
}

// By default a rank that cannot reach its launcher stops within the
// connect timeout, saying who it is, where it tried, why it failed and
// what to set.
TEST(HeartbeatClient, AnUnreachableLauncherStopsTheRankWithTheReason) {
  const auto start = std::chrono::steady_clock::now();
  const std::string address = "127.0.0.1:" + std::to_string(closed_port());
  try {
    HeartbeatClient client(address, "t", 2, 4, "node2", 0, {}, std::chrono::seconds(5),
                           std::chrono::milliseconds(600), /*required=*/true);
    ADD_FAILURE() << "connected to a closed port";
  } catch (const IoError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("rank 2 on node2 cannot reach the launcher at " + address +
                        " (Connection refused within 0.6 s)"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("--monitor-address"), std::string::npos) << what;
    EXPECT_NE(what.find("--allow-unmonitored"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  try {
    HeartbeatClient client("no-such..host:1", "t", 0, 1, "h", 0, {}, std::chrono::seconds(5),
                           std::chrono::milliseconds(600), /*required=*/true);
    ADD_FAILURE() << "resolved an invalid name";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("cannot resolve no-such..host"), std::string::npos)
        << error.what();
  }
}

// Strangers that connect and say nothing, held open by a child process (so
// that their descriptors do not count against this process's limit).
class Flood {
 public:
  Flood(int port, int connections) {
    int ready[2];
    EXPECT_EQ(pipe(ready), 0);
    pid_ = fork();
    if (pid_ == 0) {
      rlimit files{};
      getrlimit(RLIMIT_NOFILE, &files);
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<std::uint16_t>(port));
      inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
      for (int i = 0; i < connections; ++i) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
      }
      [[maybe_unused]] const ssize_t written = write(ready[1], "x", 1);
      pause();
      _exit(0);
    }
    close(ready[1]);
    char byte = 0;
    EXPECT_EQ(read(ready[0], &byte, 1), 1);
    close(ready[0]);
  }
  ~Flood() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_ = -1;
};

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// Lowers this process's soft descriptor limit for one test.
class SoftFileLimit {
 public:
  explicit SoftFileLimit(rlim_t limit) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = limit;
    EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  }
  ~SoftFileLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  rlimit saved_{};
};

TEST(Monitor, AFloodOfSilentStrangersIsCappedAndARankStillGetsIn) {
  MonitorLimits limits;
  limits.max_strangers = 16;
  Monitor monitor("127.0.0.1", "t", limits);
  Flood flood(monitor.port(), 500);
  wait_until([&] { return monitor.refused() >= 500 - 16; });
  EXPECT_GE(monitor.refused(), 500 - 16) << "the oldest strangers are dropped";
  EXPECT_LE(monitor.open_connections(), 16u) << "strangers never hold more than the cap";
  HeartbeatClient rank("127.0.0.1:" + std::to_string(monitor.port()), "t", 5, 8, "h", 0);
  ASSERT_TRUE(rank.connected());
  rank.step(3, 0.1, {});
  const std::vector<RankEvent> events = wait_for(monitor, 2);
  ASSERT_EQ(events.size(), 2u) << "the rank got in despite the flood";
  EXPECT_EQ(events[0].rank, 5);
  EXPECT_EQ(events[1].step, 3);
}

TEST(Monitor, LeavesDescriptorsForTheLauncherAndDoesNotSpinWhenOutOfThem) {
  // The monitor holds at most the soft limit minus its reserve.
  SoftFileLimit limit(256);
  MonitorLimits limits;
  limits.max_strangers = 100000;
  limits.reserved_fds = 64;
  Monitor monitor("127.0.0.1", "t", limits);
  {
    Flood flood(monitor.port(), 1500);
    wait_until([&] { return monitor.refused() >= 1500 - 192; });
    EXPECT_LE(monitor.open_connections(), 192u);
    std::vector<UniqueFd> pipes;
    for (int i = 0; i < 20; ++i) {
      int ends[2];
      ASSERT_EQ(pipe(ends), 0) << "the launcher's own pipes are not starved: " << i;
      pipes.emplace_back(ends[0]);
      pipes.emplace_back(ends[1]);
    }
  }
  wait_until([&] { return monitor.open_connections() == 0; });
  // Out of descriptors altogether: accept() fails; the monitor must rest,
  // not spin, and take the rank once descriptors are free again.
  {
    std::vector<UniqueFd> hog;
    while (true) {
      const int fd = dup(0);
      if (fd < 0) break;
      hog.emplace_back(fd);
    }
    hog.resize(hog.size() - 2);  // room for the flood's own pipe
    Flood more(monitor.port(), 50);
    const double cpu_before = process_cpu_seconds();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    EXPECT_LT(process_cpu_seconds() - cpu_before, 0.3) << "the monitor spins on accept()";
    EXPECT_GT(monitor.accept_failures(), 0);
  }
  HeartbeatClient rank("127.0.0.1:" + std::to_string(monitor.port()), "t", 0, 1, "h", 0);
  ASSERT_TRUE(rank.connected());
  EXPECT_EQ(wait_for(monitor, 1).size(), 1u) << "a rank gets in after the shortage";
}

TEST(HeartbeatClient, ALostLauncherAsksTheRankToStop) {
  std::atomic<int> lost{0};
  auto monitor = std::make_unique<Monitor>("127.0.0.1", "t");
  HeartbeatClient client(
      "127.0.0.1:" + std::to_string(monitor->port()), "t", 0, 1, "h", 0,
      [&](const std::string&) { lost.fetch_add(1); }, std::chrono::hours(1));
  ASSERT_TRUE(client.connected());
  EXPECT_EQ(wait_for(*monitor, 1).size(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(lost.load(), 0) << "a launcher that is there is not lost";
  monitor.reset();  // the launcher goes away
  wait_until([&] { return lost.load() > 0; });
  EXPECT_EQ(lost.load(), 1);
  EXPECT_FALSE(client.connected());
}

TEST(HeartbeatClient, ARefusedRankIsNotToldToStop) {
  std::atomic<int> lost{0};
  Monitor monitor("127.0.0.1", "right");
  HeartbeatClient client(
      "127.0.0.1:" + std::to_string(monitor.port()), "stale-token", 0, 1, "h", 0,
      [&](const std::string&) { lost.fetch_add(1); }, std::chrono::hours(1));
  wait_until([&] { return !client.connected(); });
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(lost.load(), 0) << "being refused is not losing the launcher";
}

TEST(HeartbeatClientDeathTest, ARankThatOutlivesItsLauncherExits) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto monitor = std::make_unique<Monitor>("127.0.0.1", "t");
        HeartbeatClient client("127.0.0.1:" + std::to_string(monitor->port()), "t", 0, 1, "h", 0,
                               {}, std::chrono::milliseconds(200));
        wait_for(*monitor, 1);
        monitor.reset();
        std::this_thread::sleep_for(std::chrono::seconds(5));  // training on, ignoring the stop
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "exiting now");
}

}  // namespace
}  // namespace lockstep::launcher
