// Checks for the `lockstep` command line that CLI11 does not make itself:
// numbers that must be finite and in a range (CLI11 converts "nan", "inf"
// and "1e300" to doubles without complaint, and says only "Could not
// convert" for an integer that overflows), and the option names of a
// command, for "did you mean".
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::cli {

// Accepts a finite decimal number of seconds in [min, max] (or (min, max]
// when `min_excluded`); the error names the value and the accepted range.
CLI::Validator seconds_in(double min, double max, bool min_excluded = false);

// Accepts a whole number in [min, max]; the error names the value and the
// accepted range.
CLI::Validator whole_number_in(std::int64_t min, std::int64_t max);

// Every option name of `command` ("--hang-timeout", "-n", ...).
std::vector<std::string> option_names(const CLI::App& command);

// Throws UsageError for the first option in `args` (a subcommand's
// arguments, up to a `--`) that `command` does not have, naming it with a
// likely spelling. CLI11 would take an unknown option's value for the
// program and report something else, or list the `--` beside it.
void reject_unknown_options(const CLI::App& command, const std::vector<std::string>& args);

}  // namespace lockstep::cli
