// Typed configuration. Every knob is declared once (knobs.h / knobs.cc) with
// its name, LOCKSTEP_* environment variable, type, default, accepted range
// and documentation; that single table produces `--help` text, the docs page
// docs/CONFIG.md, and the parsing and validation of values.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/error.h"

namespace lockstep {

enum class KnobType : std::uint8_t { kInt, kFloat, kBool, kString, kEnum, kPath };

// The declaration of one configuration knob.
struct KnobSpec {
  std::string_view name;  // "log_level"; the flag is --lockstep-log-level
  std::string_view env;   // "LOCKSTEP_LOG_LEVEL"
  KnobType type;
  std::string_view default_value;  // as text, parsed like any other value
  std::string_view doc;            // one or two sentences for --help and the docs
  double min = 0;                  // numeric range, inclusive (kInt, kFloat)
  double max = 0;
  std::span<const std::string_view> choices = {};  // kEnum
  bool set_by_launcher = false;                    // documented as set by `lockstep run`, not users

  // "--lockstep-log-level"
  std::string flag() const;
  // "integer in [0, 1000000]", "one of: trace, debug, info", ...
  std::string accepted() const;
};

// A typed handle on a KnobSpec, so that Config::get returns the right type.
template <class T>
struct Knob {
  KnobSpec spec;
};

// Every knob lockstep knows, in documentation order.
std::span<const KnobSpec* const> all_knobs();

// The candidate closest to `name` when it is a likely misspelling of it (a
// small edit distance for its length), else "". For "did you mean" in errors.
std::string closest_match(std::string_view name, const std::vector<std::string>& candidates);
// The knob with this name, or nullptr.
const KnobSpec* find_knob(std::string_view name);

// Resolved configuration: command-line overrides beat environment variables,
// which beat defaults. Every value is validated when the Config is built, so
// a bad value fails at start-up with a ConfigError naming the variable, the
// value and what is accepted, not minutes later.
class Config {
 public:
  // Reads the LOCKSTEP_* environment. `overrides` maps knob names to values
  // (from --lockstep-* flags). Throws ConfigError on any invalid value or an
  // override for an unknown knob.
  static Config load(const std::map<std::string, std::string, std::less<>>& overrides = {});

  // Removes --lockstep-<name>=<value> and --lockstep-<name> <value> arguments
  // from argv (like MPI_Init does for its own) and returns them by knob name.
  // Throws ConfigError for an unknown --lockstep-* flag or a missing value.
  static std::map<std::string, std::string, std::less<>> take_flags(int& argc, char** argv);

  std::int64_t get(const Knob<std::int64_t>& knob) const;
  double get(const Knob<double>& knob) const;
  bool get(const Knob<bool>& knob) const;
  std::string get(const Knob<std::string>& knob) const;

  // Where the value of a knob came from: "default", "environment" or "flag".
  std::string_view source(const KnobSpec& spec) const;

  // LOCKSTEP_* variables in the environment that name no knob (likely typos),
  // each with a suggestion when one is close.
  const std::vector<std::string>& unknown_variables() const { return unknown_; }

 private:
  const std::string& raw(const KnobSpec& spec) const;

  std::map<std::string, std::string, std::less<>> values_;   // by knob name
  std::map<std::string, std::string, std::less<>> sources_;  // by knob name
  std::vector<std::string> unknown_;
};

// Parsers shared by Config and tests. Each throws ConfigError naming the
// environment variable, the value and what is accepted.
std::int64_t parse_int_value(const KnobSpec& spec, std::string_view text);
double parse_float_value(const KnobSpec& spec, std::string_view text);
bool parse_bool_value(const KnobSpec& spec, std::string_view text);
std::string parse_enum_value(const KnobSpec& spec, std::string_view text);

// Plain-text table for --help: flag, variable, default, accepted, doc.
std::string config_help_text();
// The Markdown page docs/CONFIG.md.
std::string config_markdown();

}  // namespace lockstep
