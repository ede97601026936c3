#include "lockstep/signals.h"

#include <atomic>
#include <csignal>

namespace lockstep {

namespace signals {

namespace {

// Lock-free atomics are async-signal-safe; the handlers touch nothing else.
std::atomic<std::uint32_t> g_requests{kRequestNone};
std::atomic<int> g_interrupts{0};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);

struct sigaction g_previous_usr1 = {};
struct sigaction g_previous_term = {};
struct sigaction g_previous_usr2 = {};
struct sigaction g_previous_int = {};
bool g_installed = false;

void on_signal(int signal_number) {
  switch (signal_number) {
    case SIGUSR1:
      g_requests.fetch_or(kRequestCheckpoint);
      break;
    case SIGINT:
      if (g_interrupts.fetch_add(1) >= 1) {
        // Second Ctrl-C: the user does not want to wait for a checkpoint.
        std::signal(SIGINT, SIG_DFL);
        std::raise(SIGINT);
      }
      g_requests.fetch_or(kRequestCheckpoint | kRequestStop);
      break;
    default:  // SIGTERM, SIGUSR2
      g_requests.fetch_or(kRequestCheckpoint | kRequestStop);
      break;
  }
}

void set_handler(int signal_number, struct sigaction* previous) {
  struct sigaction action = {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls in user code carry on
  sigaction(signal_number, &action, previous);
}

}  // namespace

void install() {
  if (g_installed) return;
  set_handler(SIGUSR1, &g_previous_usr1);
  set_handler(SIGTERM, &g_previous_term);
  set_handler(SIGUSR2, &g_previous_usr2);
  set_handler(SIGINT, &g_previous_int);
  g_installed = true;
}

void uninstall() {
  if (!g_installed) return;
  sigaction(SIGUSR1, &g_previous_usr1, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGUSR2, &g_previous_usr2, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
  g_installed = false;
}

std::uint32_t peek() { return g_requests.load(); }

std::uint32_t take() {
  return g_requests.fetch_and(~static_cast<std::uint32_t>(kRequestCheckpoint));
}

void request(std::uint32_t bits) { g_requests.fetch_or(bits); }

void reset() {
  g_requests.store(kRequestNone);
  g_interrupts.store(0);
}

}  // namespace signals

Decision decide(std::uint32_t all_requests, std::int64_t step, std::int64_t every) {
  Decision decision;
  decision.stop = (all_requests & kRequestStop) != 0;
  const bool on_interval = every > 0 && step >= 0 && (step + 1) % every == 0;
  decision.checkpoint = decision.stop || (all_requests & kRequestCheckpoint) != 0 || on_interval;
  return decision;
}

}  // namespace lockstep
