// `lockstep ckpt ...` runs the sibling program lockstep-ckpt, which links the
// checkpoint library; the `lockstep` command itself links only core (see
// docs/CHECKPOINTS.md, "Inspecting checkpoints").
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"

namespace lockstep::cli {

namespace {

std::filesystem::path sibling_program() {
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "lockstep-ckpt";
  return self.parent_path() / "lockstep-ckpt";
}

// Replaces this process with lockstep-ckpt, so that its output and exit code
// are the command's own. Returns only when that fails.
int run_ckpt_program(const std::vector<std::string>& arguments) {
  const std::string program = sibling_program().string();
  std::vector<std::string> owned = {program};
  owned.insert(owned.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& argument : owned) argv.push_back(argument.data());
  argv.push_back(nullptr);
  std::cout.flush();
  ::execv(program.c_str(), argv.data());
  const int error = errno;
  std::cerr << "lockstep: cannot run " << program << ": " << std::strerror(error)
            << " (it is installed next to the lockstep command)\n";
  return kExitFailure;
}

}  // namespace

void add_ckpt_command(CLI::App& app, int& exit_code) {
  CLI::App* command = app.add_subcommand(
      "ckpt", "Checkpoints on disk: list, verify and inspect (run `lockstep ckpt --help`)");
  // Every argument, --help included, belongs to lockstep-ckpt.
  command->set_help_flag();
  command->allow_extras();
  command->prefix_command();
  command->callback([command, &exit_code] { exit_code = run_ckpt_program(command->remaining()); });
}

}  // namespace lockstep::cli
