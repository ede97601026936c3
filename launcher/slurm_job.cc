#include "slurm_job.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lockstep/error.h"
#include "process.h"

namespace lockstep::launcher {

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

// `scontrol -o show node` prints one line per node: "NodeName=n1 Arch=...
// NodeAddr=10.0.0.1 NodeHostName=n1 ... State=IDLE ...". Each line comes
// back with a blank in front, so that " Key=" finds the first key too.
std::vector<std::string> node_lines(const std::string& output) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < output.size()) {
    std::size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    lines.push_back(" " + output.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// The value of " Key=" (`key`) in a node line, "" when absent or "(null)".
std::string field(const std::string& line, const char* key) {
  const std::size_t at = line.find(key);
  if (at == std::string::npos) return std::string();
  const std::size_t from = at + std::strlen(key);
  std::string value = line.substr(from, line.find(' ', from) - from);
  return value == "(null)" ? std::string() : value;
}

}  // namespace

std::vector<UnusableNode> unusable_nodes(const SlurmOptions& slurm,
                                         const std::vector<std::string>& names) {
  if (names.empty()) return {};
  std::string list;
  for (const std::string& name : names) list += (list.empty() ? "" : ",") + name;
  std::string output;
  if (const std::string problem = run_scontrol(slurm, {"-o", "show", "node", list}, output);
      !problem.empty()) {
    throw IoError(fmt::format("cannot ask Slurm about nodes {}: {}", list, problem));
  }
  std::vector<UnusableNode> unusable;
  for (const std::string& line : node_lines(output)) {
    const std::string name = field(line, " NodeName=");
    const std::string state = field(line, " State=");
    if (name.empty() || std::ranges::find(names, name) == names.end()) continue;
    // Flags are joined with '+'; a '*' after the state also means "not
    // responding" in some Slurm versions.
    for (const char* bad : {"DOWN", "FAIL", "NOT_RESPONDING", "*"}) {
      if (state.find(bad) != std::string::npos) {
        unusable.push_back({name, state});
        break;
      }
    }
  }
  std::vector<UnusableNode> ordered;
  for (const std::string& name : names) {
    for (const UnusableNode& node : unusable) {
      if (node.name == name) ordered.push_back(node);
    }
  }
  return ordered;
}

std::string requeue_job(const SlurmOptions& slurm) {
  std::string output;
  return run_scontrol(slurm, {"requeue", slurm.job_id}, output);
}

std::vector<SlurmNode> allocation_nodes(const SlurmOptions& slurm, const std::string& nodelist) {
  if (nodelist.empty()) return {};
  std::string output;
  if (const std::string problem = run_scontrol(slurm, {"-o", "show", "node", nodelist}, output);
      !problem.empty()) {
    throw IoError(
        fmt::format("cannot look up the nodes of the allocation ({}): {}", nodelist, problem));
  }
  std::vector<SlurmNode> nodes;
  for (const std::string& line : node_lines(output)) {
    SlurmNode node;
    node.name = field(line, " NodeName=");
    if (node.name.empty()) continue;
    node.address = field(line, " NodeAddr=");
    if (node.address.empty()) node.address = field(line, " NodeHostName=");
    if (node.address.empty()) node.address = node.name;
    nodes.push_back(std::move(node));
  }
  return nodes;
}

}  // namespace lockstep::launcher
