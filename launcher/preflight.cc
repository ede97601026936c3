#include "preflight.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "process.h"

namespace lockstep::launcher {

std::vector<std::string> rsh_agent(std::chrono::milliseconds timeout) {
  const char* configured = std::getenv("OMPI_MCA_plm_rsh_agent");
  std::string text = configured != nullptr && *configured != '\0' ? configured : "ssh : rsh";
  text = text.substr(0, text.find(':'));
  std::istringstream words(text);
  std::vector<std::string> agent;
  for (std::string word; words >> word;) agent.push_back(word);
  if (agent.empty()) agent.emplace_back("ssh");
  const std::string program = agent.front().substr(agent.front().rfind('/') + 1);
  if (program == "ssh") {
    const auto seconds = std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
    agent.insert(agent.end(),
                 {"-o", "BatchMode=yes", "-o", fmt::format("ConnectTimeout={}", seconds)});
  }
  return agent;
}

std::vector<HostProblem> preflight_hosts(const std::vector<std::string>& hosts,
                                         const std::vector<std::string>& agent,
                                         std::chrono::milliseconds timeout) {
  std::vector<std::string> problems(hosts.size());
  // A thread per host, at most kParallel at a time: each mostly waits.
  constexpr std::size_t kParallel = 64;
  for (std::size_t first = 0; first < hosts.size(); first += kParallel) {
    std::vector<std::jthread> checks;
    for (std::size_t i = first; i < std::min(hosts.size(), first + kParallel); ++i) {
      checks.emplace_back([&, i] {
        std::vector<std::string> argv = agent;
        argv.push_back(hosts[i]);
        argv.emplace_back("true");
        problems[i] = run_bounded(argv, timeout).problem;
      });
    }
  }
  std::vector<HostProblem> failed;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    if (!problems[i].empty()) failed.push_back({hosts[i], problems[i]});
  }
  return failed;
}

}  // namespace lockstep::launcher
