// Runtime: one per process. Initialises MPI, learns the topology, binds a
// device, installs signal handlers and resolves the configuration. On normal
// exit it finalises MPI; an uncaught error on any rank aborts the whole job so
// that no rank waits forever in a collective.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/config.h"
#include "lockstep/heartbeat.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/node_relay.h"
#include "lockstep/progress.h"
#include "lockstep/signals.h"
#include "lockstep/tensor.h"
#include "lockstep/trace.h"

namespace lockstep {

class Runtime {
 public:
  // Initialises MPI with MPI_THREAD_MULTIPLE (or adopts an MPI the caller
  // already initialised), removes --lockstep-* flags from argv, and sets
  // everything up. With --lockstep-help, rank 0 prints every setting and the
  // program exits 0. Throws BackendError when MPI cannot provide
  // MPI_THREAD_MULTIPLE, ConfigError on a bad configuration value, UsageError
  // when there are more ranks on a node than GPUs to bind. Collective: every
  // rank of MPI_COMM_WORLD must construct one.
  Runtime(int& argc, char**& argv);
  // For programs without command-line arguments (configuration from the
  // environment only).
  Runtime();

  // One Runtime owns the process-wide MPI state: not copyable, not movable.
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Finalises MPI when this Runtime initialised it. When the destructor runs
  // because an exception is propagating, it aborts the job instead: the
  // other ranks may be waiting for this one in a collective.
  ~Runtime();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  int node_index() const { return node_index_; }
  int node_count() const { return node_count_; }
  // This node's name: SLURMD_NODENAME under Slurm, else the host name.
  const std::string& hostname() const { return hostname_; }
  // The GPU bound to this rank (local rank i -> GPU i), or the CPU.
  Device device() const { return device_; }
  const std::filesystem::path& run_dir() const { return run_dir_; }
  // How many times the job was restarted before this attempt: from
  // LOCKSTEP_RESTART_COUNT (set by `lockstep run`), else SLURM_RESTART_COUNT.
  std::int64_t restart_count() const { return restart_count_; }
  const Config& config() const { return config_; }

  // A private duplicate of MPI_COMM_WORLD for the caller's collectives.
  MPI_Comm comm() const { return world_.get(); }
  // The ranks on this node.
  MPI_Comm node_comm() const { return node_.get(); }

  // Collective decision: should every rank checkpoint after step `step`
  // (0-based index of the step just finished)? True on the configured
  // interval (LOCKSTEP_CHECKPOINT_EVERY), or when any rank received SIGUSR1,
  // SIGTERM or SIGINT since the last decision. Every rank returns the same
  // answer. Costs one small all-reduce on a private communicator; every rank
  // must call it at the same points.
  bool should_checkpoint(std::int64_t step);
  // Collective decision: should every rank stop now (SIGTERM or SIGINT on any
  // rank)? Reuses the answer of a should_checkpoint() call made since the
  // last should_stop(); otherwise takes a decision of its own (one small
  // all-reduce). Every rank returns the same answer.
  bool should_stop();

  // Takes the decision for `step` explicitly: both answers, one all-reduce.
  Decision decide(std::int64_t step);

  // Reports that step `step` (0-based) finished, with user metrics such as
  // {{"loss", 0.25}}, to the launcher when started by `lockstep run`; a no-op
  // otherwise. Cheap and never blocks; call it once per step on every rank.
  void heartbeat(std::int64_t step, const std::map<std::string, double>& metrics = {});
  // Reports a checkpoint of step `step` that stalled training for
  // `stall_seconds`; the launcher counts it in the goodput summary.
  void report_checkpoint(std::int64_t step, double stall_seconds);
  // Tells the launcher, before this attempt fails, what went wrong and
  // which ranks are to blame (e.g. silent data corruption found by a
  // ReplicaCheck), so that its report names the cause rather than the
  // abort that follows. A no-op outside `lockstep run`.
  void report_fault(const std::string& what, const std::vector<int>& ranks);

  // Logs `message` and terminates every rank of the job with `exit_code`.
  [[noreturn]] void abort(const std::string& message, int exit_code = 1) const;

 private:
  void init_mpi(int* argc, char*** argv);
  // --lockstep-help: rank 0 prints every setting, then the program exits 0.
  void print_help_if_asked(int argc, char** argv);
  void init_topology();
  void bind_device();
  // Says where the flight recorder dumps, and starts this rank's timeline
  // when LOCKSTEP_TRACE asks for one; a file that cannot be created is a
  // warning, not an error.
  void start_trace();
  // When LOCKSTEP_HEARTBEAT_RELAY asks for one, the node's first rank
  // starts the node's relay; returns its address on every rank of the node
  // ("" for none). Collective over the node.
  std::string start_relay(const std::string& launcher);
  // Collective: whether every rank started (`failed`: this one did not,
  // and has said why). Every rank waits here for all to have tried, so
  // that none stops before the others have said what went wrong; a rank
  // that started throws IoError when another did not.
  void agree_on_start(bool failed);
  // One element all-reduced over the control communicator, recorded as
  // `what` in its progress (for hang analysis and the flight recorder).
  void control_allreduce(const void* send, void* receive, MPI_Datatype type, MPI_Op op,
                         std::string_view what);
  std::chrono::milliseconds connect_timeout() const;

  bool owns_mpi_ = false;
  int uncaught_at_start_ = 0;
  Config config_;
  MpiComm world_;
  MpiComm node_;
  MpiComm control_;  // the start-up check and decisions only, never user traffic
  // The decisions' progress, for the launcher's hang analysis and the
  // flight recorder ("runtime 1").
  std::unique_ptr<CollectiveProgress> control_progress_;
  std::uint64_t decisions_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  int node_index_ = 0;
  int node_count_ = 1;
  std::string hostname_;
  Device device_;
  std::filesystem::path run_dir_;
  std::int64_t restart_count_ = 0;
  std::int64_t checkpoint_every_ = 0;
  bool stop_pending_ = false;  // answer of the last decide() not yet read
  bool stop_known_ = false;    // whether stop_pending_ is fresh
  // This node's heartbeat relay, in its first rank only; declared before
  // the channel, which must close first.
  std::unique_ptr<NodeRelay> relay_;
  HeartbeatClient heartbeat_;
  std::chrono::steady_clock::time_point last_heartbeat_ = std::chrono::steady_clock::now();
  // For the compute time of a step: blocked time (lockstep/blocked_time.h)
  // at the last heartbeat, and checkpoint stalls reported since.
  std::int64_t blocked_at_heartbeat_ns_ = 0;
  double stalled_since_heartbeat_ = 0;
  // LOCKSTEP_INJECT_SLOW on this rank (1: not slowed), and the delay added
  // after the last heartbeat.
  double slow_factor_ = 1;
  double injected_delay_ = 0;
  // This rank's timeline (LOCKSTEP_TRACE); null when off. A step's span
  // runs from the previous heartbeat (or the start) to its own.
  std::unique_ptr<trace::TraceWriter> trace_;
  std::int64_t last_step_ns_ = trace::now_ns();
};

}  // namespace lockstep
