#include "slurm_job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <fmt/format.h>

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

std::string requeue_job(const SlurmOptions& slurm) {
  std::optional<ChildProcess> child;
  try {
    child.emplace(ChildProcess::start({slurm.scontrol, "requeue", slurm.job_id}, {}));
  } catch (const Error& error) {
    return error.what();
  }
  std::string said;
  char chunk[4096];
  for (const int fd : {child->stdout_fd(), child->stderr_fd()}) {
    ssize_t got = 0;
    while ((got = read(fd, chunk, sizeof(chunk))) > 0)
      said.append(chunk, static_cast<std::size_t>(got));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::optional<ExitStatus> status;
  while (!(status = child->poll()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
  if (!status) {
    child->stop_all(std::chrono::milliseconds(1000));
    return fmt::format("{} requeue {} did not finish within 60 s", slurm.scontrol, slurm.job_id);
  }
  if (!status->success()) {
    return fmt::format("{} requeue {} ended with {}{}{}", slurm.scontrol, slurm.job_id,
                       status->str(), said.empty() ? "" : ": ", said);
  }
  return "";
}

}  // namespace lockstep::launcher
