#include "lockstep/log.h"

#include <unistd.h>

#include <array>
#include <memory>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "lockstep/error.h"
#include "lockstep/mutex.h"

namespace lockstep::log {

namespace {

std::string local_hostname() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) return "unknown-host";
  return name.data();
}

struct State {
  Mutex mutex;
  std::string identity LOCKSTEP_GUARDED_BY(mutex) = fmt::format("[-/- {}]", local_hostname());
  // Set once, under the mutex; the logger it points to is thread-safe.
  std::shared_ptr<spdlog::logger> logger LOCKSTEP_GUARDED_BY(mutex);
};

State& state() {
  static State instance;
  return instance;
}

void apply_pattern(spdlog::logger& logger, const std::string& identity) {
  // "[2/4 node7] 12:00:01.123 warn: message"; the identity is literal text.
  std::string escaped;
  for (const char c : identity) {
    if (c == '%') escaped += '%';
    escaped += c;
  }
  logger.set_pattern(escaped + " %H:%M:%S.%e %l: %v");
}

}  // namespace

spdlog::logger& logger() {
  State& s = state();
  MutexLock lock(s.mutex);
  if (!s.logger) {
    // A stderr sink with its own mutex: ranks may log from several threads.
    s.logger = std::make_shared<spdlog::logger>("lockstep",
                                                std::make_shared<spdlog::sinks::stderr_sink_mt>());
    apply_pattern(*s.logger, s.identity);
    s.logger->set_level(spdlog::level::info);
    s.logger->flush_on(spdlog::level::trace);  // a crash must not eat the last lines
  }
  return *s.logger;
}

Level parse_level(std::string_view name) {
  if (name == "trace") return Level::kTrace;
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  throw UsageError(
      fmt::format("unknown log level '{}'; accepted: trace, debug, info, warn, error, off", name));
}

void set_level(Level level) {
  static constexpr std::array<spdlog::level::level_enum, 6> kLevels = {
      spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
      spdlog::level::warn,  spdlog::level::err,   spdlog::level::off};
  logger().set_level(kLevels[static_cast<std::size_t>(level)]);
}

void set_identity(int rank, int world_size, std::string_view host) {
  spdlog::logger& target = logger();
  State& s = state();
  MutexLock lock(s.mutex);
  s.identity = fmt::format("[{}/{} {}]", rank, world_size, host);
  apply_pattern(target, s.identity);
}

std::string identity() {
  logger();
  State& s = state();
  MutexLock lock(s.mutex);
  return s.identity;
}

}  // namespace lockstep::log
