// lockstep-ckpt: what is in a checkpoint directory, is it intact, what is
// inside a step. Run as `lockstep ckpt ...`. Reads only; needs no MPI job.
//
// Exit codes: 0 success; 1 `verify` found a damaged checkpoint; 2 bad input
// (a missing directory, not a checkpoint directory, an unknown step).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "lockstep/build_config.h"
#include "lockstep/checkpoint_inspect.h"
#include "lockstep/error.h"

namespace lockstep::cli {

namespace {

namespace fs = std::filesystem;

struct CkptOptions {
  std::string dir;
  std::optional<std::int64_t> step;
  std::string memory_dir;  // the memory tier's base (LOCKSTEP_CHECKPOINT_MEMORY_DIR)
};

std::string human_bytes(std::uint64_t bytes) {
  const auto value = static_cast<double>(bytes);
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (1U << 20)) return fmt::format("{:.1f} KiB", value / 1024);
  if (bytes < (1U << 30)) return fmt::format("{:.1f} MiB", value / (1U << 20));
  return fmt::format("{:.2f} GiB", value / (1U << 30));
}

std::string utc_time(double unix_seconds) {
  const auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[32] = {};
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::vector<std::int64_t> committed(const std::vector<CheckpointEntry>& entries) {
  std::vector<std::int64_t> steps;
  for (const auto& entry : entries) {
    if (entry.committed) steps.push_back(entry.step);
  }
  return steps;
}

// The steps a command works on: `--step N` (which must be committed), or all
// committed ones. Throws UsageError when there is nothing to work on.
std::vector<std::int64_t> select_steps(const CkptOptions& options,
                                       const std::vector<CheckpointEntry>& entries) {
  const auto steps = committed(entries);
  if (steps.empty()) {
    throw UsageError(fmt::format("{} holds no committed checkpoint", options.dir));
  }
  if (!options.step) return steps;
  for (const auto step : steps) {
    if (step == *options.step) return {step};
  }
  throw UsageError(fmt::format("step {} is not a committed checkpoint in {} (committed: {})",
                               *options.step, options.dir, fmt::join(steps, ", ")));
}

// This user's memory-tier directories under `base` on this node that belong
// to the checkpoint directory `dir` (their "owner" file names it).
std::vector<fs::path> memory_dirs_of(const std::string& base, const std::string& dir) {
  std::vector<fs::path> found;
  std::error_code error;
  const std::string owner = fs::absolute(dir).lexically_normal().string();
  const std::string prefix = fmt::format("{}-", ::geteuid());
  for (const auto& entry : fs::directory_iterator(base, error)) {
    if (!entry.is_directory() || entry.is_symlink() ||
        entry.path().filename().string().rfind(prefix, 0) != 0) {
      continue;
    }
    std::ifstream marker(entry.path() / ".owner");
    std::string named;
    if (marker && std::getline(marker, named) && named == owner) found.push_back(entry.path());
  }
  return found;
}

// The node directories in a run's memory directory: one per node on this
// host (one, unless several nodes share the host).
std::vector<fs::path> node_dirs_of(const fs::path& memory) {
  std::vector<fs::path> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(memory, error)) {
    if (entry.is_directory() && !entry.is_symlink() &&
        entry.path().filename().string().front() != '.') {
      found.push_back(entry.path());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

// The steps of `dir`'s run in the memory tier on this host.
void list_memory_tier(const CkptOptions& options) {
  if (options.memory_dir.empty()) return;
  for (const fs::path& memory : memory_dirs_of(options.memory_dir, options.dir)) {
    for (const fs::path& node : node_dirs_of(memory)) {
      std::vector<CheckpointEntry> entries;
      try {
        entries = list_checkpoint_entries(node);
      } catch (const UsageError&) {
        continue;  // nothing saved there yet
      }
      std::cout << fmt::format(
          "memory tier of node {} ({}): its ranks' files and the partner copies it keeps:\n",
          node.filename().string(), node.string());
      for (const auto& entry : entries) {
        std::string ranks = "-";
        std::string state = entry.committed ? "in memory" : "torn";
        double saved_at = entry.modified_unix_seconds;
        if (entry.committed) {
          try {
            const auto info = read_checkpoint_info(node / entry.name);
            ranks = std::to_string(info.world_size);
            saved_at = info.unix_time;
          } catch (const Error&) {
            state = "damaged";
          }
        }
        std::cout << fmt::format("{:>10}  {:<9}  {:>10}  {:>5}  {:<20}  {}\n", entry.step, state,
                                 human_bytes(entry.bytes), ranks, utc_time(saved_at), entry.name);
      }
    }
  }
}

int list(const CkptOptions& options) {
  const auto entries = list_checkpoint_entries(options.dir);
  if (entries.empty()) {
    std::cout << options.dir << ": no checkpoints\n";
    list_memory_tier(options);
    return kExitSuccess;
  }
  std::cout << fmt::format("{:>10}  {:<9}  {:>10}  {:>5}  {:<20}  {}\n", "STEP", "STATE", "SIZE",
                           "RANKS", "SAVED (UTC)", "NAME");
  int torn = 0;
  for (const auto& entry : entries) {
    std::string state = entry.committed ? "committed" : "torn";
    std::string ranks = "-";
    double saved_at = entry.modified_unix_seconds;
    if (entry.committed) {
      try {
        const auto info = read_checkpoint_info(fs::path(options.dir) / entry.name);
        ranks = std::to_string(info.world_size);
        saved_at = info.unix_time;
      } catch (const Error&) {
        state = "damaged";  // `verify` says why
      }
    } else {
      ++torn;
    }
    std::cout << fmt::format("{:>10}  {:<9}  {:>10}  {:>5}  {:<20}  {}\n", entry.step, state,
                             human_bytes(entry.bytes), ranks, utc_time(saved_at), entry.name);
  }
  if (torn > 0) {
    std::cout << fmt::format(
        "{} torn: left by an interrupted save or deletion; never loaded, and removed by the "
        "next Checkpointer in this directory (which puts a step-N.replaced-* back as step-N "
        "when step-N is missing)\n",
        torn);
  }
  list_memory_tier(options);
  return kExitSuccess;
}

int verify(const CkptOptions& options) {
  const auto entries = list_checkpoint_entries(options.dir);
  int failed = 0;
  const auto steps = select_steps(options, entries);
  for (const auto step : steps) {
    const fs::path step_dir = fs::path(options.dir) / checkpoint_step_name(step);
    const auto started = std::chrono::steady_clock::now();
    const VerifyReport report = verify_checkpoint(step_dir);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (report.ok()) {
      std::cout << fmt::format("{}: ok ({} checksums, {} read in {:.2f} s)\n",
                               checkpoint_step_name(step), report.checks_passed,
                               human_bytes(report.bytes_checked), seconds);
      continue;
    }
    ++failed;
    std::cout << fmt::format("{}: FAILED ({} problems)\n", checkpoint_step_name(step),
                             report.problems.size());
    for (const auto& problem : report.problems) {
      std::cout << fmt::format("  {}: {}\n", checkpoint_step_name(step), problem);
    }
  }
  if (failed > 0) {
    std::cout << fmt::format("{} of {} checkpoints failed verification\n", failed, steps.size());
    return kExitFailure;
  }
  return kExitSuccess;
}

int inspect(const CkptOptions& options) {
  const auto entries = list_checkpoint_entries(options.dir);
  const auto steps = select_steps(options, entries);
  const std::int64_t step = steps.back();  // the newest, or the one asked for
  const fs::path step_dir = fs::path(options.dir) / checkpoint_step_name(step);
  CheckpointInfo info;
  try {
    info = read_checkpoint_info(step_dir);
  } catch (const IoError& error) {
    std::cerr << "lockstep ckpt: " << error.what() << "\n";
    return kExitFailure;
  }
  std::cout << fmt::format("checkpoint   {}\n", step_dir.string());
  std::cout << fmt::format("step         {}\n", info.step);
  std::cout << fmt::format("world size   {} (ranks that saved it)\n", info.world_size);
  std::cout << fmt::format("format       {} (written by lockstep {})\n", info.format_version,
                           info.library_version);
  std::cout << fmt::format("saved at     {}\n", info.wall_time);
  std::cout << fmt::format("files        {}\n", fmt::join(info.files, " "));
  std::cout << fmt::format("tensors      {}, {}\n\n", info.tensors.size(),
                           human_bytes(info.tensor_bytes));
  std::size_t width = 4;
  for (const auto& tensor : info.tensors) width = std::max(width, tensor.path.size());
  std::cout << fmt::format("{:<{}}  {:<5}  {:<20}  {:>12}  {}\n", "NAME", width, "DTYPE",
                           "GLOBAL SHAPE", "BYTES", "STORED AS");
  for (const auto& tensor : info.tensors) {
    // A sharded tensor is held by the chunks of the ranks that saved it; a
    // whole one was split into pieces, about 1/N of the bytes per rank.
    const std::string stored =
        tensor.sharded
            ? fmt::format("sharded, {} chunk{}", tensor.pieces, tensor.pieces == 1 ? "" : "s")
            : fmt::format("whole, {} piece{}", tensor.pieces, tensor.pieces == 1 ? "" : "s");
    std::cout << fmt::format("{:<{}}  {:<5}  {:<20}  {:>12}  {}\n", tensor.path, width,
                             dtype_name(tensor.dtype), shape_str(tensor.shape), tensor.bytes,
                             stored);
  }
  std::cout << "\nkey/values\n";
  if (info.values.empty()) std::cout << "  (none)\n";
  for (const auto& [name, values] : info.values.items()) {
    std::cout << fmt::format("  {}: {}\n", name, values.dump());
  }
  return kExitSuccess;
}

void add_directory(CLI::App& command, CkptOptions& options) {
  command.add_option("DIR", options.dir, "Checkpoint directory (the one holding step-<N>/)")
      ->required();
}

}  // namespace

}  // namespace lockstep::cli

int main(int argc, char** argv) {
  using namespace lockstep::cli;
  CLI::App app{
      "Checkpoints on disk: what is there, is it intact, what is inside.\n"
      "Reads only; safe while a job is saving into the directory.",
      "lockstep ckpt"};
  app.set_version_flag("--version", LOCKSTEP_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 verify found a damaged checkpoint, 2 bad input (missing "
      "directory, not a checkpoint directory, unknown step).\n"
      "Examples:\n"
      "  lockstep ckpt list run/checkpoints\n"
      "  lockstep ckpt verify run/checkpoints --step 300\n"
      "  lockstep ckpt inspect run/checkpoints");
  auto options = std::make_shared<CkptOptions>();
  int exit_code = kExitSuccess;

  CLI::App* list_command = app.add_subcommand(
      "list", "Committed steps and torn leftovers of interrupted saves, with sizes and times");
  add_directory(*list_command, *options);
  if (const char* memory = std::getenv("LOCKSTEP_CHECKPOINT_MEMORY_DIR")) {
    options->memory_dir = memory;
  }
  list_command
      ->add_option("--memory-dir", options->memory_dir,
                   "Also list this run's steps in the memory tier of this node, under this base "
                   "directory (default: LOCKSTEP_CHECKPOINT_MEMORY_DIR)")
      ->capture_default_str();
  list_command->callback([&] { exit_code = list(*options); });

  CLI::App* verify_command = app.add_subcommand(
      "verify",
      "Check every checksum (metadata, files, every tensor piece) of every committed step; "
      "exit 1 naming what failed");
  add_directory(*verify_command, *options);
  verify_command->add_option("--step", options->step, "Verify only this step");
  verify_command->callback([&] { exit_code = verify(*options); });

  CLI::App* inspect_command = app.add_subcommand(
      "inspect", "Tensors (name, dtype, shape, bytes) and metadata of one step (the newest)");
  add_directory(*inspect_command, *options);
  inspect_command->add_option("--step", options->step, "Inspect this step instead of the newest");
  inspect_command->callback([&] { exit_code = inspect(*options); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? kExitSuccess : kExitUsage;
  } catch (const lockstep::UsageError& error) {
    std::cerr << "lockstep ckpt: " << error.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& error) {
    std::cerr << "lockstep ckpt: " << error.what() << "\n";
    return kExitFailure;
  }
  return exit_code;
}
