#include "monitor_address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "lockstep/error.h"
#include "unique_fd.h"

namespace lockstep::launcher {
namespace {

bool is_loopback(const std::string& address) { return address.starts_with("127."); }

bool is_ipv4(const std::string& text) {
  in_addr parsed{};
  return inet_pton(AF_INET, text.c_str(), &parsed) == 1;
}

// The IPv4 addresses `name` resolves to, in resolver order; on failure the
// resolver's message in `error`.
std::vector<std::string> resolve(const std::string& name, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    error = gai_strerror(rc);
    return {};
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(found, freeaddrinfo);
  std::vector<std::string> addresses;
  for (const addrinfo* entry = found; entry != nullptr; entry = entry->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
    if (inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text)) != nullptr &&
        std::find(addresses.begin(), addresses.end(), text) == addresses.end()) {
      addresses.emplace_back(text);
    }
  }
  return addresses;
}

// The local address the kernel picks as the source towards `address`: a
// UDP socket is connected (which only consults the routing table; no
// packet leaves) and asked for its name. Empty, with the reason in
// `error`, when there is no route.
std::string source_towards(const std::string& address, std::string& error) {
  const UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    error = std::strerror(errno);
    return "";
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    error = std::strerror(errno);
    return "";
  }
  sockaddr_in from{};
  socklen_t length = sizeof(from);
  char text[INET_ADDRSTRLEN] = {};
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&from), &length) != 0 ||
      inet_ntop(AF_INET, &from.sin_addr, text, sizeof(text)) == nullptr) {
    error = std::strerror(errno);
    return "";
  }
  return text;
}

std::string interface_of(const std::vector<LocalAddress>& locals, const std::string& address) {
  for (const LocalAddress& local : locals) {
    if (local.address == address) return local.interface;
  }
  return "";
}

}  // namespace

std::string describe(const std::vector<LocalAddress>& locals) {
  std::string text;
  for (const LocalAddress& local : locals) {
    if (!text.empty()) text += ", ";
    text += local.interface + " " + local.address;
  }
  return text.empty() ? "none" : text;
}

namespace {

// --monitor-address: an interface name, an IPv4 address or a host name.
MonitorEndpoint requested_endpoint(const EndpointRequest& request) {
  const std::vector<LocalAddress> locals = local_addresses();
  const bool needs_reach = !request.remote_hosts.empty();
  const auto refuse = [&](const std::string& why) {
    return UsageError(fmt::format(
        "--monitor-address {}: {}; give a host name, IPv4 address or interface of this host "
        "that the other hosts reach (this host has: {}), or --monitor-bind-all to advertise "
        "an address this host does not hold (behind NAT)",
        request.requested, why, describe(locals)));
  };
  MonitorEndpoint endpoint;
  std::vector<std::string> candidates;
  std::string how;
  for (const LocalAddress& local : locals) {
    if (local.interface == request.requested) candidates.push_back(local.address);
  }
  if (!candidates.empty()) {
    how = "the address of interface " + request.requested;
  } else if (is_ipv4(request.requested)) {
    candidates.push_back(request.requested);
    how = "the address given";
  } else {
    std::string error;
    candidates = resolve(request.requested, error);
    if (candidates.empty()) throw refuse("cannot resolve it (" + error + ")");
    how = "the address " + request.requested + " resolves to";
  }
  for (const std::string& candidate : candidates) {
    if (needs_reach && is_loopback(candidate)) continue;
    const bool local = !interface_of(locals, candidate).empty();
    if (!local && !request.bind_all) continue;
    endpoint.advertised = candidate;
    endpoint.bind = request.bind_all ? "0.0.0.0" : candidate;
    endpoint.reason = fmt::format("{} (--monitor-address {})", how, request.requested);
    return endpoint;
  }
  if (needs_reach && std::all_of(candidates.begin(), candidates.end(), is_loopback)) {
    throw refuse(
        fmt::format("it is {}, a loopback address, which ranks on other hosts cannot reach",
                    candidates.front()));
  }
  throw refuse(fmt::format("{} is not an address of this host", candidates.front()));
}

}  // namespace

std::vector<LocalAddress> local_addresses() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return {};
  const std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> owner(list, freeifaddrs);
  std::vector<LocalAddress> addresses;
  for (const ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
    if ((entry->ifa_flags & IFF_UP) == 0) continue;
    char text[INET_ADDRSTRLEN] = {};
    const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
    if (inet_ntop(AF_INET, &address->sin_addr, text, sizeof(text)) != nullptr) {
      addresses.push_back({entry->ifa_name, text});
    }
  }
  return addresses;
}

MonitorEndpoint choose_monitor_endpoint(const EndpointRequest& request) {
  if (!request.requested.empty()) return requested_endpoint(request);
  MonitorEndpoint endpoint;
  if (request.remote_hosts.empty()) {
    endpoint.bind = request.bind_all ? "0.0.0.0" : "127.0.0.1";
    endpoint.reason = "every rank runs on this host";
    return endpoint;
  }
  const std::vector<LocalAddress> locals = local_addresses();
  std::string problems;
  for (const std::string& host : request.remote_hosts) {
    std::string error;
    const std::vector<std::string> addresses = resolve(host, error);
    if (addresses.empty()) {
      problems += fmt::format("; {} does not resolve ({})", host, error);
      continue;
    }
    for (const std::string& address : addresses) {
      // A name for this very host (an alias of it in the host list).
      if (is_loopback(address) || !interface_of(locals, address).empty()) continue;
      const std::string source = source_towards(address, error);
      if (source.empty()) {
        problems += fmt::format("; no route to {} ({}): {}", host, address, error);
        continue;
      }
      if (is_loopback(source)) continue;
      endpoint.advertised = source;
      endpoint.bind = request.bind_all ? "0.0.0.0" : source;
      const std::string interface = interface_of(locals, source);
      endpoint.reason =
          fmt::format("the address of {} that routes to {} ({})",
                      interface.empty() ? "this host" : "interface " + interface, host, address);
      return endpoint;
    }
  }
  if (problems.empty()) {
    // Every "remote" host turned out to be this one.
    endpoint.bind = request.bind_all ? "0.0.0.0" : "127.0.0.1";
    endpoint.reason = "every host of the run is this host";
    return endpoint;
  }
  throw UsageError(fmt::format(
      "cannot find an address of this host that the ranks' hosts reach{}; give one with "
      "--monitor-address (a host name, IPv4 address or interface; this host has: {})",
      problems, describe(locals)));
}

}  // namespace lockstep::launcher
