// NodeRelay: the heartbeat channel of one node. Instead of every rank
// holding a TCP connection to `lockstep run`, the ranks of a node connect to
// a relay in the process of the node's first rank, over an abstract Unix
// socket, and the relay forwards what they say over one authenticated TCP
// connection per node. It sends one "batch" line per interval with every
// rank's newest step (its compute time averaged over all the steps since
// the last batch) and newest alive report, and at once what must not wait:
// a hello, a checkpoint, a fault, a goodbye, a rank's connection closing
// without one. The launcher answers a rank's hello with a welcome for that
// rank, which the relay passes on; a dump request goes to every rank. When
// the launcher's connection ends the relay closes every rank's connection,
// so that each rank learns it lost its launcher as it would directly.
//
// The launcher thus holds one connection per node and reads one message
// per node per interval, whatever the number of ranks per node.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

namespace lockstep {

class NodeRelay {
 public:
  struct Options {
    std::chrono::milliseconds interval{1000};  // between batches
    std::chrono::milliseconds connect_timeout{10000};
    // Connections that have not shown the token within this long are closed.
    std::chrono::milliseconds hello_deadline{10000};
    std::size_t max_connections = 4096;
  };

  // Connects to the launcher at `launcher_address` ("host:port") as the
  // relay of `host`, authenticated by `token`, and listens for the node's
  // ranks. Throws IoError when the launcher cannot be reached or no socket
  // can be made.
  NodeRelay(const std::string& launcher_address, std::string token, std::string host,
            Options options);
  NodeRelay(const std::string& launcher_address, std::string token, std::string host)
      : NodeRelay(launcher_address, std::move(token), std::move(host), Options{}) {}
  // Stops at once, closing every connection.
  ~NodeRelay();
  NodeRelay(const NodeRelay&) = delete;
  NodeRelay& operator=(const NodeRelay&) = delete;

  // Where the node's ranks connect: "unix:@lockstep-relay-<random>".
  const std::string& address() const { return address_; }

  // Waits, at most `timeout`, until every rank that connected has closed
  // its connection and their last lines have gone to the launcher; then
  // stops. The node's first rank calls it before MPI_Finalize.
  void finish(std::chrono::milliseconds timeout);

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string address_;
  std::thread thread_;
};

}  // namespace lockstep
