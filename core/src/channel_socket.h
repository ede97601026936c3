// Connecting to the heartbeat channel's far end: the launcher at
// "host:port" over TCP (with keep-alive, so that a vanished host is
// noticed), or this node's heartbeat relay at "unix:@NAME", an abstract
// Unix socket. Shared by the ranks' HeartbeatClient and the NodeRelay.
#pragma once

#include <chrono>
#include <string>

namespace lockstep::detail {

// A connected, blocking socket, or why there is none.
struct ChannelSocket {
  int fd = -1;
  std::string problem;  // "connection refused within 10 s", ...
  int error = 0;        // errno of the last attempt, when it came to one
};

// Connects to `address`, trying again every 200 ms until `timeout` has
// passed (a launcher under a flood of connections may refuse for a
// moment). Throws UsageError when `address` is neither form.
ChannelSocket connect_channel(const std::string& address, std::chrono::milliseconds timeout);

}  // namespace lockstep::detail
