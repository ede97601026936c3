// Fuzzes parse_channel_line(), which reads each line a connection to the
// launcher's heartbeat port sends: anyone who can reach the port can send
// anything; and parse_channel_message() on each message of a node relay's
// batch line.
//
// Input: the first byte says whether the connection has shown the token
// (low bit set) or not; the rest is the line. The token is kToken, which
// the seed corpus's hellos carry. parse_channel_line() never throws, so any
// exception fails the run, as does a crash, a sanitizer report or an
// outcome its contract rules out.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "monitor.h"

namespace {

using lockstep::launcher::ChannelLine;
using lockstep::launcher::parse_channel_line;
using lockstep::launcher::parse_channel_message;
using lockstep::launcher::RankEvent;

constexpr std::string_view kToken = "fuzz-token";

[[noreturn]] void fail(const char* why) {
  std::fprintf(stderr, "parse_channel_line: %s\n", why);
  std::abort();
}

void check_contract(const ChannelLine& parsed, bool authenticated) {
  if (parsed.verdict != ChannelLine::kEvent) return;
  const RankEvent& event = parsed.event;
  if (!authenticated) {
    // Before the token, only a hello is an event, and it names a rank.
    if (event.kind != RankEvent::Kind::kHello) fail("an event other than a hello before the token");
    if (event.rank < 0 || event.world_size < 0 || event.restart_count < 0) {
      fail("a hello with a negative rank, world size or restart count");
    }
    return;
  }
  if (event.kind == RankEvent::Kind::kHello) fail("a second hello accepted as an event");
  const bool counts_steps =
      event.kind == RankEvent::Kind::kStep || event.kind == RankEvent::Kind::kCheckpoint;
  if (counts_steps && event.step < 0) fail("a step or checkpoint event with a negative step");
  for (const int rank : event.blamed) {
    if (rank < 0) fail("a fault that blames a negative rank");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool authenticated = (data[0] & 1) != 0;
  const std::string_view line(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_contract(parse_channel_line(line, authenticated, kToken), authenticated);
  // A node relay's batch: each of its messages is read as a rank's line.
  const nlohmann::json batch = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (batch.is_object() && batch.contains("messages") && batch["messages"].is_array()) {
    for (const nlohmann::json& message : batch["messages"]) {
      check_contract(parse_channel_message(message, authenticated, kToken), authenticated);
    }
  }
  return 0;
}
