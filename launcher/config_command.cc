#include <cstdlib>
#include <iostream>
#include <memory>

#include "commands.h"
#include "lockstep/config.h"

namespace lockstep::cli {

namespace {
struct ConfigOptions {
  bool markdown = false;
  bool check = false;
};

int check_environment() {
  const Config config = Config::load();  // throws ConfigError on a bad value
  for (const KnobSpec* spec : all_knobs()) {
    const char* value = std::getenv(std::string(spec->env).c_str());
    std::cout << spec->env << "=" << (value != nullptr ? value : std::string(spec->default_value))
              << "  (" << config.source(*spec) << ")\n";
  }
  for (const std::string& unknown : config.unknown_variables()) {
    std::cout << "unknown variable: " << unknown << "\n";
  }
  return config.unknown_variables().empty() ? kExitSuccess : kExitUsage;
}
}  // namespace

void add_config_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ConfigOptions>();
  CLI::App* command = app.add_subcommand(
      "config", "List every setting: flag, LOCKSTEP_* variable, default and meaning");
  command->add_flag("--markdown", options->markdown,
                    "Print the table as Markdown (the page docs/CONFIG.md)");
  command->add_flag("--check", options->check,
                    "Validate the LOCKSTEP_* variables of this environment and print the values "
                    "in effect; exit 2 when one is invalid or unknown");
  command->callback([options, &exit_code] {
    if (options->check) {
      exit_code = check_environment();
    } else {
      std::cout << (options->markdown ? config_markdown() : config_help_text());
      exit_code = kExitSuccess;
    }
  });
}

}  // namespace lockstep::cli
