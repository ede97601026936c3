// The command line of one attempt of a job: mpirun outside Slurm, srun
// inside an allocation.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "host_list.h"

namespace lockstep::launcher {

enum class Starter { kMpirun, kSrun };

struct LaunchPlan {
  Starter starter = Starter::kMpirun;
  int ranks = 1;            // with srun, 0 takes the tasks of the allocation
  std::vector<Host> hosts;  // empty: all ranks on this machine
  int local_cores = 1;      // cores of this machine, for oversubscription
  bool as_root = false;
  std::string mpirun = "mpirun";
  std::string srun = "srun";
  int nodes = 0;                            // srun -N; 0 takes the allocation's
  std::vector<std::string> excluded_nodes;  // srun --exclude
  // srun --overlap: share CPUs with an earlier step that Slurm has not
  // finished yet (one that spanned a lost node stays until the node is
  // DOWN, and would hold the restart back: "Requested nodes are busy").
  bool overlap = false;
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

// srun argv inside a Slurm allocation: --mpi=pmix (Open MPI starts under
// srun only with PMIx), --kill-on-bad-exit=1 (one failed task ends the
// step), --label so that every line names its task, --unbuffered, the task
// count when given, the nodes to leave out, and --overlap when asked.
std::vector<std::string> srun_argv(const LaunchPlan& plan);

// mpirun_argv or srun_argv, as the plan's starter says.
std::vector<std::string> launch_argv(const LaunchPlan& plan);

// The argv as one shell-quoted line, for --dry-run and logs.
std::string shell_quote(const std::vector<std::string>& argv);

}  // namespace lockstep::launcher
