// `lockstep report RUN_DIR`: one HTML page about the run.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "output_file.h"
#include "run_report.h"

namespace lockstep::cli {

namespace {

struct ReportOptions {
  std::string run_dir;
  std::string output;  // default <run dir>/report.html
};

int write_report(const ReportOptions& options) {
  namespace fs = std::filesystem;
  const fs::path run_dir = options.run_dir;
  const fs::path output =
      options.output.empty() ? run_dir / "report.html" : fs::path(options.output);
  const launcher::ReportData data = launcher::read_report_data(run_dir);
  write_output_file(output, [&](std::ostream& out) { out << launcher::report_html(data); });
  std::cerr << fmt::format(
      "lockstep report: {} attempt(s), {} rank(s) with step times, written to {}\n"
      "It needs nothing else to be viewed: open it in any browser (file://{}).\n",
      data.attempts.size(), data.steps.size(), output.string(), fs::absolute(output).string());
  return kExitSuccess;
}

}  // namespace

void add_report_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ReportOptions>();
  CLI::App* command = app.add_subcommand(
      "report",
      "Write one self-contained HTML page about a run: its attempts on a time axis with "
      "failures, checkpoints, restarts and requeues, where the time went, step time per rank, "
      "and the root cause of each failed attempt");
  command->add_option("run_dir", options->run_dir, "The run's directory (lockstep run --run-dir)")
      ->required()
      ->check(CLI::ExistingDirectory);
  command->add_option("-o,--output", options->output,
                      "Where to write the page (default: RUN_DIR/report.html)");
  command->callback([options, &exit_code] { exit_code = write_report(*options); });
}

}  // namespace lockstep::cli
