// Where the ranks reach the launcher. On one host that is loopback; when
// any rank runs on another host, an address of this host that the other
// hosts can route to. gethostname() is not it: on many hosts (Debian's
// default /etc/hosts among them) the host's own name resolves to a loopback
// address, and ranks elsewhere would then connect to themselves.
#pragma once

#include <string>
#include <vector>

namespace lockstep::launcher {

struct MonitorEndpoint {
  std::string advertised = "127.0.0.1";  // the IPv4 address ranks connect to
  std::string bind = "127.0.0.1";        // the address the monitor listens on
  std::string reason;                    // why this address, for the log
};

struct EndpointRequest {
  // --monitor-address / LOCKSTEP_LAUNCHER_ADDRESS: a host name, an IPv4
  // address or an interface name of this host; empty to choose.
  std::string requested;
  // The hosts of the run other than this one (host list, or the nodes of
  // the Slurm allocation).
  std::vector<std::string> remote_hosts;
  bool bind_all = false;  // listen on every address, not only the advertised one
};

// Chooses the endpoint. Without a request and without remote hosts:
// loopback. Without a request: the local address the kernel would use as
// the source towards the first remote host that resolves to an address of
// another host (a UDP socket is connected to learn it; nothing is sent).
// Throws UsageError naming what to set when the request is not an address
// of this host, or when no remote host resolves or one resolves to this
// host's loopback while a remote host needs to reach it.
MonitorEndpoint choose_monitor_endpoint(const EndpointRequest& request);

// The IPv4 addresses of this host's interfaces that are up, with their
// interface names, loopback included.
struct LocalAddress {
  std::string interface;
  std::string address;
};
std::vector<LocalAddress> local_addresses();
// "lo 127.0.0.1, eth0 10.0.0.5" ("none" when empty), for error messages.
std::string describe(const std::vector<LocalAddress>& locals);

}  // namespace lockstep::launcher
