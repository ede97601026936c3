// The heartbeat channel over real TCP: the rank side (HeartbeatClient) and
// the launcher side (Monitor), including strangers and garbage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "lockstep/heartbeat.h"
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

TEST(HeartbeatClient, UnreachableLauncherIsNotAnError) {
  int port = 0;
  {
    Monitor closed_soon("127.0.0.1", "t");
    port = closed_soon.port();
  }
  HeartbeatClient client("127.0.0.1:" + std::to_string(port), "t", 0, 1, "h", 0);
  EXPECT_FALSE(client.connected());
  client.step(1, 0.1, {});  // silently nothing
  EXPECT_THROW(HeartbeatClient("no-port", "t", 0, 1, "h", 0), UsageError);
}

}  // namespace
}  // namespace lockstep::launcher
