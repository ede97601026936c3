// Supervisor: runs a job attempt after attempt until it succeeds, is
// stopped, or runs out of restarts. It watches exits and heartbeats, stops
// the whole job on the first failure or hang, reports the root cause, and
// accounts for where the wall time went.
#pragma once

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "metrics_server.h"
#include "monitor_address.h"
#include "mpirun_command.h"
#include "straggler.h"

namespace lockstep::launcher {

// A failure the launcher injects on purpose (demo, chaos tests): send
// `signal` to `rank` once rank 0 has reported step `step`, or, with
// `at_checkpoint`, once it has reported a checkpoint of step `step` or later
// (an asynchronous save is then still being written).
struct InjectedFailure {
  int rank = 0;
  std::int64_t step = 0;
  int signal = SIGKILL;
  bool at_checkpoint = false;
  bool fired = false;
};

// Parses "RANK:STEP[:SIGNAL]"; a STEP ending in 'c' ("2:100c") waits for a
// checkpoint. SIGNAL: KILL, TERM, STOP, SEGV, ABRT, INT, USR1 or a number.
// Throws UsageError.
InjectedFailure parse_injected_failure(const std::string& text);

// What the launcher knows and may do inside a Slurm allocation.
struct SlurmOptions {
  std::string job_id;      // SLURM_JOB_ID; empty outside Slurm
  int nodes = 1;           // nodes of the allocation
  int ranks_per_node = 1;  // to size an attempt after excluding nodes
  // The allocation's node names in Slurm's order (empty when it has one
  // node): what the launcher may leave out.
  std::vector<std::string> node_names;
  bool requeue = true;    // `scontrol requeue` after a stop asked by SIGUSR1
  int restart_count = 0;  // SLURM_RESTART_COUNT: requeues before this start
  std::string scontrol = "scontrol";
};

struct SupervisorOptions {
  LaunchPlan plan;
  std::filesystem::path run_dir;
  int max_restarts = 3;
  double hang_timeout = 300;  // seconds without any heartbeat, once steps began
  // Seconds from an attempt's start to its first step heartbeat (start-up:
  // MPI and NCCL, data, the restore) before the job counts as hung. A
  // program no rank of which ever connects is not timed when unmonitored
  // runs are allowed.
  double startup_timeout = 1800;
  double grace = 10;  // seconds between SIGTERM and SIGKILL
  std::int64_t total_steps = 0;
  double status_interval = 10;  // seconds between plain status lines
  bool multi_host = false;
  MonitorEndpoint monitor;  // where the ranks reach the launcher
  // The hosts of a host list other than this one: entered (preflight)
  // before every attempt that mpirun starts.
  std::vector<std::string> remote_hosts;
  // Ranks that cannot reach the launcher train on unwatched, and a run no
  // rank reported to may end as a success.
  bool allow_unmonitored = false;
  // A host (or node) implicated in this many failed attempts is left out of
  // later ones; a lost one at once. Never fewer than min_hosts remain.
  int exclude_after = 2;
  int min_hosts = 1;
  // Seconds without a message from any rank of another host (ranks say
  // they are alive every second) before that host counts as lost; 0: never.
  double host_timeout = 4;
  std::vector<InjectedFailure> injected;
  StragglerOptions stragglers;
  // Where /metrics is served while the run lasts; null: nowhere.
  std::shared_ptr<MetricsServer> metrics;
  SlurmOptions slurm;  // used when plan.starter is Starter::kSrun
};

// Exit codes of `lockstep run` (also in README.md).
enum RunExit : int {
  kRunSuccess = 0,
  kRunFailed = 1,   // failed and not recovered (restarts exhausted or a bug)
  kRunUsage = 2,    // bad command line; nothing was started
  kRunStopped = 3,  // stopped on request after a checkpoint; run again to resume
                    // (inside Slurm, after SIGUSR1, the job was requeued)
};

// Runs the job; returns a RunExit code. Writes <run_dir>/attempts.jsonl and
// <run_dir>/summary.json.
int supervise(SupervisorOptions options);

}  // namespace lockstep::launcher
