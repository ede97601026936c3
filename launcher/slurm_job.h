// What `lockstep run` asks of Slurm inside an allocation: the nodes and
// their addresses, and a requeue when Slurm warns that the time limit is
// near. (Leaving out failing nodes is the HostPool's work, as for a host
// list.)
#pragma once

#include <string>
#include <vector>

#include "supervisor.h"

namespace lockstep::launcher {

// Runs `scontrol requeue JOB_ID`. Returns "" on success, else what went
// wrong (scontrol's own message when it gave one).
std::string requeue_job(const SlurmOptions& slurm);

// A node of the allocation: its name (what SLURMD_NODENAME says on it) and
// where it is reached.
struct SlurmNode {
  std::string name;
  std::string address;  // NodeAddr, else NodeHostName, else the name
};

// The nodes of a Slurm node list ("node[1-3],gpu7"), in Slurm's order, from
// `scontrol -o show node`. Throws IoError when scontrol fails.
std::vector<SlurmNode> allocation_nodes(const SlurmOptions& slurm, const std::string& nodelist);

// A node Slurm itself counts out: its state is DOWN, FAIL or NOT_RESPONDING.
struct UnusableNode {
  std::string name;
  std::string state;  // as scontrol shows it: "DOWN+NOT_RESPONDING"
};

// The nodes among `names` that Slurm reports unusable, in the order given
// (Slurm's view of the nodes before an attempt, as the rsh agent's is for a
// host list; a draining node still runs the job it has). Throws IoError
// when scontrol fails.
std::vector<UnusableNode> unusable_nodes(const SlurmOptions& slurm,
                                         const std::vector<std::string>& names);

}  // namespace lockstep::launcher
