// Which address the launcher advertises to its ranks. What routes between
// real hosts is tested across namespace hosts (tests/hosts); here, the
// choices that need no second host and every refusal.
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "lockstep/error.h"
#include "monitor_address.h"

namespace lockstep::launcher {
namespace {

std::string usage_error_of(const EndpointRequest& request) {
  try {
    const MonitorEndpoint endpoint = choose_monitor_endpoint(request);
    return "no error; advertised " + endpoint.advertised;
  } catch (const UsageError& error) {
    return error.what();
  }
}

// 198.51.100.0/24 is reserved for documentation: never an address of a host.
// Names that cannot resolve have an empty label ("no-such..host"): the
// resolver refuses them without asking a name server, so no test sends a
// query off this machine.
constexpr const char* kForeign = "198.51.100.7";

TEST(MonitorAddress, OneHostUsesLoopbackAndSaysWhy) {
  const MonitorEndpoint endpoint = choose_monitor_endpoint({});
  EXPECT_EQ(endpoint.advertised, "127.0.0.1");
  EXPECT_EQ(endpoint.bind, "127.0.0.1");
  EXPECT_NE(endpoint.reason.find("this host"), std::string::npos) << endpoint.reason;
}

TEST(MonitorAddress, BindAllListensEverywhere) {
  const MonitorEndpoint endpoint = choose_monitor_endpoint({.bind_all = true});
  EXPECT_EQ(endpoint.bind, "0.0.0.0");
}

TEST(MonitorAddress, RemoteHostsThatAreThisHostKeepLoopback) {
  const MonitorEndpoint endpoint = choose_monitor_endpoint({.remote_hosts = {"localhost"}});
  EXPECT_EQ(endpoint.advertised, "127.0.0.1");
}

TEST(MonitorAddress, AnUnresolvableRemoteHostIsNamedWithTheOptionToSet) {
  const std::string error = usage_error_of({.remote_hosts = {"no-such..host"}});
  EXPECT_NE(error.find("no-such..host does not resolve"), std::string::npos) << error;
  EXPECT_NE(error.find("--monitor-address"), std::string::npos) << error;
}

TEST(MonitorAddress, LoopbackIsRefusedWhenRanksRunElsewhere) {
  for (const char* requested : {"lo", "127.0.0.1", "localhost"}) {
    const std::string error =
        usage_error_of({.requested = requested, .remote_hosts = {"no-such..host"}});
    EXPECT_NE(error.find("loopback"), std::string::npos) << requested << ": " << error;
    EXPECT_NE(error.find("this host has: "), std::string::npos) << error;
  }
}

TEST(MonitorAddress, LoopbackMayBeRequestedOnOneHost) {
  const MonitorEndpoint endpoint = choose_monitor_endpoint({.requested = "lo"});
  EXPECT_EQ(endpoint.advertised, "127.0.0.1");
  EXPECT_NE(endpoint.reason.find("interface lo"), std::string::npos) << endpoint.reason;
}

TEST(MonitorAddress, AnAddressThisHostDoesNotHoldIsRefusedUnlessBindingAll) {
  const std::string error = usage_error_of({.requested = kForeign});
  EXPECT_NE(error.find("is not an address of this host"), std::string::npos) << error;
  EXPECT_NE(error.find("--monitor-bind-all"), std::string::npos) << error;

  const MonitorEndpoint endpoint =
      choose_monitor_endpoint({.requested = kForeign, .bind_all = true});
  EXPECT_EQ(endpoint.advertised, kForeign);
  EXPECT_EQ(endpoint.bind, "0.0.0.0");
}

TEST(MonitorAddress, AnUnresolvableRequestIsRefused) {
  const std::string error = usage_error_of({.requested = "no-such..host"});
  EXPECT_NE(error.find("cannot resolve"), std::string::npos) << error;
}

TEST(MonitorAddress, EveryInterfaceAddressIsAcceptedByNameAndByAddress) {
  for (const LocalAddress& local : local_addresses()) {
    const MonitorEndpoint by_name = choose_monitor_endpoint({.requested = local.interface});
    EXPECT_EQ(by_name.bind, by_name.advertised);
    const MonitorEndpoint by_address = choose_monitor_endpoint({.requested = local.address});
    EXPECT_EQ(by_address.advertised, local.address);
    EXPECT_EQ(by_address.bind, local.address);
  }
}

}  // namespace
}  // namespace lockstep::launcher
