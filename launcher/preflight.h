// Preflight: before an attempt starts on a host list, every other host is
// entered the way mpirun will enter it (Open MPI's rsh agent), all at once
// and each within a bound, so that a host that cannot be reached is named
// with the agent's own error within seconds, instead of an Open MPI error
// page after mpirun gave up on it.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace lockstep::launcher {

struct HostProblem {
  std::string host;
  std::string problem;  // the agent's error, or that it did not answer in time
};

// The agent mpirun uses to enter a host, as words: the first alternative of
// OMPI_MCA_plm_rsh_agent ("ssh : rsh" is Open MPI's default), with ssh told
// never to prompt and to give up connecting after `timeout`.
std::vector<std::string> rsh_agent(std::chrono::milliseconds timeout);

// Runs `agent HOST true` for every host, in parallel; returns the hosts that
// could not be entered within `timeout`, in the order given.
std::vector<HostProblem> preflight_hosts(const std::vector<std::string>& hosts,
                                         const std::vector<std::string>& agent,
                                         std::chrono::milliseconds timeout);

}  // namespace lockstep::launcher
