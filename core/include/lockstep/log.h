// Logging with a "[rank/world host]" prefix on every line, through spdlog.
// Until a Runtime knows the rank, the prefix reads "[-/- host]".
#pragma once

#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace lockstep::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };

// Parses "trace", "debug", "info", "warn", "error", "off".
Level parse_level(std::string_view name);
void set_level(Level level);

// Sets the "[rank/world host]" prefix of every following line.
void set_identity(int rank, int world_size, std::string_view host);
// The current prefix, e.g. "[2/4 node7]".
std::string identity();

// The logger behind the helpers below; writes to stderr.
spdlog::logger& logger();

template <class... Args>
void trace(spdlog::format_string_t<Args...> format, Args&&... args) {
  logger().trace(format, std::forward<Args>(args)...);
}
template <class... Args>
void debug(spdlog::format_string_t<Args...> format, Args&&... args) {
  logger().debug(format, std::forward<Args>(args)...);
}
template <class... Args>
void info(spdlog::format_string_t<Args...> format, Args&&... args) {
  logger().info(format, std::forward<Args>(args)...);
}
template <class... Args>
void warn(spdlog::format_string_t<Args...> format, Args&&... args) {
  logger().warn(format, std::forward<Args>(args)...);
}
template <class... Args>
void error(spdlog::format_string_t<Args...> format, Args&&... args) {
  logger().error(format, std::forward<Args>(args)...);
}

}  // namespace lockstep::log
