// The node relay between real ranks' clients (HeartbeatClient) and the
// real launcher side (Monitor): one connection per node, every rank still
// seen on its own, strangers and a lost relay or launcher handled as
// without it.
#include "lockstep/node_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "lockstep/heartbeat.h"
#include "monitor.h"

namespace lockstep::launcher {
namespace {

using namespace std::chrono_literals;

// Events until `done` says enough, or five seconds.
std::vector<RankEvent> collect(Monitor& monitor, const auto& done) {
  std::vector<RankEvent> events;
  for (int i = 0; i < 500 && !done(events); ++i) {
    for (RankEvent& event : monitor.drain()) events.push_back(std::move(event));
    std::this_thread::sleep_for(10ms);
  }
  return events;
}

std::size_t count_of(const std::vector<RankEvent>& events, RankEvent::Kind kind) {
  return static_cast<std::size_t>(std::count_if(
      events.begin(), events.end(), [kind](const RankEvent& event) { return event.kind == kind; }));
}

void wait_until(const auto& condition) {
  for (int i = 0; i < 500 && !condition(); ++i) std::this_thread::sleep_for(10ms);
}

std::unique_ptr<HeartbeatClient> rank_through(const Monitor& monitor, const NodeRelay& relay,
                                              int rank, std::atomic<int>* lost = nullptr,
                                              const std::string& token = "t") {
  return std::make_unique<HeartbeatClient>(
      "127.0.0.1:" + std::to_string(monitor.port()), token, rank, 8, "node3", 0,
      [lost](const std::string&) {
        if (lost != nullptr) lost->fetch_add(1);
      },
      std::chrono::hours(1), 5s, /*required=*/false, relay.address());
}

TEST(NodeRelay, CarriesTheRanksOfANodeOverOneConnection) {
  Monitor monitor("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor.port()), "t", "node3",
                  NodeRelay::Options{.interval = 200ms});
  EXPECT_TRUE(relay.address().starts_with("unix:@lockstep-relay-")) << relay.address();
  std::vector<std::unique_ptr<HeartbeatClient>> ranks;
  for (int rank = 4; rank < 8; ++rank) ranks.push_back(rank_through(monitor, relay, rank));
  for (auto& rank : ranks) ASSERT_TRUE(rank->connected());
  // Each rank reports several steps between two batches: the launcher sees
  // the newest, with the compute time of all of them.
  for (int step = 0; step < 4; ++step) {
    // Step 3 comes after the rate limit's 200 ms, so that the clients send
    // it (with what they held back of steps 1 and 2).
    std::this_thread::sleep_for(step == 3 ? 250ms : 20ms);
    for (int i = 0; i < 4; ++i) {
      ranks[static_cast<std::size_t>(i)]->step(step, 0.1, {{"loss", 1.0 / (step + 1)}},
                                               0.01 * (i + 1) * (step + 1));
    }
  }
  const auto events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    std::map<int, std::int64_t> newest;
    for (const RankEvent& event : seen) {
      if (event.kind == RankEvent::Kind::kStep) newest[event.rank] = event.step;
    }
    return newest.size() == 4 &&
           std::all_of(newest.begin(), newest.end(), [](const auto& e) { return e.second == 3; });
  });
  EXPECT_EQ(monitor.open_connections(), 1u) << "one connection for the node's four ranks";
  std::map<int, const RankEvent*> hello;
  double compute_steps_of_rank_5 = 0;
  double compute_sum_of_rank_5 = 0;
  for (const RankEvent& event : events) {
    if (event.kind == RankEvent::Kind::kHello) hello[event.rank] = &event;
    if (event.kind == RankEvent::Kind::kStep && event.rank == 5) {
      compute_steps_of_rank_5 += static_cast<double>(event.compute_steps);
      compute_sum_of_rank_5 += event.compute * static_cast<double>(event.compute_steps);
      EXPECT_EQ(event.restart_count, 0);
    }
  }
  ASSERT_EQ(hello.size(), 4u);
  EXPECT_EQ(hello[6]->host, "node3");
  EXPECT_EQ(hello[6]->world_size, 8);
  EXPECT_EQ(hello[6]->pid, getpid());
  // Every step's compute time arrived, whatever the lines were merged into.
  EXPECT_EQ(compute_steps_of_rank_5, 4);
  EXPECT_NEAR(compute_sum_of_rank_5, 0.02 * (1 + 2 + 3 + 4), 1e-9);

  // A goodbye, then a rank that ends without one: a death, of that rank only.
  ranks[2]->exit(0, false);
  ranks[2].reset();
  ranks[3].reset();
  const auto ends = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kClosed) >= 2;
  });
  std::map<int, int> closed;
  for (const RankEvent& event : ends) {
    if (event.kind == RankEvent::Kind::kClosed) closed[event.rank] = event.exit_code;
  }
  EXPECT_EQ(count_of(ends, RankEvent::Kind::kExit), 1u);
  EXPECT_EQ(closed, (std::map<int, int>{{6, 0}, {7, -1}}));
  EXPECT_EQ(monitor.malformed(), 0);
  EXPECT_EQ(monitor.refused(), 0);
}

TEST(NodeRelay, ALostRelayIsTheLossOfEveryRankItCarried) {
  Monitor monitor("127.0.0.1", "t");
  auto relay = std::make_unique<NodeRelay>("127.0.0.1:" + std::to_string(monitor.port()), "t",
                                           "node3", NodeRelay::Options{.interval = 200ms});
  std::atomic<int> lost{0};
  auto first = rank_through(monitor, *relay, 0, &lost);
  auto second = rank_through(monitor, *relay, 1, &lost);
  first->exit(0, false);  // rank 0 said goodbye; rank 1 did not
  collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kExit) == 1;
  });
  std::this_thread::sleep_for(100ms);  // the welcomes pass the relay
  relay.reset();                       // the node's first rank dies, and its relay with it
  const auto events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kClosed) == 2;
  });
  std::map<int, int> closed;
  for (const RankEvent& event : events) {
    if (event.kind == RankEvent::Kind::kClosed) closed[event.rank] = event.exit_code;
  }
  EXPECT_EQ(closed, (std::map<int, int>{{0, 0}, {1, -1}}));
  // The ranks were welcomed through the relay: they count the launcher lost.
  wait_until([&] { return lost.load() == 2; });
  EXPECT_EQ(lost.load(), 2);
}

TEST(NodeRelay, ALostLauncherReachesEveryRank) {
  auto monitor = std::make_unique<Monitor>("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor->port()), "t", "node3");
  std::atomic<int> lost{0};
  auto first = rank_through(*monitor, relay, 0, &lost);
  auto second = rank_through(*monitor, relay, 1, &lost);
  collect(*monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kHello) == 2;
  });
  std::this_thread::sleep_for(100ms);  // the welcomes pass the relay
  EXPECT_EQ(lost.load(), 0);
  monitor.reset();
  wait_until([&] { return lost.load() == 2; });
  EXPECT_EQ(lost.load(), 2);
}

TEST(NodeRelay, StrangersAndStaleTokensGetNowhere) {
  Monitor monitor("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor.port()), "t", "node3",
                  NodeRelay::Options{.interval = 100ms});
  std::atomic<int> lost{0};
  auto stale = rank_through(monitor, relay, 2, &lost, "stale");
  wait_until([&] { return !stale->connected(); });
  EXPECT_FALSE(stale->connected()) << "the relay closed a rank with another run's token";
  auto good = rank_through(monitor, relay, 3);
  const auto events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kHello) >= 1;
  });
  ASSERT_EQ(count_of(events, RankEvent::Kind::kHello), 1u);
  for (const RankEvent& event : events) EXPECT_EQ(event.rank, 3);
  EXPECT_EQ(lost.load(), 0) << "being refused is not losing the launcher";
  // A relay with another run's token is refused by the launcher; it stops
  // listening, and the node's ranks report directly.
  const std::int64_t refused = monitor.refused();
  NodeRelay wrong("127.0.0.1:" + std::to_string(monitor.port()), "nope", "node4");
  wait_until([&] { return monitor.refused() > refused; });
  EXPECT_EQ(monitor.refused(), refused + 1);
  std::this_thread::sleep_for(100ms);  // the relay sees its connection close
  auto direct = rank_through(monitor, wrong, 9);
  const auto direct_events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kHello) >= 1;
  });
  ASSERT_EQ(count_of(direct_events, RankEvent::Kind::kHello), 1u);
  for (const RankEvent& event : direct_events) {
    if (event.kind == RankEvent::Kind::kHello) {
      EXPECT_EQ(event.rank, 9);
    }
  }
  EXPECT_TRUE(direct->connected());
  // An unreachable launcher is an error naming it.
  try {
    NodeRelay nowhere("127.0.0.1:1", "t", "node5", NodeRelay::Options{.connect_timeout = 300ms});
    FAIL() << "a relay without a launcher";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("cannot reach the launcher at 127.0.0.1:1"),
              std::string::npos)
        << error.what();
  }
}

// A raw connection to the relay's abstract socket; -1 when refused.
int connect_relay(const NodeRelay& relay) {
  const std::string name = relay.address().substr(std::string("unix:@").size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// What a rank sent arrives in the order it sent it, even when it all comes
// in one read: a checkpoint after the step it followed, the goodbye last.
TEST(NodeRelay, KeepsARanksOrder) {
  Monitor monitor("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor.port()), "t", "node3",
                  NodeRelay::Options{.interval = 1ms});
  const int fd = connect_relay(relay);
  ASSERT_GE(fd, 0);
  const std::string lines =
      std::string(R"({"type":"hello","token":"t","rank":2,"world_size":4,"pid":5,"host":"n"})") +
      "\n" + R"({"type":"step","step":10,"step_time":0.1})" + "\n" +
      R"({"type":"checkpoint","step":10,"stall":0.5})" + "\n" +
      R"({"type":"step","step":11,"step_time":0.1})" + "\n" +
      R"({"type":"exit","code":0,"last_step":11})" + "\n";
  ASSERT_EQ(send(fd, lines.data(), lines.size(), MSG_NOSIGNAL), static_cast<ssize_t>(lines.size()));
  const auto events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kExit) == 1;
  });
  close(fd);
  std::vector<std::string> order;
  for (const RankEvent& event : events) {
    switch (event.kind) {
      case RankEvent::Kind::kHello:
        order.push_back("hello");
        break;
      case RankEvent::Kind::kStep:
        order.push_back(fmt::format("step {}", event.step));
        break;
      case RankEvent::Kind::kCheckpoint:
        order.push_back("checkpoint");
        break;
      case RankEvent::Kind::kExit:
        order.push_back("exit");
        break;
      default:
        break;
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"hello", "step 10", "checkpoint", "step 11", "exit"}));
}

// Strangers do not hold the relay's end; the node's ranks do.
TEST(NodeRelay, FinishWaitsForRanksNotStrangers) {
  Monitor monitor("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor.port()), "t", "node3");
  const int stranger = connect_relay(relay);
  ASSERT_GE(stranger, 0);
  auto rank = rank_through(monitor, relay, 1);
  collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kHello) == 1;
  });
  std::thread leaving([&] {
    std::this_thread::sleep_for(500ms);
    rank.reset();
  });
  const auto start = std::chrono::steady_clock::now();
  relay.finish(20s);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  leaving.join();
  close(stranger);
  EXPECT_GE(waited, 0.4) << "it waited for the rank";
  EXPECT_LT(waited, 5.0) << "it did not wait for the stranger";
}

// The socket's name is visible to every user of the host: another user's
// process is closed before it can even try a token.
TEST(NodeRelay, RefusesOtherUsers) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  Monitor monitor("127.0.0.1", "t");
  NodeRelay relay("127.0.0.1:" + std::to_string(monitor.port()), "t", "node3");
  // Everything the child needs is made before fork(): a child of a
  // process with threads may only make system calls (no allocation, whose
  // lock another thread may hold).
  const std::string name = relay.address().substr(std::string("unix:@").size());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  const std::string hello =
      R"({"type":"hello","token":"t","rank":6,"world_size":8,"pid":1,"host":"n"})"
      "\n";
  const pid_t child = fork();
  if (child == 0) {
    if (setuid(65534) != 0) _exit(3);
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0) _exit(4);
    // Closed at once: sending fails, or the answer is the end.
    if (send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) < 0) _exit(0);
    char byte = 0;
    // Closed by the relay: recv sees the end (0) or a reset.
    _exit(recv(fd, &byte, 1, 0) <= 0 ? 0 : 5);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(count_of(monitor.drain(), RankEvent::Kind::kHello), 0u);
}

// A relay is trusted with its token, not beyond: its batches are checked
// message by message, like a rank's lines.
TEST(Monitor, ChecksEveryMessageOfARelaysBatch) {
  Monitor monitor("127.0.0.1", "t");
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(monitor.port()));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string hello = R"({"type":"hello","token":"t","rank":1,"world_size":4,"pid":7})";
  const std::string text =
      std::string(R"({"type":"node","token":"t","host":"n1"})") + "\n" + "not json\n" +
      R"({"type":"batch"})" + "\n" + R"({"type":"batch","messages":7})" + "\n" +
      R"({"type":"batch","messages":[1,{"rank":-1},{"rank":1e30},{"rank":"1"},)" +
      R"({"type":"step","step":3,"rank":2},)" +                     // not introduced
      R"({"type":"hello","token":"x","rank":2,"world_size":4},)" +  // wrong token
      R"({"type":"hello","token":"t","rank":3,"world_size":4,"pid":1,"host":"n1"},)" + hello + "," +
      R"({"type":"step","step":5,"step_time":0.5,"rank":1},{"type":"step","step":-5,"rank":1},)" +
      R"({"type":"closed","rank":9}]})" + "\n";
  ASSERT_EQ(send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  const auto events = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kStep) == 1;
  });
  close(fd);
  const auto ends = collect(monitor, [](const std::vector<RankEvent>& seen) {
    return count_of(seen, RankEvent::Kind::kClosed) == 2;
  });
  ASSERT_EQ(count_of(events, RankEvent::Kind::kHello), 2u);
  ASSERT_EQ(count_of(events, RankEvent::Kind::kStep), 1u);
  const auto step = std::find_if(events.begin(), events.end(), [](const RankEvent& event) {
    return event.kind == RankEvent::Kind::kStep;
  });
  EXPECT_EQ(step->rank, 1);
  EXPECT_EQ(step->step, 5);
  // Ranks 1 and 3 go with the relay; the others were never let in.
  std::vector<int> closed;
  for (const RankEvent& event : ends) {
    if (event.kind == RankEvent::Kind::kClosed) closed.push_back(event.rank);
  }
  std::sort(closed.begin(), closed.end());
  EXPECT_EQ(closed, (std::vector<int>{1, 3}));
  // Three bad lines, four bad entries, a step of a stranger, a wrong token,
  // a negative step; the closing of a rank it never carried is ignored.
  EXPECT_EQ(monitor.malformed(), 10);
  EXPECT_EQ(monitor.refused(), 2);
}

}  // namespace
}  // namespace lockstep::launcher
