// Subcommands of the `lockstep` command. Each adds itself to the CLI11 app
// and returns the exit code it wants through the callback it installs.
#pragma once

#include <CLI/CLI.hpp>

namespace lockstep::cli {

// Exit codes of the `lockstep` command (documented in README.md).
enum ExitCode : int {
  kExitSuccess = 0,
  kExitFailure = 1,  // the job failed and could not be recovered
  kExitUsage = 2,    // bad command line or input; nothing was started
};

// `lockstep config [--markdown]`: every setting, its variable and default.
void add_config_command(CLI::App& app, int& exit_code);

// `lockstep run -n N ... -- program`: the supervised job.
void add_run_command(CLI::App& app, int& exit_code);

// `lockstep ckpt list|verify|inspect DIR`: runs the sibling lockstep-ckpt.
void add_ckpt_command(CLI::App& app, int& exit_code);

// `lockstep plan`: checkpoint interval and expected goodput of a run.
void add_plan_command(CLI::App& app, int& exit_code);

// `lockstep trace RUN_DIR`: the run's timeline as one Chrome Trace file.
void add_trace_command(CLI::App& app, int& exit_code);

// `lockstep report RUN_DIR`: one self-contained HTML page about the run.
void add_report_command(CLI::App& app, int& exit_code);

}  // namespace lockstep::cli
