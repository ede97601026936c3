#include "lockstep/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "lockstep/blocked_time.h"
#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/files.h"
#include "lockstep/knobs.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "lockstep/node_relay.h"
#include "lockstep/progress.h"

#if LOCKSTEP_HAVE_CUDA
#include "cuda_probe.h"
#endif

namespace lockstep {

namespace {

// How long the node's first rank waits, when it ends, for the node's other
// ranks to close their channels through its relay. A rank that takes longer
// to end (a large save finishing) must not be cut off and counted as dead;
// one that never ends is the launcher's to stop, as a hang in teardown.
constexpr std::chrono::milliseconds kRelayLinger{std::chrono::hours(1)};

// What a rank about to abort gives its node's relay to pass its last words
// (the fault) on before mpirun takes the node's processes down.
constexpr std::chrono::milliseconds kRelayLastWords{300};

// The factor LOCKSTEP_INJECT_SLOW ("RANK:FACTOR") slows `rank` by; 1 when
// it names another rank or is empty.
double injected_slowness(const std::string& text, int rank) {
  if (text.empty()) return 1;
  const std::size_t colon = text.find(':');
  int slow_rank = -1;
  double factor = 0;
  try {
    if (colon == std::string::npos) throw std::invalid_argument("no colon");
    std::size_t used = 0;
    slow_rank = std::stoi(text.substr(0, colon), &used);
    if (used != colon) throw std::invalid_argument("rank");
    const std::string factor_text = text.substr(colon + 1);
    factor = std::stod(factor_text, &used);
    if (used != factor_text.size()) throw std::invalid_argument("factor");
  } catch (const std::logic_error&) {
    factor = 0;
  }
  if (slow_rank < 0 || !(factor >= 1 && factor <= 1000)) {
    throw ConfigError(fmt::format(
        "LOCKSTEP_INJECT_SLOW='{}' is not RANK:FACTOR with a rank >= 0 and a factor from 1 to "
        "1000 (e.g. 2:3 makes rank 2 three times slower)",
        text));
  }
  return slow_rank == rank ? factor : 1;
}

bool mpi_alive() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized != 0 && finalized == 0;
}

// The live Runtime's heartbeat channel and rank, so that a rank about to
// abort the job tells the launcher why first: the launcher then names this
// rank and its error as the cause, not whichever rank's connection happened
// to close first, and knows that the program failed by itself.
struct FaultChannel {
  HeartbeatClient* heartbeat = nullptr;
  int rank = -1;
};
std::atomic<FaultChannel*> g_fault_channel{nullptr};

[[noreturn]] void abort_job(const std::string& message, int exit_code) {
  if (FaultChannel* channel = g_fault_channel.load()) {
    channel->heartbeat->fault(message, {channel->rank});
  }
  log::error("{}", message);
  dump_flight_records(message);
  if (FaultChannel* channel = g_fault_channel.load();
      channel != nullptr && channel->heartbeat->through_relay()) {
    // A direct connection's kernel delivers the fault after the process is
    // gone; a relay is a process of this job, which MPI_Abort ends too.
    std::this_thread::sleep_for(kRelayLastWords);
  }
  log::error("aborting every rank of the job (exit code {})", exit_code);
  log::logger().flush();
  if (mpi_alive()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

// An exception nobody caught: say what it was, then take the whole job down
// so that the other ranks do not wait for this one forever.
[[noreturn]] void on_terminate() {
  std::string what = "std::terminate called without an active exception";
  if (const std::exception_ptr error = std::current_exception()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = fmt::format("uncaught exception: {}", e.what());
    } catch (...) {
      what = "uncaught exception of a type not derived from std::exception";
    }
  }
  abort_job(what, 1);
}

// Under Slurm the node's name (what `srun --exclude` and `sinfo` use; it can
// differ from the host name, and several nodes may share one host); else the
// host name.
std::string local_hostname() {
  if (const char* node = std::getenv("SLURMD_NODENAME"); node != nullptr && *node != '\0') {
    return node;
  }
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) {
    throw std::system_error(errno, std::generic_category(), "gethostname");
  }
  return name.data();
}

std::string_view thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "an unknown thread level";
  }
}

// Our communicators report errors as return codes so that the checked-call
// macros can attach the call text instead of MPI aborting on its own.
MpiComm private_dup(MPI_Comm comm) {
  MpiComm copy = MpiComm::dup(comm);
  LOCKSTEP_CHECK_MPI(MPI_Comm_set_errhandler(copy.get(), MPI_ERRORS_RETURN));
  return copy;
}

}  // namespace

// MPI_Init_thread may keep pointers to argc/argv, so the empty command line
// of the argument-less constructor lives as long as the process.
int g_no_argc = 0;
char* g_no_argv_storage[] = {nullptr};
char** g_no_argv = g_no_argv_storage;

Runtime::Runtime() : Runtime(g_no_argc, g_no_argv) {}

Runtime::Runtime(int& argc, char**& argv) : uncaught_at_start_(std::uncaught_exceptions()) {
  std::set_terminate(on_terminate);
  init_mpi(&argc, &argv);
  print_help_if_asked(argc, argv);
  config_ = Config::load(Config::take_flags(argc, argv));
  log::set_level(log::parse_level(config_.get(knobs::log_level)));
  init_topology();
  log::set_identity(rank_, world_size_, hostname_);
  if (rank_ == 0) {
    for (const std::string& variable : config_.unknown_variables()) {
      log::warn("ignoring unknown environment variable {}", variable);
    }
  }
  bind_device();

  std::error_code error;
  run_dir_ = std::filesystem::absolute(config_.get(knobs::run_dir));
  files::create_directories(run_dir_, error);
  if (!std::filesystem::is_directory(run_dir_)) {
    throw IoError(
        fmt::format("cannot create the run directory {} ({}); set LOCKSTEP_RUN_DIR to "
                    "a writable directory",
                    run_dir_.string(), error.message()));
  }
  if (const std::string why = files::why_not_private(run_dir_); !why.empty()) {
    throw IoError(fmt::format(
        "the run directory {}: {}; set LOCKSTEP_RUN_DIR to a directory that only you (and your "
        "group) can write to",
        run_dir_.string(), why));
  }

  restart_count_ = config_.get(knobs::restart_count);
  if (config_.source(knobs::restart_count.spec) == "default") {
    if (const char* slurm = std::getenv("SLURM_RESTART_COUNT"); slurm != nullptr) {
      static constexpr KnobSpec kSlurmRestarts{.name = "restart_count",
                                               .env = "SLURM_RESTART_COUNT",
                                               .type = KnobType::kInt,
                                               .default_value = "0",
                                               .doc = "",
                                               .min = 0,
                                               .max = 1e9};
      restart_count_ = parse_int_value(kSlurmRestarts, slurm);
    }
  }
  checkpoint_every_ = config_.get(knobs::checkpoint_every);
  slow_factor_ = injected_slowness(config_.get(knobs::inject_slow), rank_);
  if (config_.get(knobs::handle_signals)) signals::install();
  std::exception_ptr unreachable;
  if (const std::string monitor = config_.get(knobs::monitor_address); !monitor.empty()) {
    // A rank whose launcher is gone asks for "checkpoint and stop", as a
    // SIGTERM would; every rank loses the launcher at about the same time.
    const std::string relay = start_relay(monitor);
    try {
      heartbeat_ = HeartbeatClient(
          monitor, config_.get(knobs::monitor_token), rank_, world_size_, hostname_, restart_count_,
          [](const std::string&) { signals::request(kRequestStop); },
          std::chrono::milliseconds(
              static_cast<std::int64_t>(config_.get(knobs::launcher_loss_grace) * 1000)),
          connect_timeout(), /*required=*/!config_.get(knobs::allow_unmonitored), relay);
      // One Runtime per process (the heartbeat member does not move).
      static FaultChannel channel;
      channel = FaultChannel{&heartbeat_, rank_};
      g_fault_channel.store(&channel);
    } catch (...) {
      // The client logged why it could not reach the launcher (anything
      // else is said by whoever catches it); that line must be out before
      // any rank stops.
      unreachable = std::current_exception();
      log::logger().flush();
    }
  }
  agree_on_start(unreachable != nullptr);
  if (unreachable) std::rethrow_exception(unreachable);

  start_trace();
  log::debug("lockstep {}: rank {}/{} local {}/{} node {}/{} device {} run dir {} restarts {}",
             LOCKSTEP_VERSION, rank_, world_size_, local_rank_, local_size_, node_index_,
             node_count_, device_.str(), run_dir_.string(), restart_count_);
}

std::chrono::milliseconds Runtime::connect_timeout() const {
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(config_.get(knobs::launcher_connect_timeout) * 1000));
}

std::string Runtime::start_relay(const std::string& launcher) {
  const std::string mode = config_.get(knobs::heartbeat_relay);
  if (local_size_ < 2 || mode == "off" || (mode == "auto" && node_count_ < 2)) return "";
  std::string address;
  if (local_rank_ == 0) {
    try {
      relay_ =
          std::make_unique<NodeRelay>(launcher, config_.get(knobs::monitor_token), hostname_,
                                      NodeRelay::Options{.connect_timeout = connect_timeout()});
      address = relay_->address();
    } catch (const Error& error) {
      log::warn("no heartbeat relay on {} ({}); its ranks report to the launcher directly",
                hostname_, error.what());
    }
  }
  // Every rank of the node learns where the relay is ("" when there is none).
  int length = static_cast<int>(address.size());
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, node_.get()));
  address.resize(static_cast<std::size_t>(length));
  if (length > 0) {
    LOCKSTEP_CHECK_MPI(MPI_Bcast(address.data(), length, MPI_CHAR, 0, node_.get()));
  }
  return address;
}

void Runtime::start_trace() {
  const std::string dir = config_.get(knobs::trace_dir);
  const std::filesystem::path attempt_dir =
      (dir.empty() ? run_dir_ / "trace" / "local" : std::filesystem::path(dir)) /
      fmt::format("attempt-{}", restart_count_);
  set_flight_capacity(static_cast<std::size_t>(config_.get(knobs::flight_records)));
  set_flight_dump_target({.path = attempt_dir / fmt::format("flight-rank-{}.json", rank_),
                          .rank = rank_,
                          .attempt = restart_count_,
                          .host = hostname_});
  const std::string mode = config_.get(knobs::trace);
  const bool under_launcher = !config_.get(knobs::monitor_address).empty();
  if (mode == "off" || (mode == "auto" && !under_launcher)) return;
  try {
    trace_ = std::make_unique<trace::TraceWriter>(trace::TraceFile{
        .path = attempt_dir / fmt::format("rank-{}.jsonl", rank_),
        .rank = rank_,
        .world_size = world_size_,
        .attempt = restart_count_,
        .host = hostname_,
        .max_bytes = static_cast<std::uint64_t>(config_.get(knobs::trace_max_mb)) << 20});
    trace::name_thread("main");
  } catch (const IoError& error) {
    log::warn("{}; training goes on without a timeline", error.what());
  }
}

void Runtime::print_help_if_asked(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    if (argument == "--") return;
    if (argument != "--lockstep-help") continue;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::fputs(config_help_text().c_str(), stdout);
    std::fflush(stdout);
    if (owns_mpi_) MPI_Finalize();
    std::exit(EXIT_SUCCESS);
  }
}

void Runtime::init_mpi(int* argc, char*** argv) {
  int initialized = 0;
  LOCKSTEP_CHECK_MPI(MPI_Initialized(&initialized));
  int provided = MPI_THREAD_SINGLE;
  if (initialized != 0) {
    LOCKSTEP_CHECK_MPI(MPI_Query_thread(&provided));
  } else {
    LOCKSTEP_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_mpi_ = true;
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    throw BackendError(
        "MPI", provided,
        fmt::format("MPI provides {} but lockstep needs MPI_THREAD_MULTIPLE (its collectives and "
                    "checkpoint writer run on background threads); use an MPI built with "
                    "thread-multiple support, e.g. Debian's openmpi, and if you initialise MPI "
                    "yourself, call MPI_Init_thread with MPI_THREAD_MULTIPLE",
                    thread_level_name(provided)));
  }
}

void Runtime::init_topology() {
  world_ = private_dup(MPI_COMM_WORLD);
  control_ = private_dup(MPI_COMM_WORLD);
  control_progress_ = std::make_unique<CollectiveProgress>("runtime");
  node_ = MpiComm::split_shared(world_.get());
  LOCKSTEP_CHECK_MPI(MPI_Comm_set_errhandler(node_.get(), MPI_ERRORS_RETURN));
  rank_ = world_.rank();
  world_size_ = world_.size();
  local_rank_ = node_.rank();
  local_size_ = node_.size();
  hostname_ = local_hostname();

  // Nodes are numbered by their lowest world rank: the first rank of each
  // node learns its index among the first ranks, then tells its node.
  const bool leader = local_rank_ == 0;
  MpiComm leaders = MpiComm::split(world_.get(), leader ? 0 : MPI_UNDEFINED, rank_);
  if (leader) {
    node_index_ = leaders.rank();
    node_count_ = leaders.size();
  }
  std::array<int, 2> node_info = {node_index_, node_count_};
  LOCKSTEP_CHECK_MPI(MPI_Bcast(node_info.data(), 2, MPI_INT, 0, node_.get()));
  node_index_ = node_info[0];
  node_count_ = node_info[1];
}

void Runtime::bind_device() {
  const std::string wanted = config_.get(knobs::device);
  device_ = Device::cpu();
  if (wanted == "cpu") return;
#if LOCKSTEP_HAVE_CUDA
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (rc != cudaSuccess || count == 0) {
    if (wanted == "cuda") {
      throw UsageError(
          fmt::format("LOCKSTEP_DEVICE=cuda but no GPU is usable on {} ({}); check nvidia-smi and "
                      "CUDA_VISIBLE_DEVICES, or set LOCKSTEP_DEVICE=cpu",
                      hostname_, rc != cudaSuccess ? cudaGetErrorString(rc) : "no devices"));
    }
    log::debug("no usable GPU ({}); running on the CPU",
               rc != cudaSuccess ? cudaGetErrorString(rc) : "none visible");
    return;
  }
  // One GPU per local rank: NCCL refuses two ranks on one GPU. When each
  // rank sees a single, different GPU (srun --gpus-per-task) index 0 is right
  // for all of them, so the check below compares PCI addresses.
  const int ordinal = local_rank_ % count;
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(ordinal));
  std::array<char, 32> bus_id{};
  LOCKSTEP_CHECK_CUDA(
      cudaDeviceGetPCIBusId(bus_id.data(), static_cast<int>(bus_id.size()), ordinal));
  std::vector<char> all_bus_ids(bus_id.size() * static_cast<std::size_t>(local_size_));
  LOCKSTEP_CHECK_MPI(MPI_Allgather(bus_id.data(), static_cast<int>(bus_id.size()), MPI_CHAR,
                                   all_bus_ids.data(), static_cast<int>(bus_id.size()), MPI_CHAR,
                                   node_.get()));
  for (int other = 0; other < local_size_; ++other) {
    const std::string other_id(&all_bus_ids[static_cast<std::size_t>(other) * bus_id.size()]);
    if (other != local_rank_ && other_id == bus_id.data()) {
      throw UsageError(fmt::format(
          "{} ranks run on {} but only {} GPU(s) are visible to each; local ranks {} and {} "
          "would share GPU {} and NCCL refuses two ranks on one GPU. Start at most {} rank(s) "
          "per node (mpirun --npernode {}, srun --ntasks-per-node={}) or set LOCKSTEP_DEVICE=cpu",
          local_size_, hostname_, count, std::min(other, local_rank_), std::max(other, local_rank_),
          bus_id.data(), count, count, count));
    }
  }
  if (const std::string problem = detail::probe_current_device(); !problem.empty()) {
    throw BackendError(
        "CUDA", 0,
        fmt::format("GPU {} ({}) on {} cannot run lockstep's kernels: {}. Rebuild with "
                    "-DCMAKE_CUDA_ARCHITECTURES set to include this GPU's compute capability",
                    ordinal, bus_id.data(), hostname_, problem));
  }
  device_ = Device::cuda(ordinal);
#else
  if (wanted == "cuda") {
    throw UsageError(
        "LOCKSTEP_DEVICE=cuda but this lockstep was built without CUDA; rebuild on a machine "
        "with the CUDA toolkit (-DLOCKSTEP_CUDA=ON) or set LOCKSTEP_DEVICE=cpu");
  }
#endif
}

Runtime::~Runtime() {
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    abort_job(fmt::format("an exception is leaving the scope of lockstep::Runtime on rank {}; "
                          "catch errors inside that scope to handle them",
                          rank_),
              1);
  }
  g_fault_channel.store(nullptr);
  signals::uninstall();
  heartbeat_.exit(0, stop_pending_);
  // Every rank closes its channel before MPI_Finalize, so that the node's
  // relay, which waits for them, never waits on a rank inside it.
  heartbeat_ = HeartbeatClient();
  if (relay_) relay_->finish(kRelayLinger);
  relay_.reset();
  trace_.reset();
  control_ = MpiComm();
  control_progress_.reset();
  node_ = MpiComm();
  world_ = MpiComm();
  if (owns_mpi_ && mpi_alive()) MPI_Finalize();
}

void Runtime::control_allreduce(const void* send, void* receive, MPI_Datatype type, MPI_Op op,
                                std::string_view what) {
  const std::uint64_t sequence = ++decisions_;
  if (control_progress_)
    control_progress_->started(sequence, fmt::format("{} #{}", what, sequence));
  {
    const blocked_time::Scope blocked;
    LOCKSTEP_CHECK_MPI(MPI_Allreduce(send, receive, 1, type, op, control_.get()));
  }
  if (control_progress_) control_progress_->finished(sequence);
}

void Runtime::agree_on_start(bool failed) {
  const int local = failed ? 1 : 0;
  int failures = 0;
  control_allreduce(&local, &failures, MPI_INT, MPI_SUM, "start-up check (4 bytes, i32, sum)");
  if (failures > 0 && !failed) {
    throw IoError(
        fmt::format("{} of {} ranks could not start (each said why); rank {} stops with them",
                    failures, world_size_, rank_));
  }
}

Decision Runtime::decide(std::int64_t step) {
  const std::uint32_t local = signals::take();
  std::uint32_t all = kRequestNone;
  control_allreduce(&local, &all, MPI_UINT32_T, MPI_BOR, "decision (4 bytes, u32, bor)");
  const Decision decision = lockstep::decide(all, step, checkpoint_every_);
  stop_pending_ = decision.stop;
  stop_known_ = true;
  return decision;
}

bool Runtime::should_checkpoint(std::int64_t step) { return decide(step).checkpoint; }

bool Runtime::should_stop() {
  if (!stop_known_) decide(-1);
  stop_known_ = false;
  return stop_pending_;
}

void Runtime::heartbeat(std::int64_t step, const std::map<std::string, double>& metrics) {
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - last_heartbeat_).count();
  last_heartbeat_ = now;
  // The step less what it waited for other ranks and for checkpoints. Work
  // waited on by several threads at once could count more than the step.
  const std::int64_t blocked_ns = blocked_time::total_ns();
  const double waited =
      static_cast<double>(blocked_ns - blocked_at_heartbeat_ns_) * 1e-9 + stalled_since_heartbeat_;
  blocked_at_heartbeat_ns_ = blocked_ns;
  stalled_since_heartbeat_ = 0;
  const double compute = std::clamp(seconds - waited, 0.0, seconds);
  heartbeat_.step(step, seconds, metrics, compute);
  if (trace::enabled()) {
    const std::int64_t now_ns = trace::now_ns();
    trace::span("step", fmt::format("step {}", step), last_step_ns_, now_ns);
    last_step_ns_ = now_ns;
  }
  if (slow_factor_ > 1) {
    // The next step computes (factor - 1) times this step's own compute
    // longer: the delay added last time is not this step's own.
    const double own = std::max(0.0, compute - injected_delay_);
    injected_delay_ = own * (slow_factor_ - 1);
    std::this_thread::sleep_for(std::chrono::duration<double>(injected_delay_));
  }
}

void Runtime::report_checkpoint(std::int64_t step, double stall_seconds) {
  stalled_since_heartbeat_ += std::max(0.0, stall_seconds);
  heartbeat_.checkpoint(step, stall_seconds);
}

void Runtime::report_fault(const std::string& what, const std::vector<int>& ranks) {
  heartbeat_.fault(what, ranks);
}

void Runtime::abort(const std::string& message, int exit_code) const {
  abort_job(message, exit_code);
}

}  // namespace lockstep
