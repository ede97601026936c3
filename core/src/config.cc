#include "lockstep/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

extern char** environ;

namespace lockstep {

namespace {

constexpr std::string_view kFlagPrefix = "--lockstep-";
constexpr std::string_view kEnvPrefix = "LOCKSTEP_";

std::string flag_name_to_knob(std::string_view flag) {
  std::string name(flag);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::string format_number(double value) {
  if (std::abs(value) >= 1e6 && value == std::floor(value)) return fmt::format("{:.0e}", value);
  return fmt::format("{}", value);
}

[[noreturn]] void reject(const KnobSpec& spec, std::string_view text, std::string_view problem) {
  throw ConfigError(fmt::format("{}='{}' {}; accepted: {} (flag {}, default '{}')", spec.env, text,
                                problem, spec.accepted(), spec.flag(), spec.default_value));
}

// Levenshtein distance, for "did you mean" on misspelt variables.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string closest_match(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  // Suggest only likely misspellings: 2 edits for short names ("rnu" ->
  // "run", but not "x" -> "run"), up to 3 for long ones.
  std::size_t best_distance = std::clamp<std::size_t>(name.size() / 3, 2, 3) + 1;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

namespace {

std::string_view type_name(KnobType type) {
  switch (type) {
    case KnobType::kInt:
      return "integer";
    case KnobType::kFloat:
      return "number";
    case KnobType::kBool:
      return "boolean";
    case KnobType::kString:
      return "string";
    case KnobType::kEnum:
      return "choice";
    case KnobType::kPath:
      return "path";
  }
  return "?";
}

void validate(const KnobSpec& spec, const std::string& text) {
  switch (spec.type) {
    case KnobType::kInt:
      parse_int_value(spec, text);
      break;
    case KnobType::kFloat:
      parse_float_value(spec, text);
      break;
    case KnobType::kBool:
      parse_bool_value(spec, text);
      break;
    case KnobType::kEnum:
      parse_enum_value(spec, text);
      break;
    case KnobType::kPath:
      if (text.empty()) reject(spec, text, "is empty");
      break;
    case KnobType::kString:
      break;
  }
}

void expect_type(const KnobSpec& spec, KnobType a, KnobType b) {
  if (spec.type != a && spec.type != b) {
    throw UsageError(
        fmt::format("knob {} is a {}, read with the wrong type", spec.name, type_name(spec.type)));
  }
}

}  // namespace

std::string KnobSpec::flag() const {
  std::string text(kFlagPrefix);
  for (const char c : name) text.push_back(c == '_' ? '-' : c);
  return text;
}

std::string KnobSpec::accepted() const {
  switch (type) {
    case KnobType::kInt:
      return fmt::format("an integer in [{}, {}]", format_number(min), format_number(max));
    case KnobType::kFloat:
      return fmt::format("a number in [{}, {}]", format_number(min), format_number(max));
    case KnobType::kBool:
      return "true/false, 1/0, yes/no, on/off";
    case KnobType::kEnum:
      return fmt::format("one of {}", fmt::join(choices, ", "));
    case KnobType::kPath:
      return "a non-empty path";
    case KnobType::kString:
      return "any text";
  }
  return "?";
}

const KnobSpec* find_knob(std::string_view name) {
  for (const KnobSpec* spec : all_knobs()) {
    if (spec->name == name) return spec;
  }
  return nullptr;
}

std::int64_t parse_int_value(const KnobSpec& spec, std::string_view text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error == std::errc::invalid_argument || ptr != end) {
    reject(spec, text, "is not an integer");
  }
  if (error == std::errc::result_out_of_range || static_cast<double>(value) < spec.min ||
      static_cast<double>(value) > spec.max) {
    reject(spec, text, "is out of range");
  }
  return value;
}

double parse_float_value(const KnobSpec& spec, std::string_view text) {
  const std::string copy(text);
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || std::isnan(value)) {
    reject(spec, text, "is not a number");
  }
  if (errno == ERANGE || value < spec.min || value > spec.max)
    reject(spec, text, "is out of range");
  return value;
}

bool parse_bool_value(const KnobSpec& spec, std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return false;
  reject(spec, text, "is not a boolean");
}

std::string parse_enum_value(const KnobSpec& spec, std::string_view text) {
  for (const std::string_view choice : spec.choices) {
    if (choice == text) return std::string(text);
  }
  reject(spec, text, "is not a known choice");
}

Config Config::load(const std::map<std::string, std::string, std::less<>>& overrides) {
  Config config;
  for (const auto& [name, value] : overrides) {
    if (find_knob(name) == nullptr) {
      throw ConfigError(
          fmt::format("unknown setting '{}'; run `lockstep config` for the list", name));
    }
  }
  for (const KnobSpec* spec : all_knobs()) {
    const std::string name(spec->name);
    std::string value(spec->default_value);
    std::string source = "default";
    if (const char* env = std::getenv(std::string(spec->env).c_str()); env != nullptr) {
      value = env;
      source = "environment";
    }
    if (const auto it = overrides.find(name); it != overrides.end()) {
      value = it->second;
      source = "flag";
    }
    validate(*spec, value);
    config.values_[name] = value;
    config.sources_[name] = source;
  }
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view variable(*entry);
    if (!variable.starts_with(kEnvPrefix)) continue;
    const std::string_view key = variable.substr(0, variable.find('='));
    const bool known = std::any_of(all_knobs().begin(), all_knobs().end(),
                                   [&](const KnobSpec* spec) { return spec->env == key; });
    if (known) continue;
    std::vector<std::string> names;
    for (const KnobSpec* spec : all_knobs()) names.emplace_back(spec->env);
    const std::string closest = closest_match(key, names);
    config.unknown_.push_back(closest.empty() ? std::string(key)
                                              : fmt::format("{} (did you mean {}?)", key, closest));
  }
  return config;
}

std::map<std::string, std::string, std::less<>> Config::take_flags(int& argc, char** argv) {
  std::map<std::string, std::string, std::less<>> flags;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    if (argument == "--") {  // everything after belongs to the program
      for (; i < argc; ++i) argv[kept++] = argv[i];
      break;
    }
    if (!argument.starts_with(kFlagPrefix)) {
      argv[kept++] = argv[i];
      continue;
    }
    const std::string_view body = argument.substr(kFlagPrefix.size());
    const std::size_t equals = body.find('=');
    const std::string name = flag_name_to_knob(body.substr(0, equals));
    if (find_knob(name) == nullptr) {
      throw ConfigError(fmt::format("unknown flag '{}'; --lockstep-help lists the settings",
                                    argument.substr(0, argument.find('='))));
    }
    if (equals != std::string_view::npos) {
      flags[name] = std::string(body.substr(equals + 1));
    } else if (i + 1 < argc) {
      flags[name] = argv[++i];
    } else {
      throw ConfigError(
          fmt::format("flag '{}' needs a value: {}", argument, find_knob(name)->accepted()));
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  return flags;
}

const std::string& Config::raw(const KnobSpec& spec) const {
  const auto it = values_.find(spec.name);
  if (it == values_.end()) {
    throw UsageError(fmt::format("knob {} is not in the table of knobs (all_knobs)", spec.name));
  }
  return it->second;
}

std::int64_t Config::get(const Knob<std::int64_t>& knob) const {
  expect_type(knob.spec, KnobType::kInt, KnobType::kInt);
  return parse_int_value(knob.spec, raw(knob.spec));
}

double Config::get(const Knob<double>& knob) const {
  expect_type(knob.spec, KnobType::kFloat, KnobType::kFloat);
  return parse_float_value(knob.spec, raw(knob.spec));
}

bool Config::get(const Knob<bool>& knob) const {
  expect_type(knob.spec, KnobType::kBool, KnobType::kBool);
  return parse_bool_value(knob.spec, raw(knob.spec));
}

std::string Config::get(const Knob<std::string>& knob) const {
  if (knob.spec.type == KnobType::kInt || knob.spec.type == KnobType::kFloat ||
      knob.spec.type == KnobType::kBool) {
    expect_type(knob.spec, KnobType::kString, KnobType::kEnum);
  }
  return raw(knob.spec);
}

std::string_view Config::source(const KnobSpec& spec) const {
  const auto it = sources_.find(spec.name);
  return it == sources_.end() ? std::string_view("default") : std::string_view(it->second);
}

std::string config_help_text() {
  std::string text = "Settings (flag or environment variable; flags win):\n";
  for (const KnobSpec* spec : all_knobs()) {
    text += fmt::format("\n  {}=<{}>, {}\n", spec->flag(), type_name(spec->type), spec->env);
    text += fmt::format("      {}\n", spec->doc);
    text +=
        fmt::format("      Accepted: {}. Default: '{}'.{}\n", spec->accepted(), spec->default_value,
                    spec->set_by_launcher ? " Set by `lockstep run`." : "");
  }
  return text;
}

std::string config_markdown() {
  std::string text =
      "# Configuration\n\n"
      "<!-- Generated by `lockstep config --markdown` from core/src/knobs.cc; do not edit. -->\n\n"
      "Every setting can be given as an environment variable or, to a program that\n"
      "constructs a `lockstep::Runtime` from its arguments, as a flag. Flags win over\n"
      "the environment, which wins over the default. A value that cannot be parsed or\n"
      "is out of range stops the program at start-up with an error naming the\n"
      "variable, the value and what is accepted.\n\n"
      "| Variable | Flag | Type | Default | Accepted | Meaning |\n"
      "|---|---|---|---|---|---|\n";
  for (const KnobSpec* spec : all_knobs()) {
    text += fmt::format("| `{}` | `{}` | {} | `{}` | {} | {}{} |\n", spec->env, spec->flag(),
                        type_name(spec->type), spec->default_value, spec->accepted(), spec->doc,
                        spec->set_by_launcher ? " Set by `lockstep run`." : "");
  }
  return text;
}

}  // namespace lockstep
