// The `lockstep` command.
#include <iostream>

#include <string>
#include <vector>

#include "cli_checks.h"
#include "commands.h"
#include "lockstep/build_config.h"
#include "lockstep/config.h"
#include "lockstep/error.h"

namespace {

// The command the user asked for, when it is not one of ours: CLI11 would
// say only "A subcommand is required". "" when the command line names a
// known command (or none, or asks for --help/--version).
std::string unknown_command(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return "";
  const std::string first = argv[1];
  if (first.empty() || first.front() == '-') return "";
  for (const CLI::App* command : app.get_subcommands({})) {
    if (command->get_name() == first) return "";
  }
  return first;
}

std::vector<std::string> command_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* command : app.get_subcommands({})) names.push_back(command->get_name());
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lockstep::cli;
  CLI::App app{"lockstep: fault-tolerant data-parallel training", "lockstep"};
  app.set_version_flag("--version", LOCKSTEP_VERSION);
  app.require_subcommand(1);
  app.footer("Run `lockstep <command> --help` for the options of a command.");
  int exit_code = kExitSuccess;
  add_run_command(app, exit_code);
  add_config_command(app, exit_code);
  add_ckpt_command(app, exit_code);
  add_plan_command(app, exit_code);
  add_trace_command(app, exit_code);
  add_report_command(app, exit_code);
  if (const std::string command = unknown_command(app, argc, argv); !command.empty()) {
    const std::vector<std::string> names = command_names(app);
    const std::string closest = lockstep::closest_match(command, names);
    std::string list;
    for (const std::string& name : names) list += (list.empty() ? "" : ", ") + name;
    std::cerr << "lockstep: unknown command '" << command << "'"
              << (closest.empty() ? "" : "; did you mean '" + closest + "'?")
              << "\nThe commands are " << list << "; `lockstep --help` says what each does.\n";
    return kExitUsage;
  }
  try {
    // `lockstep ckpt` hands its arguments to lockstep-ckpt, which checks them.
    if (argc >= 2 && std::string(argv[1]) != "ckpt") {
      if (const CLI::App* command = app.get_subcommand(argv[1]); command != nullptr) {
        reject_unknown_options(*command, std::vector<std::string>(argv + 2, argv + argc));
      }
    }
  } catch (const lockstep::UsageError& error) {
    std::cerr << "lockstep: " << error.what() << "\n";
    return kExitUsage;
  } catch (const CLI::OptionNotFound&) {
    // argv[1] is an option such as --version: CLI11 handles it.
  }
  if (argc < 2) {
    std::cerr << app.help() << "\nlockstep: a command is required (see above)\n";
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? kExitSuccess : kExitUsage;
  } catch (const lockstep::UsageError& error) {
    std::cerr << "lockstep: " << error.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& error) {
    std::cerr << "lockstep: " << error.what() << "\n";
    return kExitFailure;
  }
  return exit_code;
}
