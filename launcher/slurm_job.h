// What `lockstep run` does differently inside a Slurm allocation: it leaves
// out nodes that keep failing, and it requeues the job when Slurm warns that
// the time limit is near.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "attempt.h"
#include "mpirun_command.h"
#include "supervisor.h"

namespace lockstep::launcher {

// Counts failed attempts against the node of their first failing rank. A
// node implicated `exclude_after` times is left out of the next attempts
// (srun --exclude), which then run on the remaining nodes with
// ranks_per_node ranks each, as long as at least `min_nodes` remain.
class NodeExclusion {
 public:
  explicit NodeExclusion(const SlurmOptions& slurm) : slurm_(slurm) {}

  // Returns a line for people when the attempt changes the plan, or when a
  // node should go but --min-nodes keeps it.
  std::optional<std::string> on_failure(const AttemptRecord& record);
  // Sizes the next attempt: -N, -n and --exclude.
  void apply(LaunchPlan& plan) const;
  const std::vector<std::string>& excluded() const { return excluded_; }

 private:
  int remaining_nodes() const { return slurm_.nodes - static_cast<int>(excluded_.size()); }

  SlurmOptions slurm_;
  std::map<std::string, int> failures_;
  std::vector<std::string> excluded_;
};

// Runs `scontrol requeue JOB_ID`. Returns "" on success, else what went
// wrong (scontrol's own message when it gave one).
std::string requeue_job(const SlurmOptions& slurm);

// Where the nodes of a Slurm node list ("node[1-3],gpu7") are reached: each
// node's NodeAddr (else its NodeHostName, else its name), from `scontrol -o
// show node`. Throws IoError when scontrol fails.
std::vector<std::string> allocation_addresses(const SlurmOptions& slurm,
                                              const std::string& nodelist);

}  // namespace lockstep::launcher
