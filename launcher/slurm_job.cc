#include "slurm_job.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lockstep/error.h"
#include "process.h"

namespace lockstep::launcher {

std::optional<std::string> NodeExclusion::on_failure(const AttemptRecord& record) {
  const std::string& node = record.failed_host;
  if (node.empty() || std::ranges::find(excluded_, node) != excluded_.end()) return std::nullopt;
  const int count = ++failures_[node];
  if (count < slurm_.exclude_after) return std::nullopt;
  if (remaining_nodes() - 1 < slurm_.min_nodes) {
    return fmt::format(
        "lockstep: node {} is implicated in {} failed attempts, but leaving it out would leave "
        "{} node(s), fewer than --min-nodes {}; it stays",
        node, count, remaining_nodes() - 1, slurm_.min_nodes);
  }
  excluded_.push_back(node);
  return fmt::format(
      "lockstep: node {} is implicated in {} failed attempts: the next attempts leave it out "
      "and run {} ranks on {} node(s); the program resumes from its checkpoint at that size",
      node, count, slurm_.ranks_per_node * remaining_nodes(), remaining_nodes());
}

void NodeExclusion::apply(LaunchPlan& plan) const {
  if (excluded_.empty()) return;
  plan.excluded_nodes = excluded_;
  plan.nodes = remaining_nodes();
  plan.ranks = slurm_.ranks_per_node * remaining_nodes();
}

namespace {

// Runs `scontrol ARGS...` for at most 60 s. Returns "" on success, else what
// went wrong (scontrol's own message when it gave one); its standard output
// goes to `output`.
std::string run_scontrol(const SlurmOptions& slurm, const std::vector<std::string>& args,
                         std::string& output) {
  std::vector<std::string> argv{slurm.scontrol};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult result = run_bounded(argv, std::chrono::seconds(60));
  output = std::move(result.out);
  return result.problem;
}

}  // namespace

std::string requeue_job(const SlurmOptions& slurm) {
  std::string output;
  return run_scontrol(slurm, {"requeue", slurm.job_id}, output);
}

std::vector<std::string> allocation_addresses(const SlurmOptions& slurm,
                                              const std::string& nodelist) {
  if (nodelist.empty()) return {};
  std::string output;
  if (const std::string problem = run_scontrol(slurm, {"-o", "show", "node", nodelist}, output);
      !problem.empty()) {
    throw IoError(
        fmt::format("cannot look up the nodes of the allocation ({}): {}", nodelist, problem));
  }
  // One line per node: "NodeName=n1 Arch=... NodeAddr=10.0.0.1 NodeHostName=n1 ...".
  std::vector<std::string> addresses;
  std::size_t start = 0;
  while (start < output.size()) {
    std::size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    const std::string line = " " + output.substr(start, end - start);
    for (const char* key : {" NodeAddr=", " NodeHostName=", " NodeName="}) {
      const std::size_t at = line.find(key);
      if (at == std::string::npos) continue;
      const std::size_t from = at + std::strlen(key);
      const std::string value = line.substr(from, line.find(' ', from) - from);
      if (!value.empty() && value != "(null)") {
        addresses.push_back(value);
        break;
      }
    }
    start = end + 1;
  }
  return addresses;
}

}  // namespace lockstep::launcher
