// The one table of lockstep's configuration knobs. Adding a knob here makes
// it parseable from its LOCKSTEP_* variable and --lockstep-* flag, and lists
// it in `lockstep config` and docs/CONFIG.md.
#include "lockstep/knobs.h"

#include <array>
#include <string_view>

namespace lockstep {
namespace knobs {

namespace {
constexpr std::array<std::string_view, 6> kLogLevels = {"trace", "debug", "info",
                                                        "warn",  "error", "off"};
constexpr std::array<std::string_view, 3> kDevices = {"auto", "cpu", "cuda"};
constexpr std::array<std::string_view, 3> kTraceModes = {"auto", "on", "off"};
constexpr double kMaxSteps = 1e15;
}  // namespace

const Knob<std::string> log_level{{
    .name = "log_level",
    .env = "LOCKSTEP_LOG_LEVEL",
    .type = KnobType::kEnum,
    .default_value = "info",
    .doc = "Least severe message that is printed.",
    .choices = kLogLevels,
}};

const Knob<std::string> run_dir{{
    .name = "run_dir",
    .env = "LOCKSTEP_RUN_DIR",
    .type = KnobType::kPath,
    .default_value = "lockstep-run",
    .doc = "Directory for this run's checkpoints, logs and reports; relative paths start at "
           "the working directory. Created when missing (never writable by every user); one that "
           "another local user could tamper with is refused.",
}};

const Knob<std::string> device{{
    .name = "device",
    .env = "LOCKSTEP_DEVICE",
    .type = KnobType::kEnum,
    .default_value = "auto",
    .doc = "Where tensors live: 'auto' binds local rank i to GPU i when GPUs are visible and "
           "uses the CPU otherwise; 'cuda' insists on a GPU; 'cpu' never uses one.",
    .choices = kDevices,
}};

const Knob<std::int64_t> checkpoint_every{{
    .name = "checkpoint_every",
    .env = "LOCKSTEP_CHECKPOINT_EVERY",
    .type = KnobType::kInt,
    .default_value = "0",
    .doc = "Checkpoint after every N-th step; 0 checkpoints only when a signal asks for it.",
    .min = 0,
    .max = kMaxSteps,
}};

const Knob<bool> handle_signals{{
    .name = "handle_signals",
    .env = "LOCKSTEP_HANDLE_SIGNALS",
    .type = KnobType::kBool,
    .default_value = "true",
    .doc = "Turn SIGUSR1 into 'checkpoint now' and SIGTERM/SIGINT/SIGUSR2 into 'checkpoint and "
           "stop'. Set to false when the training program handles these signals itself.",
}};

const Knob<std::int64_t> restart_count{{
    .name = "restart_count",
    .env = "LOCKSTEP_RESTART_COUNT",
    .type = KnobType::kInt,
    .default_value = "0",
    .doc = "How many times this job was restarted before the current attempt. When unset, "
           "SLURM_RESTART_COUNT is used.",
    .min = 0,
    .max = 1e9,
    .set_by_launcher = true,
}};

const Knob<double> collective_timeout{{
    .name = "collective_timeout",
    .env = "LOCKSTEP_COLLECTIVE_TIMEOUT",
    .type = KnobType::kFloat,
    .default_value = "600",
    .doc = "Seconds a collective may take before the watchdog reports which ranks are behind "
           "and aborts the job so that it can be restarted.",
    .min = 0.001,
    .max = 1e7,
}};

const Knob<std::string> monitor_address{{
    .name = "monitor_address",
    .env = "LOCKSTEP_MONITOR_ADDRESS",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "host:port of the launcher that receives heartbeats; empty when not started by "
           "`lockstep run`.",
    .set_by_launcher = true,
}};

const Knob<std::string> monitor_token{{
    .name = "monitor_token",
    .env = "LOCKSTEP_MONITOR_TOKEN",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "Per-run secret that authenticates heartbeats to the launcher.",
    .set_by_launcher = true,
}};

const Knob<std::string> launcher_address{{
    .name = "launcher_address",
    .env = "LOCKSTEP_LAUNCHER_ADDRESS",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "Read by `lockstep run` (its --monitor-address): the host name, IPv4 address or "
           "interface of the launcher's host that ranks on other hosts connect to. Empty: the "
           "address of the interface that routes to the run's other hosts.",
}};

const Knob<double> launcher_connect_timeout{{
    .name = "launcher_connect_timeout",
    .env = "LOCKSTEP_LAUNCHER_CONNECT_TIMEOUT",
    .type = KnobType::kFloat,
    .default_value = "10",
    .doc = "Seconds a rank started by `lockstep run` keeps trying to reach its launcher before "
           "it stops with the reason (the name does not resolve, the connection is refused, no "
           "answer).",
    .min = 0.1,
    .max = 3600,
}};

const Knob<bool> allow_unmonitored{{
    .name = "allow_unmonitored",
    .env = "LOCKSTEP_ALLOW_UNMONITORED",
    .type = KnobType::kBool,
    .default_value = "false",
    .doc = "Set by `lockstep run --allow-unmonitored`: a rank that cannot reach its launcher "
           "trains on unwatched instead of stopping.",
    .set_by_launcher = true,
}};

const Knob<double> launcher_loss_grace{{
    .name = "launcher_loss_grace",
    .env = "LOCKSTEP_LAUNCHER_LOSS_GRACE",
    .type = KnobType::kFloat,
    .default_value = "5",
    .doc = "Seconds a rank started by `lockstep run` goes on after losing its launcher (the "
           "launcher's process died, or its host is unreachable): it is asked to checkpoint "
           "and stop at once, and exits when this time is up.",
    .min = 0,
    .max = 3600,
}};

const Knob<double> host_timeout{{
    .name = "host_timeout",
    .env = "LOCKSTEP_HOST_TIMEOUT",
    .type = KnobType::kFloat,
    .default_value = "4",
    .doc = "Read by `lockstep run` (its --host-timeout): seconds without a message from any rank "
           "of another host (each rank says it is alive every second) before that host counts "
           "as lost; the job is then restarted without it. 0 turns the check off.",
    .min = 0,
    .max = 3600,
}};

const Knob<std::string> trace{{
    .name = "trace",
    .env = "LOCKSTEP_TRACE",
    .type = KnobType::kEnum,
    .default_value = "auto",
    .doc = "Record this rank's timeline (steps, gradient buckets, collectives, checkpoint "
           "phases) for `lockstep trace RUN_DIR`: 'auto' when started by `lockstep run`, 'on' "
           "always (into <run dir>/trace/local/), 'off' never. Costs a few hundred nanoseconds "
           "per span and 352 KiB per thread that records.",
    .choices = kTraceModes,
}};

const Knob<std::string> heartbeat_relay{{
    .name = "heartbeat_relay",
    .env = "LOCKSTEP_HEARTBEAT_RELAY",
    .type = KnobType::kEnum,
    .default_value = "auto",
    .doc = "How the ranks of a node reach `lockstep run`: 'on' through one relay in the node's "
           "first rank (one connection and one message a second per node to the launcher), "
           "'off' each rank on its own connection, 'auto' through the relay when the job spans "
           "several nodes.",
    .choices = kTraceModes,
}};

const Knob<std::string> trace_dir{{
    .name = "trace_dir",
    .env = "LOCKSTEP_TRACE_DIR",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "The directory of this run's timelines and flight records, one per launcher "
           "start (<run dir>/trace/<start time>-<pid>/).",
    .set_by_launcher = true,
}};

const Knob<std::int64_t> trace_max_mb{{
    .name = "trace_max_mb",
    .env = "LOCKSTEP_TRACE_MAX_MB",
    .type = KnobType::kInt,
    .default_value = "256",
    .doc = "Size at which a rank's timeline file of one attempt stops growing; what comes "
           "after is not recorded (the file says so).",
    .min = 1,
    .max = 1 << 20,
}};

const Knob<std::int64_t> flight_records{{
    .name = "flight_records",
    .env = "LOCKSTEP_FLIGHT_RECORDS",
    .type = KnobType::kInt,
    .default_value = "2000",
    .doc = "Collectives each communicator remembers (sequence number, operation, bytes, "
           "dtype, queued/started/done and when) for the flight recorder, which writes them "
           "next to the timeline when a watchdog fires, the rank stops on an error, or the "
           "launcher finds the job hung; 0 remembers none.",
    .min = 0,
    .max = 1'000'000,
}};

// collectives

const Knob<std::int64_t> replica_check_every{{
    .name = "replica_check_every",
    .env = "LOCKSTEP_REPLICA_CHECK_EVERY",
    .type = KnobType::kInt,
    .default_value = "100",
    .doc = "Compare a hash of the replicated parameters across ranks every N steps, and before "
           "every checkpoint, to catch silent data corruption (a ReplicaCheck in the training "
           "loop); 0 compares only before checkpoints.",
    .min = 0,
    .max = kMaxSteps,
}};

const Knob<std::string> inject_bitflip{{
    .name = "inject_bitflip",
    .env = "LOCKSTEP_INJECT_BITFLIP",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "Testing: RANK:STEP flips one bit of that rank's parameters after that step (first "
           "attempt only), to see the replica check catch it. Set by `lockstep run "
           "--inject-bitflip`.",
}};

const Knob<std::string> inject_slow{{
    .name = "inject_slow",
    .env = "LOCKSTEP_INJECT_SLOW",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "Testing: RANK:FACTOR makes that rank compute FACTOR times as long per step (it "
           "sleeps after each heartbeat), to see the launcher name it as a straggler. Set by "
           "`lockstep run --inject-slow`.",
}};

const Knob<double> mpi_segment_mb{{
    .name = "mpi_segment_mb",
    .env = "LOCKSTEP_MPI_SEGMENT_MB",
    .type = KnobType::kFloat,
    .default_value = "4",
    .doc = "The MPI backend splits broadcasts, and all-reduces under 1 MiB, of host tensors into "
           "pieces of at most this many MiB (larger all-reduces run as lockstep's own pipelined "
           "ring); Open MPI moves one very large message several times slower per byte than a "
           "few medium ones.",
    .min = 0.001,
    .max = 1024,
}};

// checkpoint

namespace {
constexpr std::array<std::string_view, 3> kCheckpointPolicies = {"steps", "seconds", "auto"};
}  // namespace

const Knob<std::string> checkpoint_dir{{
    .name = "checkpoint_dir",
    .env = "LOCKSTEP_CHECKPOINT_DIR",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "Where checkpoint_options() puts the step-<N>/ directories; empty means "
           "<run_dir>/checkpoints.",
}};

const Knob<std::int64_t> checkpoint_keep{{
    .name = "checkpoint_keep",
    .env = "LOCKSTEP_CHECKPOINT_KEEP",
    .type = KnobType::kInt,
    .default_value = "3",
    .doc = "Keep the newest N committed checkpoints (by step number) and delete older ones; "
           "0 keeps all.",
    .min = 0,
    .max = 1e6,
}};

const Knob<std::int64_t> checkpoint_keep_every{{
    .name = "checkpoint_keep_every",
    .env = "LOCKSTEP_CHECKPOINT_KEEP_EVERY",
    .type = KnobType::kInt,
    .default_value = "0",
    .doc = "Also keep every checkpoint whose step is a multiple of N, beyond "
           "LOCKSTEP_CHECKPOINT_KEEP; 0 keeps none extra.",
    .min = 0,
    .max = kMaxSteps,
}};

const Knob<bool> checkpoint_async{{
    .name = "checkpoint_async",
    .env = "LOCKSTEP_CHECKPOINT_ASYNC",
    .type = KnobType::kBool,
    .default_value = "true",
    .doc = "save() copies the state to host memory and returns; a background thread writes "
           "and commits it. false: save() returns after the commit.",
}};

const Knob<std::int64_t> checkpoint_threads{{
    .name = "checkpoint_threads",
    .env = "LOCKSTEP_CHECKPOINT_THREADS",
    .type = KnobType::kInt,
    .default_value = "0",
    .doc = "Threads per rank that copy the state into host memory on save() (the time save() "
           "blocks) and out of the page cache on a restore. 0: the cores this process may run on, "
           "shared among the ranks of its node (at most 8).",
    .min = 0,
    .max = 64,
}};

const Knob<bool> checkpoint_direct_io{{
    .name = "checkpoint_direct_io",
    .env = "LOCKSTEP_CHECKPOINT_DIRECT_IO",
    .type = KnobType::kBool,
    .default_value = "true",
    .doc = "Write checkpoint files with O_DIRECT where the file system allows it: no copy into "
           "the page cache, a third or less of the CPU time of buffered writes; a restore by a "
           "single rank reads with O_DIRECT too. false: read and write through the page cache.",
}};

const Knob<std::string> checkpoint_memory_dir{{
    .name = "checkpoint_memory_dir",
    .env = "LOCKSTEP_CHECKPOINT_MEMORY_DIR",
    .type = KnobType::kString,
    .default_value = "",
    .doc = "The memory tier: every save also goes to this directory on each node's own memory "
           "(tmpfs, e.g. /dev/shm/lockstep), and a restore takes the newest step every rank finds "
           "there before the disk's. checkpoint_options() adds a subdirectory per run. Empty: "
           "off.",
}};

const Knob<std::int64_t> checkpoint_memory_mb{{
    .name = "checkpoint_memory_mb",
    .env = "LOCKSTEP_CHECKPOINT_MEMORY_MB",
    .type = KnobType::kInt,
    .default_value = "0",
    .doc = "The most MiB the memory tier may hold on one node (its newest steps and the one being "
           "saved); a state that does not fit is saved to disk only, with a warning. 0: half of "
           "what the memory directory's file system has free at the first save.",
    .min = 0,
    .max = 1e12,
}};

const Knob<std::int64_t> checkpoint_memory_keep{{
    .name = "checkpoint_memory_keep",
    .env = "LOCKSTEP_CHECKPOINT_MEMORY_KEEP",
    .type = KnobType::kInt,
    .default_value = "2",
    .doc = "Steps the memory tier keeps on each node.",
    .min = 1,
    .max = 100,
}};

const Knob<std::int64_t> checkpoint_disk_every{{
    .name = "checkpoint_disk_every",
    .env = "LOCKSTEP_CHECKPOINT_DISK_EVERY",
    .type = KnobType::kInt,
    .default_value = "1",
    .doc = "With the memory tier on: every N-th save also goes to the checkpoint directory on "
           "disk (the first save always does).",
    .min = 1,
    .max = 1e6,
}};

const Knob<std::string> checkpoint_policy{{
    .name = "checkpoint_policy",
    .env = "LOCKSTEP_CHECKPOINT_POLICY",
    .type = KnobType::kEnum,
    .default_value = "steps",
    .doc = "When checkpoint_policy() asks for a save: 'steps' every LOCKSTEP_CHECKPOINT_EVERY "
           "steps (0: never), 'seconds' every LOCKSTEP_CHECKPOINT_SECONDS, 'auto' at the "
           "Young/Daly interval sqrt(2 x save stall x MTBF).",
    .choices = kCheckpointPolicies,
}};

const Knob<double> checkpoint_seconds{{
    .name = "checkpoint_seconds",
    .env = "LOCKSTEP_CHECKPOINT_SECONDS",
    .type = KnobType::kFloat,
    .default_value = "1800",
    .doc = "Interval of the 'seconds' checkpoint policy, in seconds.",
    .min = 0.001,
    .max = 1e9,
}};

const Knob<double> mtbf{{
    .name = "mtbf",
    .env = "LOCKSTEP_MTBF",
    .type = KnobType::kFloat,
    .default_value = "0",
    .doc = "Mean time between failures of the job, in seconds, for the 'auto' checkpoint "
           "policy; 0 learns it from the run's restarts (<run_dir>/attempts.jsonl), assuming "
           "24 hours until the first failure.",
    .min = 0,
    .max = 1e10,
}};

}  // namespace knobs

std::span<const KnobSpec* const> all_knobs() {
  static const std::array<const KnobSpec*, 36> table = {
      &knobs::log_level.spec,
      &knobs::run_dir.spec,
      &knobs::device.spec,
      &knobs::checkpoint_every.spec,
      &knobs::handle_signals.spec,
      &knobs::collective_timeout.spec,
      &knobs::restart_count.spec,
      &knobs::monitor_address.spec,
      &knobs::monitor_token.spec,
      &knobs::launcher_address.spec,
      &knobs::launcher_connect_timeout.spec,
      &knobs::allow_unmonitored.spec,
      &knobs::launcher_loss_grace.spec,
      &knobs::host_timeout.spec,
      &knobs::heartbeat_relay.spec,
      &knobs::trace.spec,
      &knobs::trace_dir.spec,
      &knobs::trace_max_mb.spec,
      &knobs::flight_records.spec,
      &knobs::mpi_segment_mb.spec,
      &knobs::replica_check_every.spec,
      &knobs::inject_bitflip.spec,
      &knobs::inject_slow.spec,
      &knobs::checkpoint_dir.spec,
      &knobs::checkpoint_keep.spec,
      &knobs::checkpoint_keep_every.spec,
      &knobs::checkpoint_async.spec,
      &knobs::checkpoint_threads.spec,
      &knobs::checkpoint_memory_dir.spec,
      &knobs::checkpoint_memory_mb.spec,
      &knobs::checkpoint_memory_keep.spec,
      &knobs::checkpoint_disk_every.spec,
      &knobs::checkpoint_direct_io.spec,
      &knobs::checkpoint_policy.spec,
      &knobs::checkpoint_seconds.spec,
      &knobs::mtbf.spec,
  };
  return table;
}

}  // namespace lockstep
