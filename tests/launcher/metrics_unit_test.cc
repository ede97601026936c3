// The /metrics text: its format holds whatever the ranks reported, and the
// server serves what was published, over real HTTP.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "metrics.h"
#include "metrics_server.h"

namespace lockstep::launcher {
namespace {

MetricsFacts hostile_facts() {
  MetricsFacts facts;
  facts.attempt = 2;
  facts.restarts = 2;
  facts.step = 41;
  facts.training = {{"loss", 0.25},
                    {"quote\" back\\slash\nnewline", 1},
                    {"inf", std::numeric_limits<double>::infinity()},
                    {"nan", std::numeric_limits<double>::quiet_NaN()}};
  facts.goodput.wall_seconds = 10;
  facts.goodput.productive_seconds = 8;
  facts.checkpoint_step = 39;
  facts.checkpoint_age = 0.5;
  facts.ranks = {{.rank = 0,
                  .host = "node1",
                  .heartbeat_age = 0.1,
                  .last_step = 41,
                  .compute_seconds = 0.01,
                  .relative_score = 1,
                  .straggler = false},
                 {.rank = 1,
                  .host = "evil\"} 1\nlockstep_fake 2",
                  .last_step = -1,
                  .compute_seconds = 0.04,
                  .relative_score = 0.25,
                  .straggler = true},
                 {.rank = 2,
                  .host = "node2",
                  .last_step = 40,
                  .compute_seconds = std::nullopt,
                  .relative_score = std::nullopt,
                  .straggler = false}};
  return facts;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

TEST(MetricsText, EscapesWhatRanksReported) {
  const std::string text = prometheus_text(hostile_facts());
  EXPECT_NE(text.find("lockstep_training_metric{name=\"quote\\\" back\\\\slash\\nnewline\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("host=\"evil\\\"} 1\\nlockstep_fake 2\"}"), std::string::npos) << text;
  for (const std::string& line : lines_of(text)) {
    EXPECT_FALSE(line.starts_with("lockstep_fake")) << "a host name made a line of its own";
  }
  EXPECT_NE(text.find("{name=\"inf\"} +Inf\n"), std::string::npos);
  EXPECT_NE(text.find("{name=\"nan\"} NaN\n"), std::string::npos);
  EXPECT_NE(text.find("lockstep_goodput_ratio 0.8\n"), std::string::npos);
  EXPECT_NE(text.find("lockstep_checkpoint_last_step 39\n"), std::string::npos);
}

// Every sample follows the HELP and TYPE of its own family, and no family
// is declared twice.
TEST(MetricsText, SamplesFollowTheirFamily) {
  std::string family;
  std::set<std::string> declared;
  for (const std::string& line : lines_of(prometheus_text(hostile_facts()))) {
    if (line.starts_with("# TYPE ")) {
      family = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(declared.insert(family).second) << family << " declared twice";
    } else if (!line.starts_with("#")) {
      const std::string name = line.substr(0, line.find_first_of("{ "));
      EXPECT_EQ(name, family) << line;
    }
  }
  EXPECT_GT(declared.size(), 15u);
}

TEST(MetricsText, ShowsTheStragglerScores) {
  const std::string text = prometheus_text(hostile_facts());
  EXPECT_NE(text.find("lockstep_rank_compute_seconds{rank=\"0\",host=\"node1\"} 0.01\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("lockstep_rank_relative_score{rank=\"1\","), std::string::npos) << text;
  EXPECT_NE(text.find("lockstep_stragglers 1\n"), std::string::npos) << text;
  // Rank 2 was not scored: no sample rather than a made-up one.
  EXPECT_EQ(text.find("lockstep_rank_compute_seconds{rank=\"2\""), std::string::npos) << text;
}

TEST(MetricsText, LeavesOutWhatIsNotKnownYet) {
  const std::string text = prometheus_text(MetricsFacts{});
  EXPECT_EQ(text.find("lockstep_step "), std::string::npos);
  EXPECT_EQ(text.find("lockstep_checkpoint_last_step"), std::string::npos);
  EXPECT_EQ(text.find("lockstep_rank_"), std::string::npos);
  EXPECT_NE(text.find("lockstep_ranks_reporting 0\n"), std::string::npos);
}

// promtool, Prometheus' own checker, accepts the text with hostile labels.
TEST(MetricsText, PromtoolAcceptsIt) {
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("lockstep-metrics-" + std::to_string(getpid()));
  std::ofstream(file) << prometheus_text(hostile_facts());
  const std::string command = "promtool check metrics < " + file.string() + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  std::filesystem::remove(file);
  EXPECT_EQ(status, 0) << "promtool (installed by make deps): " << output;
}

// A GET over a real socket; returns the whole response.
std::string http_get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(static_cast<std::uint16_t>(port));
  where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&where), sizeof(where)) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) {
    response.append(buffer, static_cast<std::size_t>(n));
  }
  close(fd);
  return response;
}

TEST(MetricsServer, ServesWhatWasPublished) {
  MetricsServer server("127.0.0.1", 0);
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.url(), "http://127.0.0.1:" + std::to_string(server.port()) + "/metrics");
  server.publish("lockstep_step 1\n");
  EXPECT_NE(http_get(server.port(), "/metrics").find("\r\n\r\nlockstep_step 1\n"),
            std::string::npos);
  server.publish("lockstep_step 2\n");
  const std::string second = http_get(server.port(), "/metrics");
  EXPECT_NE(second.find("200 OK"), std::string::npos) << second;
  EXPECT_NE(second.find("lockstep_step 2\n"), std::string::npos) << second;
  EXPECT_NE(http_get(server.port(), "/other").find("404"), std::string::npos);
}

TEST(MetricsServer, RefusesATakenPortOrABadAddress) {
  MetricsServer first("127.0.0.1", 0);
  try {
    MetricsServer second("127.0.0.1", first.port());
    FAIL() << "two servers on one port";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("Address already in use"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(MetricsServer("localhost", 0), UsageError);
  EXPECT_THROW(MetricsServer("192.0.2.1", 0), UsageError);  // not this host's
}

}  // namespace
}  // namespace lockstep::launcher
