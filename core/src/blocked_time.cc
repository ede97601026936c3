#include "lockstep/blocked_time.h"

#include <atomic>

namespace lockstep::blocked_time {
namespace {
std::atomic<std::int64_t> g_blocked_ns{0};
}  // namespace

void add(std::chrono::steady_clock::duration duration) {
  g_blocked_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(duration).count(),
                         std::memory_order_relaxed);
}

std::int64_t total_ns() { return g_blocked_ns.load(std::memory_order_relaxed); }

}  // namespace lockstep::blocked_time
