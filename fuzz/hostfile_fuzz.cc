// Fuzzes parse_hostfile_text(), the reader of `lockstep run --hostfile`.
//
// A bad hostfile must end in UsageError; any other exception, a crash or a
// sanitizer report fails the run. What is accepted must be usable as the
// launcher uses it: its slots add up, and the `--host` list made from it
// parses back to the same hosts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "host_list.h"
#include "lockstep/error.h"

namespace {

using lockstep::UsageError;
using lockstep::launcher::Host;

[[noreturn]] void fail(const char* why) {
  std::fprintf(stderr, "parse_hostfile_text: %s\n", why);
  std::abort();
}

void check_accepted(const std::vector<Host>& hosts) {
  if (hosts.empty()) fail("accepted a hostfile that names no host");
  for (const Host& host : hosts) {
    if (host.slots < 1) fail("accepted a host with no slot");
  }
  if (lockstep::launcher::total_slots(hosts) < 1) fail("the slots add up to less than one");
  try {
    if (lockstep::launcher::parse_host_list(lockstep::launcher::host_list_string(hosts)) != hosts) {
      fail("the --host list of the hosts names other hosts");
    }
  } catch (const UsageError& error) {
    std::fprintf(stderr, "%s\n", error.what());
    fail("the --host list of the hosts does not parse");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    check_accepted(lockstep::launcher::parse_hostfile_text(text, "hostfile"));
  } catch (const UsageError&) {
    // A bad hostfile, reported as such: the expected outcome.
  }
  return 0;
}
