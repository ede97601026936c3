// `lockstep trace RUN_DIR`: one timeline file of the whole run.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "lockstep/error.h"
#include "output_file.h"
#include "trace_merge.h"

namespace lockstep::cli {

namespace {

struct TraceOptions {
  std::string run_dir;
  std::string output;  // default <run dir>/trace.json
};

int write_trace(const TraceOptions& options) {
  namespace fs = std::filesystem;
  const fs::path run_dir = options.run_dir;
  const fs::path output =
      options.output.empty() ? run_dir / "trace.json" : fs::path(options.output);
  launcher::MergeReport report;
  write_output_file(output,
                    [&](std::ostream& out) { report = launcher::merge_trace(run_dir, out); });
  for (const std::string& problem : report.problems) {
    std::cerr << "lockstep trace: warning: " << problem << "\n";
  }
  std::cerr << fmt::format(
      "lockstep trace: {} events of {} rank(s) in {} attempt(s) over {} start(s) of lockstep run "
      "written to {}{}\n"
      "Open it in https://ui.perfetto.dev (Open trace file; it stays in the browser) or "
      "chrome://tracing (Load).\n",
      report.events, report.ranks.size(), report.attempts, report.sessions, output.string(),
      report.skipped_lines > 0
          ? fmt::format("; {} damaged or unknown line(s) skipped", report.skipped_lines)
          : "");
  return kExitSuccess;
}

}  // namespace

void add_trace_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<TraceOptions>();
  CLI::App* command = app.add_subcommand(
      "trace",
      "Merge the timelines of every rank and attempt of a run, with the launcher's failures, "
      "restarts and checkpoints, into one Chrome Trace / Perfetto file");
  command->add_option("run_dir", options->run_dir, "The run's directory (lockstep run --run-dir)")
      ->required()
      ->check(CLI::ExistingDirectory);
  command->add_option("-o,--output", options->output,
                      "Where to write the trace (default: RUN_DIR/trace.json)");
  command->footer(
      "Ranks record their timeline under `lockstep run` unless LOCKSTEP_TRACE=off: steps, "
      "GradSync buckets, collectives and checkpoint phases, in <run dir>/trace/.");
  command->callback([options, &exit_code] { exit_code = write_trace(*options); });
}

}  // namespace lockstep::cli
