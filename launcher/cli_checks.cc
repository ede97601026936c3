#include "cli_checks.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "lockstep/config.h"
#include "lockstep/error.h"

namespace lockstep::cli {

CLI::Validator seconds_in(double min, double max, bool min_excluded) {
  const std::string range = fmt::format("a number of seconds from {}{} to {}", min,
                                        min_excluded ? " (excluded)" : "", max);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || error != std::errc() || stop != end || !std::isfinite(value) ||
            value < min || value > max || (min_excluded && value == min)) {
          return fmt::format("'{}' is not {}", text, range);
        }
        return "";
      },
      "SECONDS");
}

CLI::Validator whole_number_in(std::int64_t min, std::int64_t max) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        std::int64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || error != std::errc() || stop != end || value < min || value > max) {
          return fmt::format("'{}' is not a whole number from {} to {}", text, min, max);
        }
        return "";
      },
      "INT");
}

std::vector<std::string> option_names(const CLI::App& command) {
  std::vector<std::string> names;
  for (const CLI::Option* option : command.get_options()) {
    for (const std::string& name : option->get_lnames()) names.push_back("--" + name);
    for (const std::string& name : option->get_snames()) names.push_back("-" + name);
  }
  return names;
}

void reject_unknown_options(const CLI::App& command, const std::vector<std::string>& args) {
  std::vector<std::string> names = option_names(command);
  names.insert(names.end(), {"--help", "-h"});
  for (const std::string& arg : args) {
    if (arg == "--") return;  // the program's own arguments follow
    if (arg.size() < 2 || arg.front() != '-') continue;
    double number = 0;
    const auto [end, error] = std::from_chars(arg.data(), arg.data() + arg.size(), number);
    if (error == std::errc() && end == arg.data() + arg.size()) continue;  // a negative value
    // "--name=value", and "-n4" (a short option with its value attached).
    const std::string name =
        arg.starts_with("--") ? arg.substr(0, arg.find('=')) : arg.substr(0, 2);
    if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    const std::string closest = closest_match(name, names);
    throw UsageError(fmt::format(
        "lockstep {} has no option '{}'{}; see `lockstep {} --help`{}", command.get_name(), name,
        closest.empty() ? "" : fmt::format(" (did you mean {}?)", closest), command.get_name(),
        command.get_name() == "run"
            ? ". The program and its own options go after '--': lockstep run -n 4 -- ./trainer "
              "--its-option"
            : ""));
  }
}

}  // namespace lockstep::cli
