// `lockstep run`: start a job with mpirun and keep it running.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli_checks.h"
#include "commands.h"
#include "host_list.h"
#include "lockstep/config.h"
#include "lockstep/error.h"
#include "lockstep/files.h"
#include "mpirun_command.h"
#include "slurm_job.h"
#include "supervisor.h"

namespace lockstep::cli {

namespace {

using launcher::InjectedFailure;

// Bounds of the command line's numbers: beyond any real job, small enough
// that no arithmetic on them overflows.
constexpr std::int64_t kMaxRanks = std::int64_t{1} << 24;
constexpr std::int64_t kMaxSteps = 1'000'000'000'000'000;
constexpr double kMaxSeconds = 30.0 * 24 * 3600;  // a month
constexpr double kMaxGraceSeconds = 24.0 * 3600;  // a day

struct RunOptions {
  int ranks = 0;
  std::string host_list;
  std::string hostfile;
  int max_restarts = 3;
  double hang_timeout = 300;
  double startup_timeout = 1800;
  double grace = 10;
  std::string run_dir = "lockstep-run";
  std::int64_t total_steps = 0;
  double status_interval = 10;
  std::string mpirun = "mpirun";
  std::string srun = "srun";
  std::string scontrol = "scontrol";
  int min_nodes = 1;
  int exclude_after = 2;
  double host_timeout = 4;
  bool no_requeue = false;
  bool slurm = false;
  bool no_slurm = false;
  bool dry_run = false;
  std::vector<std::string> inject;
  std::string inject_bitflip;
  std::string inject_slow;
  double straggler_interval = 60;
  double straggler_threshold = 0.7;
  int straggler_reports = 3;
  std::string monitor_address;
  bool monitor_bind_all = false;
  bool allow_unmonitored = false;
  int metrics_port = -1;
  std::string metrics_address = "127.0.0.1";
  std::vector<std::string> program;
};

// Finds `name` like execvp would; returns "" when absent.
std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string_view directories = path != nullptr ? path : "/usr/bin:/bin";
  while (!directories.empty()) {
    const std::size_t colon = directories.find(':');
    const std::string directory(directories.substr(0, colon));
    const std::string candidate = (directory.empty() ? "." : directory) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    directories.remove_prefix(colon + 1);
  }
  return "";
}

void check_program(const std::string& name, const char* what) {
  const std::string found = find_program(name);
  struct stat info = {};
  if (found.empty() || stat(found.c_str(), &info) != 0) {
    throw UsageError(fmt::format("{} '{}' does not exist{}", what, name,
                                 name.find('/') == std::string::npos ? " in PATH" : ""));
  }
  if (S_ISDIR(info.st_mode)) throw UsageError(fmt::format("{} '{}' is a directory", what, name));
  if (access(found.c_str(), X_OK) != 0) {
    throw UsageError(fmt::format("{} '{}' is not executable (chmod +x {})", what, name, name));
  }
}

// --inject-slow RANK:FACTOR, checked here so that a typo is a usage error
// before anything starts rather than a failure of every rank.
std::pair<int, double> parse_injected_slowness(const std::string& text) {
  const std::size_t colon = text.find(':');
  int rank = -1;
  double factor = 0;
  if (colon != std::string::npos) {
    const std::string rank_text = text.substr(0, colon);
    const std::string factor_text = text.substr(colon + 1);
    char* end = nullptr;
    errno = 0;
    const long parsed_rank = std::strtol(rank_text.c_str(), &end, 10);
    if (!rank_text.empty() && *end == '\0' && errno == 0 && parsed_rank >= 0 &&
        parsed_rank < kMaxRanks) {
      rank = static_cast<int>(parsed_rank);
    }
    const double parsed_factor = std::strtod(factor_text.c_str(), &end);
    if (!factor_text.empty() && *end == '\0') factor = parsed_factor;
  }
  if (rank < 0 || !(factor >= 1 && factor <= 1000)) {
    throw UsageError(fmt::format(
        "--inject-slow '{}' is not RANK:FACTOR with a rank >= 0 and a factor from 1 to 1000 "
        "(e.g. 2:3 makes rank 2 compute three times as long)",
        text));
  }
  return {rank, factor};
}

// Inside a Slurm allocation ranks start with srun, unless told otherwise.
bool use_slurm(const RunOptions& options) {
  const bool in_allocation = std::getenv("SLURM_JOB_ID") != nullptr;
  if (options.slurm && !in_allocation) {
    throw UsageError(
        "--slurm: not inside a Slurm allocation (SLURM_JOB_ID is unset); submit the job with "
        "sbatch (see slurm/train.sbatch) or get an allocation with salloc, or drop --slurm to "
        "start the ranks with mpirun");
  }
  if (options.slurm && (!options.host_list.empty() || !options.hostfile.empty())) {
    throw UsageError("--slurm takes its nodes from the allocation; drop -H/--hostfile");
  }
  return options.slurm || (in_allocation && !options.no_slurm && options.host_list.empty() &&
                           options.hostfile.empty());
}

int environment_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && std::atoi(value) > 0 ? std::atoi(value) : fallback;
}

// The allocation as Slurm describes it to the batch script.
launcher::SlurmOptions slurm_options(const RunOptions& options) {
  launcher::SlurmOptions slurm;
  slurm.job_id = std::getenv("SLURM_JOB_ID");
  slurm.nodes = environment_int("SLURM_JOB_NUM_NODES", 1);
  const int tasks = options.ranks > 0 ? options.ranks : environment_int("SLURM_NTASKS", 1);
  // SLURM_NTASKS_PER_NODE (sbatch --ntasks-per-node) says how many ranks a
  // node holds; -n below that times the nodes leaves spare nodes. Without
  // it the ranks spread over every node.
  slurm.ranks_per_node = environment_int("SLURM_NTASKS_PER_NODE",
                                         std::max(1, (tasks + slurm.nodes - 1) / slurm.nodes));
  slurm.requeue = !options.no_requeue;
  slurm.restart_count = std::max(0, environment_int("SLURM_RESTART_COUNT", 0));
  slurm.scontrol = options.scontrol;
  if (options.min_nodes > slurm.nodes) {
    throw UsageError(fmt::format("--min-nodes {} exceeds the {} node(s) of the allocation",
                                 options.min_nodes, slurm.nodes));
  }
  return slurm;
}

// The LOCKSTEP_* variables travel to every rank, whose Runtime would stop
// on a bad one at start-up, attempt after attempt: check them here, against
// the same table, before anything starts.
void check_environment() {
  const Config config = Config::load();  // throws ConfigError naming the variable
  for (const std::string& unknown : config.unknown_variables()) {
    std::cerr << "lockstep: warning: ignoring unknown environment variable " << unknown
              << " (`lockstep config` lists the settings)\n";
  }
}

// The run directory must exist before the ranks write into it; a path that
// cannot be one, or one that another user could tamper with, is a usage
// error, not a failure of the job.
void make_run_dir(const std::filesystem::path& run_dir) {
  std::error_code error;
  // What this call makes, deepest first: a refused run directory leaves
  // nothing behind.
  const auto made = files::create_directories(run_dir, error);
  if (!std::filesystem::is_directory(run_dir)) {
    const bool is_file = std::filesystem::exists(run_dir);
    throw UsageError(
        fmt::format("--run-dir {}: {}; give a directory that can be created and "
                    "written to",
                    run_dir.string(),
                    is_file ? "it exists and is not a directory"
                            : "cannot create it (" + error.message() + ")"));
  }
  if (access(run_dir.c_str(), W_OK | X_OK) != 0) {
    throw UsageError(
        fmt::format("--run-dir {}: cannot write into it ({}); give a directory "
                    "that can be written to",
                    run_dir.string(), std::strerror(errno)));
  }
  // The launcher and the ranks write summaries, traces and checkpoints
  // there, and read them back: no other user may be able to put links or
  // files of theirs in it.
  if (const std::string why = files::why_not_private(run_dir); !why.empty()) {
    for (const auto& path : made) std::filesystem::remove(path, error);
    throw UsageError(fmt::format(
        "--run-dir {}: {}; give a directory that only you (and your group) can write to, "
        "such as one in your home or project directory",
        run_dir.string(), why));
  }
}

// The number of ranks an attempt starts: -n, else (inside Slurm) every task
// of the allocation.
int ranks_for(const RunOptions& options) {
  const char* tasks = std::getenv("SLURM_NTASKS");
  return options.ranks > 0 ? options.ranks : (tasks != nullptr ? std::atoi(tasks) : 1);
}

// This host's name, and its first label ("node1" of "node1.cluster").
bool is_this_host(const std::string& name) {
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  const std::string full(hostname);
  const std::string shortname = full.substr(0, full.find('.'));
  return name == "localhost" || name == full || name == shortname ||
         name.substr(0, name.find('.')) == shortname;
}

// The hosts of the run other than this one: the host list, or the
// addresses of the other nodes of the Slurm allocation (whose names go to
// plan.slurm.node_names, for leaving out failing nodes).
std::vector<std::string> remote_hosts(launcher::SupervisorOptions& plan) {
  std::vector<std::string> names;
  if (plan.plan.starter == launcher::Starter::kSrun) {
    if (plan.slurm.nodes > 1) {
      const char* nodelist = std::getenv("SLURM_JOB_NODELIST");
      for (const launcher::SlurmNode& node :
           launcher::allocation_nodes(plan.slurm, nodelist != nullptr ? nodelist : "")) {
        plan.slurm.node_names.push_back(node.name);
        names.push_back(node.address);
      }
    }
  } else {
    for (const launcher::Host& host : plan.plan.hosts) names.push_back(host.name);
  }
  std::erase_if(names, is_this_host);
  return names;
}

launcher::SupervisorOptions plan_from(const RunOptions& options) {
  const bool slurm = use_slurm(options);
  if (options.ranks < 1 && !(slurm && options.ranks == 0)) {
    throw UsageError(
        fmt::format("-n must be at least 1 (got {}): the number of ranks to start{}", options.ranks,
                    slurm ? "; leave it out to use every task of the allocation" : ""));
  }
  if (options.max_restarts < 0) throw UsageError("--max-restarts must be >= 0");
  if (options.hang_timeout <= 0) throw UsageError("--hang-timeout must be > 0 seconds");
  if (options.grace < 0) throw UsageError("--grace must be >= 0 seconds");
  if (options.min_nodes < 1) throw UsageError("--min-nodes must be at least 1");
  if (options.exclude_after < 1) throw UsageError("--exclude-after must be at least 1");
  if (options.program.empty()) {
    throw UsageError("no program to run; put it after '--': lockstep run -n 4 -- ./trainer");
  }
  launcher::SupervisorOptions plan;
  if (!options.host_list.empty()) plan.plan.hosts = launcher::parse_host_list(options.host_list);
  if (!options.hostfile.empty()) plan.plan.hosts = launcher::parse_hostfile(options.hostfile);
  check_program(options.program[0], "program");
  if (slurm) {
    check_program(options.srun, "srun");
    plan.plan.starter = launcher::Starter::kSrun;
    plan.plan.srun = options.srun;
    plan.slurm = slurm_options(options);
    plan.multi_host = plan.slurm.nodes > 1;
  } else {
    check_program(options.mpirun, "mpirun");
  }
  plan.plan.ranks = options.ranks;
  plan.plan.local_cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  plan.plan.as_root = geteuid() == 0;
  plan.plan.mpirun = options.mpirun;
  plan.plan.program = options.program;
  // The user's own LOCKSTEP_* settings travel to every rank.
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    if (text.starts_with("LOCKSTEP_")) {
      const std::size_t equals = text.find('=');
      plan.plan.environment[std::string(text.substr(0, equals))] =
          std::string(text.substr(equals + 1));
    }
  }
  if (!options.inject_bitflip.empty()) {
    const InjectedFailure flip = launcher::parse_injected_failure(options.inject_bitflip);
    if (flip.signal != SIGKILL || flip.at_checkpoint || flip.rank >= ranks_for(options)) {
      throw UsageError(fmt::format("--inject-bitflip '{}' is not RANK:STEP with an existing rank",
                                   options.inject_bitflip));
    }
    plan.plan.environment["LOCKSTEP_INJECT_BITFLIP"] = fmt::format("{}:{}", flip.rank, flip.step);
  }
  if (!options.inject_slow.empty()) {
    const auto [rank, factor] = parse_injected_slowness(options.inject_slow);
    if (rank >= ranks_for(options)) {
      throw UsageError(fmt::format("--inject-slow {}: rank {} does not exist with {} ranks",
                                   options.inject_slow, rank, ranks_for(options)));
    }
    plan.plan.environment["LOCKSTEP_INJECT_SLOW"] = fmt::format("{}:{}", rank, factor);
  }
  plan.stragglers.interval_seconds = options.straggler_interval;
  plan.stragglers.threshold = options.straggler_threshold;
  plan.stragglers.reports = options.straggler_reports;
  plan.run_dir = std::filesystem::absolute(options.run_dir);
  plan.max_restarts = options.max_restarts;
  plan.hang_timeout = options.hang_timeout;
  plan.startup_timeout = options.startup_timeout;
  plan.grace = options.grace;
  plan.total_steps = options.total_steps;
  plan.status_interval = options.status_interval;
  plan.min_hosts = options.min_nodes;
  plan.exclude_after = options.exclude_after;
  plan.host_timeout = options.host_timeout;
  if (!plan.plan.hosts.empty() && options.min_nodes > static_cast<int>(plan.plan.hosts.size())) {
    throw UsageError(fmt::format("--min-nodes {} exceeds the {} host(s) of the host list",
                                 options.min_nodes, plan.plan.hosts.size()));
  }
  const launcher::EndpointRequest endpoint{.requested = options.monitor_address,
                                           .remote_hosts = remote_hosts(plan),
                                           .bind_all = options.monitor_bind_all};
  if (plan.plan.starter != launcher::Starter::kSrun) plan.remote_hosts = endpoint.remote_hosts;
  if (!endpoint.remote_hosts.empty()) plan.multi_host = true;
  plan.monitor = launcher::choose_monitor_endpoint(endpoint);
  plan.allow_unmonitored = options.allow_unmonitored;
  if (options.allow_unmonitored) plan.plan.environment["LOCKSTEP_ALLOW_UNMONITORED"] = "true";
  const int ranks = ranks_for(options);
  for (const std::string& text : options.inject) {
    InjectedFailure failure = launcher::parse_injected_failure(text);
    if (failure.rank >= ranks) {
      throw UsageError(fmt::format("--inject-failure {}: rank {} does not exist with {} ranks",
                                   text, failure.rank, ranks));
    }
    plan.injected.push_back(failure);
  }
  return plan;
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* command = app.add_subcommand(
      "run",
      "Start a job with mpirun (srun inside Slurm), watch it, and restart it from its newest "
      "checkpoint when "
      "a rank crashes or hangs");
  command
      ->add_option("-n,--ranks", options->ranks,
                   "Number of ranks to start (inside Slurm: default all tasks of the "
                   "allocation)")
      ->check(whole_number_in(0, kMaxRanks));
  auto* hosts = command->add_option("-H,--host", options->host_list,
                                    "Hosts and slots: node1:4,node2:4 (default: this machine)");
  command
      ->add_option("--hostfile", options->hostfile,
                   "File with one host per line: 'node1 slots=4' or 'node1:4'; # comments")
      ->excludes(hosts);
  command
      ->add_option("--max-restarts", options->max_restarts,
                   "Restarts after failures before giving up")
      ->capture_default_str()
      ->check(whole_number_in(0, 1'000'000));
  command
      ->add_option("--hang-timeout", options->hang_timeout,
                   "Seconds without a heartbeat from any rank, once the first step was "
                   "reported, before the job counts as hung")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxSeconds, /*min_excluded=*/true));
  command
      ->add_option("--startup-timeout", options->startup_timeout,
                   "Seconds from a start to the first step heartbeat (MPI/NCCL set-up, data, "
                   "the restore) before the job counts as hung; with --allow-unmonitored, a "
                   "program that never connects is not timed")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxSeconds, /*min_excluded=*/true));
  command
      ->add_option("--grace", options->grace,
                   "Seconds between SIGTERM and SIGKILL when stopping a job")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxGraceSeconds));
  command
      ->add_option("--run-dir", options->run_dir,
                   "Directory for checkpoints, attempts.jsonl and summary.json; it must be "
                   "yours (not writable by other users)")
      ->capture_default_str();
  command
      ->add_option("--total-steps", options->total_steps,
                   "Steps of the whole run, for progress and ETA (optional)")
      ->check(whole_number_in(0, kMaxSteps));
  command
      ->add_option("--status-interval", options->status_interval,
                   "Seconds between status lines when stderr is not a terminal")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxGraceSeconds, /*min_excluded=*/true));
  command
      ->add_option("--monitor-address", options->monitor_address,
                   "Host name, IPv4 address or interface of this host that ranks on other hosts "
                   "reach the launcher at (default: the address of the interface that routes to "
                   "them; never loopback when a rank runs elsewhere)")
      ->envname("LOCKSTEP_LAUNCHER_ADDRESS");
  command->add_flag("--monitor-bind-all", options->monitor_bind_all,
                    "Listen for ranks on every address of this host, not only the advertised one "
                    "(for an advertised address this host does not hold, behind NAT)");
  command->add_flag("--allow-unmonitored", options->allow_unmonitored,
                    "Let ranks that cannot reach the launcher train on unwatched (no hang "
                    "detection, no restarts), and let a program that never reports end as a "
                    "success; without it both are errors");
  auto* metrics_port =
      command
          ->add_option("--metrics-port", options->metrics_port,
                       "Serve Prometheus metrics on http://ADDRESS:PORT/metrics while the run "
                       "lasts (step, speed, loss, goodput, checkpoints, each rank's heartbeat); "
                       "0 picks a free port, printed at the start")
          ->check(whole_number_in(0, 65535));
  command
      ->add_option("--metrics-address", options->metrics_address,
                   "The IPv4 address /metrics listens on: 127.0.0.1 keeps it to this host, "
                   "0.0.0.0 opens it to every network this host is on")
      ->capture_default_str()
      ->needs(metrics_port);
  command->add_option("--mpirun", options->mpirun, "The mpirun to use")->capture_default_str();
  auto* slurm = command->add_flag(
      "--slurm", options->slurm,
      "Start ranks with srun --mpi=pmix (the default inside an allocation, when SLURM_JOB_ID "
      "is set); an error outside one");
  command
      ->add_flag("--no-slurm", options->no_slurm,
                 "Start ranks with mpirun even inside a Slurm allocation")
      ->excludes(slurm);
  command->add_option("--srun", options->srun, "The srun to use")->capture_default_str();
  command
      ->add_option("--min-nodes", options->min_nodes,
                   "Fewest hosts (Slurm nodes) to go on with after leaving out failing or lost "
                   "ones; with fewer the run stops")
      ->capture_default_str()
      ->check(whole_number_in(0, kMaxRanks));
  command
      ->add_option("--exclude-after", options->exclude_after,
                   "Failed attempts that implicate a host (Slurm node) before later attempts "
                   "leave it out; a lost host is left out at once. A spare host (one the ranks "
                   "do not need) takes its place, else the run goes on with fewer ranks")
      ->capture_default_str()
      ->check(whole_number_in(0, 1'000'000));
  command
      ->add_option("--host-timeout", options->host_timeout,
                   "Seconds without a message from any rank of another host (ranks say they are "
                   "alive every second) before the host counts as lost and the job restarts "
                   "without it; 0 turns the check off")
      ->envname("LOCKSTEP_HOST_TIMEOUT")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxSeconds));
  command->add_flag("--no-requeue", options->no_requeue,
                    "Slurm: after SIGUSR1 (sbatch --signal=B:USR1@LEAD) checkpoint and stop, but "
                    "do not requeue the job");
  command->add_option("--scontrol", options->scontrol, "The scontrol to use")
      ->capture_default_str();
  command->add_flag("--dry-run", options->dry_run, "Print the mpirun command and exit");
  command
      ->add_option("--inject-failure", options->inject,
                   "Testing: send SIGNAL (default KILL; STOP makes a hang) to RANK once a "
                   "rank reports STEP, as RANK:STEP[:SIGNAL], or while the first checkpoint "
                   "at or after STEP is written, as RANK:STEPc[:SIGNAL]; repeatable, at most "
                   "one per attempt (the others wait for the next attempt)")
      ->allow_extra_args(false);
  command->add_option(
      "--inject-bitflip", options->inject_bitflip,
      "Testing: flip one bit of RANK's parameters after STEP, as RANK:STEP "
      "(first attempt only), to see the replica check (LOCKSTEP_REPLICA_CHECK_EVERY) "
      "catch silent data corruption; the program must use a lockstep::ReplicaCheck");
  command->add_option(
      "--inject-slow", options->inject_slow,
      "Testing: make RANK compute FACTOR times as long each step, as RANK:FACTOR (e.g. 2:3), "
      "to see the straggler detection name it; the program must report its steps with "
      "lockstep::Runtime::heartbeat");
  command
      ->add_option("--straggler-interval", options->straggler_interval,
                   "Seconds per straggler report: each report compares every rank's mean "
                   "compute time per step (the step less its waits for other ranks) with the "
                   "median of the other ranks'")
      ->capture_default_str()
      ->check(seconds_in(0, kMaxSeconds, /*min_excluded=*/true));
  command
      ->add_option(
          "--straggler-threshold", options->straggler_threshold,
          "A rank whose relative score (the other ranks' median compute time over its own) "
          "is below this straggles: 0.7 means about 1.4x slower than the median")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.99));
  command
      ->add_option("--straggler-reports", options->straggler_reports,
                   "Reports in a row a rank must straggle in before it is named (status line, "
                   "log, summary.json, /metrics)")
      ->capture_default_str()
      ->check(whole_number_in(1, 1'000'000));
  command->add_option("program", options->program, "The program and its arguments, after --")
      ->required();
  command->footer(
      "Exit codes: 0 success, 1 failed (restarts exhausted, or the program fails before its "
      "first step twice in a row), 2 usage error (nothing started), 3 stopped on request after "
      "a checkpoint (SIGINT, SIGTERM or SIGUSR1 to lockstep; run again to resume; inside "
      "Slurm SIGUSR1 also requeues the job).");
  command->callback([options, &exit_code] {
    check_environment();
    launcher::SupervisorOptions plan = plan_from(*options);
    if (!options->dry_run && options->metrics_port >= 0) {
      // Before the run directory: a port in use stops the run with nothing
      // made.
      plan.metrics = std::make_shared<launcher::MetricsServer>(options->metrics_address,
                                                               options->metrics_port);
    }
    if (!options->dry_run) make_run_dir(plan.run_dir);
    if (options->dry_run) {
      // Show the variables every attempt adds; their values exist only then.
      launcher::LaunchPlan shown = plan.plan;
      for (const char* name : {"LOCKSTEP_RUN_DIR", "LOCKSTEP_RESTART_COUNT",
                               "LOCKSTEP_MONITOR_ADDRESS", "LOCKSTEP_MONITOR_TOKEN"}) {
        shown.environment[name] = "";
      }
      std::cout << launcher::shell_quote(launcher::launch_argv(shown)) << "\n";
      exit_code = kExitSuccess;
      return;
    }
    exit_code = launcher::supervise(plan);
  });
}

}  // namespace lockstep::cli
