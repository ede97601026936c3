// The hosts a job may run on (a host list, or the nodes of a Slurm
// allocation), and which of them each attempt uses. A host implicated in
// `exclude_after` failed attempts, or lost (silent, or refusing preflight),
// is left out of later attempts. Each attempt then takes the hosts it needs,
// in order, from those that remain: a spare (a host the ranks did not need)
// takes a left-out host's place and the world size stays; when too few
// slots remain the world shrinks to what they hold (the program resumes from
// its checkpoint at that size); with fewer than `min_hosts` hosts the run
// stops.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "host_list.h"

namespace lockstep::launcher {

struct PoolRules {
  int ranks = 1;              // the world size asked for
  int min_hosts = 1;          // never go on with fewer hosts
  int exclude_after = 2;      // failed attempts implicating a host before it is left out
  std::string noun = "host";  // "node" under Slurm, in messages
};

struct LeftOut {
  std::string host;
  std::string why;  // "lost: ...", "implicated in 2 failed attempts", "cannot be entered: ..."
  int attempt = 0;  // 1-based: the first attempt that runs without it
};

// What one attempt runs on.
struct PoolLayout {
  std::vector<Host> hosts;   // in use, in the order of the list
  std::vector<Host> spares;  // remaining but not needed
  int ranks = 0;             // the world size of the attempt
};

class HostPool {
 public:
  // `hosts` in order of preference, each with its slots. A list with fewer
  // slots than ranks is oversubscribed: every slot then holds the same
  // number of ranks (rounded up), before and after hosts are left out.
  HostPool(std::vector<Host> hosts, PoolRules rules);

  PoolLayout layout() const;

  // A failed attempt implicates `host`; `attempt` (1-based) is the next one,
  // the first that would run without it. A `lost` host is
  // left out at once; another after `exclude_after` such attempts, unless
  // that would leave fewer than `min_hosts`. Returns a line for people when
  // the plan changes or a host stays for --min-nodes; nothing for a host the
  // pool does not know (named differently, or already left out).
  std::optional<std::string> implicate(const std::string& host, bool lost, const std::string& why,
                                       int attempt);

  // "" when an attempt can run; else why not (too few hosts remain), for
  // people.
  std::string shortfall() const;

  const std::vector<LeftOut>& left_out() const { return left_out_; }
  // The remaining hosts' names, in order.
  std::vector<std::string> remaining() const;
  // Whether `name` is one of the pool's hosts, left out or not.
  bool knows(const std::string& name) const { return find(name) != nullptr; }
  const PoolRules& rules() const { return rules_; }

 private:
  const Host* find(const std::string& name) const;
  bool is_left_out(const std::string& name) const;
  int remaining_count() const;
  std::string describe(const PoolLayout& layout) const;

  std::vector<Host> hosts_;
  PoolRules rules_;
  int ranks_per_slot_ = 1;
  std::map<std::string, int> failures_;
  std::vector<LeftOut> left_out_;
};

// Whether two names are the same host: equal, or equal up to the first
// dot ("node1" and "node1.cluster").
bool same_host(const std::string& a, const std::string& b);

}  // namespace lockstep::launcher
