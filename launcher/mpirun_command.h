// The mpirun command line of one attempt of a job.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "host_list.h"

namespace lockstep::launcher {

struct LaunchPlan {
  int ranks = 1;
  std::vector<Host> hosts;  // empty: all ranks on this machine
  int local_cores = 1;      // cores of this machine, for oversubscription
  bool as_root = false;
  std::string mpirun = "mpirun";
  std::vector<std::string> program;  // trainer and its arguments
  // Variables the ranks get (exported with -x NAME, values travel in the
  // environment of mpirun so that secrets never appear on a command line).
  std::map<std::string, std::string> environment;
};

// True when the ranks outnumber the slots (or local cores).
bool oversubscribed(const LaunchPlan& plan);

// mpirun argv: ranks, hosts, binding (none when oversubscribed, cores
// otherwise), --oversubscribe, --allow-run-as-root as root, --tag-output so
// that every line names its rank, -x for each variable, then the program.
std::vector<std::string> mpirun_argv(const LaunchPlan& plan);

// The argv as one shell-quoted line, for --dry-run and logs.
std::string shell_quote(const std::vector<std::string>& argv);

}  // namespace lockstep::launcher
