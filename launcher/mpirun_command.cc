#include "mpirun_command.h"

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>

namespace lockstep::launcher {

bool oversubscribed(const LaunchPlan& plan) {
  const int slots = plan.hosts.empty() ? plan.local_cores : total_slots(plan.hosts);
  return plan.ranks > slots;
}

std::vector<std::string> mpirun_argv(const LaunchPlan& plan) {
  std::vector<std::string> argv = {plan.mpirun, "-n", std::to_string(plan.ranks)};
  if (!plan.hosts.empty()) {
    argv.insert(argv.end(), {"--host", host_list_string(plan.hosts)});
  }
  if (oversubscribed(plan)) {
    // Pinning more ranks than cores to cores makes them fight for the same
    // ones; let the kernel spread them instead.
    argv.insert(argv.end(), {"--oversubscribe", "--bind-to", "none"});
  } else if (plan.hosts.empty()) {
    // Each rank bound to its own share of this machine's hardware threads,
    // not to one core: a rank's helper threads (checkpoint copies, data
    // loading, BLAS) need the rest. Hardware threads, because that is what
    // local_cores counts.
    const int share = std::max(1, plan.local_cores / std::max(1, plan.ranks));
    argv.insert(argv.end(), {"--use-hwthread-cpus", "--map-by", fmt::format("slot:PE={}", share),
                             "--bind-to", "hwthread"});
  } else {
    // The other hosts' cores are unknown here (slots usually count GPUs):
    // no binding, as torchrun, rather than one core per rank.
    argv.insert(argv.end(), {"--bind-to", "none"});
  }
  if (plan.as_root) argv.emplace_back("--allow-run-as-root");
  // When a rank dies, mpirun stops the others with SIGTERM and waits this
  // long before SIGKILL (1 s by default, 2 s of recovery in all): they
  // wait for the dead rank inside a collective and have nothing to save,
  // so they go at once. A stop that lets ranks checkpoint signals them
  // directly, not through mpirun. A value the user set is kept.
  if (std::getenv("OMPI_MCA_odls_base_sigkill_timeout") == nullptr) {
    argv.insert(argv.end(), {"--mca", "odls_base_sigkill_timeout", "0"});
  }
  argv.emplace_back("--tag-output");
  for (const auto& [name, value] : plan.environment) argv.insert(argv.end(), {"-x", name});
  argv.insert(argv.end(), plan.program.begin(), plan.program.end());
  return argv;
}

std::vector<std::string> srun_argv(const LaunchPlan& plan) {
  std::vector<std::string> argv = {plan.srun, "--mpi=pmix", "--kill-on-bad-exit=1", "--label",
                                   "--unbuffered"};
  if (plan.nodes > 0) argv.insert(argv.end(), {"-N", std::to_string(plan.nodes)});
  if (plan.ranks > 0) argv.insert(argv.end(), {"-n", std::to_string(plan.ranks)});
  if (!plan.excluded_nodes.empty()) {
    std::string nodes;
    for (const std::string& node : plan.excluded_nodes) nodes += (nodes.empty() ? "" : ",") + node;
    argv.push_back("--exclude=" + nodes);
  }
  if (plan.overlap) argv.push_back("--overlap");
  argv.insert(argv.end(), plan.program.begin(), plan.program.end());
  return argv;
}

std::vector<std::string> launch_argv(const LaunchPlan& plan) {
  return plan.starter == Starter::kSrun ? srun_argv(plan) : mpirun_argv(plan);
}

std::string shell_quote(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& argument : argv) {
    if (!line.empty()) line += ' ';
    const bool plain = !argument.empty() && argument.find_first_not_of(
                                                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"
                                                "XYZ0123456789-_./:=,+@%") == std::string::npos;
    if (plain) {
      line += argument;
    } else {
      line += '\'';
      for (const char c : argument) {
        if (c == '\'') {
          line += "'\\''";
        } else {
          line += c;
        }
      }
      line += '\'';
    }
  }
  return line;
}

}  // namespace lockstep::launcher
