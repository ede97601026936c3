// The `lockstep` command.
#include <iostream>

#include "commands.h"
#include "lockstep/build_config.h"
#include "lockstep/error.h"

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
