#include "supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attempt.h"
#include "flight_report.h"
#include "host_pool.h"
#include "laggard.h"
#include "line_log.h"
#include "lockstep/error.h"
#include "lockstep/files.h"
#include "metrics.h"
#include "metrics_server.h"
#include "monitor.h"
#include "output.h"
#include "preflight.h"
#include "process.h"
#include "slurm_job.h"
#include "status_line.h"
#include "straggler.h"
#include "timeline.h"
#include "unique_fd.h"

namespace lockstep::launcher {

namespace {

std::atomic<int> g_stop_requests{0};
// Only a second SIGINT (an impatient user) stops at once; a SIGTERM sent
// twice, as `timeout` does to its child and its process group, does not.
std::atomic<int> g_interrupts{0};
// The signal of the latest stop request: SIGUSR1 is Slurm's warning before
// the time limit (sbatch --signal=B:USR1@LEAD), which ends in a requeue.
std::atomic<int> g_last_signal{0};

// How long mpirun may take to notice a dead rank, end the job and say how
// the rank died (about 2 s here) before the launcher stops it without that
// report.
constexpr auto kMpirunVerdictWait = std::chrono::seconds(10);
// How long a hung job's ranks have to write their flight records before
// the job is stopped.
constexpr auto kFlightRecordWait = std::chrono::seconds(3);
// How long a job whose ranks all said they exit with code 0 may take to
// end before its processes are stopped.
constexpr auto kLingerAfterGoodbye = std::chrono::seconds(30);
// The grace (SIGTERM to SIGKILL) of a job that lost a host: its other ranks
// wait for the lost ones inside a collective and have nothing to save.
constexpr double kLostHostGraceSeconds = 1;
// The exit code of a job the collectives' watchdog aborted (MPI_Abort).
constexpr int kWatchdogExitCode = 3;
void on_stop_signal(int signal_number) {
  if (signal_number == SIGINT) g_interrupts.fetch_add(1);
  g_last_signal.store(signal_number);
  g_stop_requests.fetch_add(1);
}

Clock::duration duration_of(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string random_token() {
  std::ifstream random("/dev/urandom", std::ios::binary);
  unsigned char bytes[16] = {};
  random.read(reinterpret_cast<char*>(bytes), sizeof(bytes));
  if (!random) throw IoError("cannot read /dev/urandom for the run token");
  std::string token;
  for (const unsigned char byte : bytes) token += fmt::format("{:02x}", byte);
  return token;
}

// What the launcher tells the user while a job runs, besides its output:
// connections it refused (at most one line per interval) and a run
// directory that disappeared under it.
class Notices {
 public:
  Notices(std::filesystem::path run_dir, int port)
      : run_dir_(std::move(run_dir)), port_(port), run_dir_id_(identity(run_dir_)) {}

  void check(Clock::time_point now, const Monitor& monitor, StatusLine& status) {
    if (now < next_check_) return;
    next_check_ = now + std::chrono::seconds(1);
    const std::int64_t refused = monitor.refused();
    const std::int64_t failures = monitor.accept_failures();
    if ((refused > refused_reported_ || failures > failures_reported_) &&
        now >= next_refusal_line_) {
      status.print_line(
          fmt::format("lockstep: refused {} connection(s) to the heartbeat port {} without this "
                      "run's token{}; something other than this job's ranks connects to it "
                      "(counted in summary.json)",
                      refused - refused_reported_, port_,
                      failures > failures_reported_
                          ? fmt::format(", and ran out of file descriptors {} time(s)",
                                        failures - failures_reported_)
                          : ""),
          true);
      refused_reported_ = refused;
      failures_reported_ = failures;
      next_refusal_line_ = now + kRefusalLineInterval;
    }
    // Another writer (the timeline, a rank's flight record) may have made
    // the directory again before this check: another directory is a
    // removal too. Said once per change.
    const auto found = identity(run_dir_);
    if (found && found == run_dir_id_) return;
    std::error_code error;
    if (!found) files::create_directories(run_dir_, error);
    const auto now_there = identity(run_dir_);
    if (!now_there && !run_dir_id_) return;  // still gone; said already
    run_dir_id_ = now_there;
    status.print_line(
        fmt::format("lockstep: warning: the run directory {} was removed while the job ran; "
                    "checkpoints and logs written there before are lost; {}",
                    run_dir_.string(),
                    now_there ? "it is there again for what comes next"
                              : "it cannot be made again: " +
                                    (error ? error.message() : std::string("not a directory"))),
        true);
  }

 private:
  // The directory's device and inode; nullopt when it is not a directory.
  static std::optional<std::pair<dev_t, ino_t>> identity(const std::filesystem::path& dir) {
    struct stat info {};
    if (::stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) return std::nullopt;
    return std::pair{info.st_dev, info.st_ino};
  }

  static constexpr auto kRefusalLineInterval = std::chrono::seconds(30);
  std::filesystem::path run_dir_;
  int port_;
  std::optional<std::pair<dev_t, ino_t>> run_dir_id_;
  Clock::time_point next_check_{};
  Clock::time_point next_refusal_line_{};
  std::int64_t refused_reported_ = 0;
  std::int64_t failures_reported_ = 0;
};

struct RankState {
  int pid = 0;
  std::string host;
  Clock::time_point last_seen;  // any message, "alive" included
  std::int64_t last_step = -1;
  double step_seconds = 0;  // its last reported step time
  bool said_exit = false;
  int exit_code = 0;  // what it said it exits with
  std::optional<Clock::time_point> died_at;
  std::vector<CollectiveReport> collectives;  // as last reported
};

// This machine's host name, as a rank on it would report it.
std::string local_host_name() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// What the attempts of a run share.
struct RunShared {
  Monitor& monitor;
  StatusLine& status;
  std::vector<CheckpointEvent>& checkpoints;
  std::vector<InjectedFailure>& injected;
  Notices& notices;
  MetricsFeed& metrics;
  const std::filesystem::path& session_dir;  // the timeline's, of this start
};

// Everything about the attempt in progress.
class Attempt {
 public:
  Attempt(const SupervisorOptions& options, int index, const std::string& token,
          const RunShared& shared)
      : options_(options),
        token_entry_("LOCKSTEP_MONITOR_TOKEN=" + token),
        monitor_(shared.monitor),
        status_(shared.status),
        checkpoints_(shared.checkpoints),
        injected_(shared.injected),
        tails_(20),
        notices_(shared.notices),
        metrics_(shared.metrics),
        session_dir_(shared.session_dir),
        local_host_(local_host_name()),
        stragglers_(options.stragglers, Clock::now()) {
    record_.index = index;
  }

  AttemptRecord run(ChildProcess& job);

 private:
  void pump_output(ChildProcess& job, int timeout_ms);
  void print(const OutputLine& line);
  // Prints the notice of mpirun's that print() gathered, in one line.
  void flush_banner();
  // Keeps what a rank says when it cannot reach the launcher (its Runtime
  // logs "rank R on HOST cannot reach the launcher at ADDRESS (WHY)").
  void note_unreachable(std::string_view text);
  // Takes what it keeps (the collectives) out of `event`.
  void handle(RankEvent& event);
  // The state of `rank`, made on first sight; O(1) once made.
  RankState& rank_state(int rank);
  // The ranks as /metrics shows them.
  std::vector<RankView> rank_views(Clock::time_point now) const;
  void inject(std::int64_t step, bool at_checkpoint);
  // Scores the ranks' compute times when a straggler report is due, and
  // says which ranks are named or cleared.
  void check_stragglers(Clock::time_point now);
  void request_stop(ChildProcess& job);
  void find_hung_rank();
  // Where this attempt's ranks write their timelines and flight records.
  std::filesystem::path attempt_dir() const;
  // Waits a few seconds for the flight records that the ranks of a hung
  // job were asked for (Monitor::request_dump).
  void collect_flight_records(ChildProcess& job);
  // Whether the job counts as hung at `now`: no heartbeat for the hang
  // timeout once steps began, else no first step within the start-up
  // timeout.
  bool hangs(Clock::time_point now) const;
  std::string hang_reason() const;
  // What the ranks' collectives say about who holds the others up.
  std::optional<Laggard> laggard() const;
  // Stops the job when every rank of another host has been silent for the
  // host timeout; returns true then.
  bool check_hosts(ChildProcess& job, Clock::time_point now);
  void attribute_failure();
  // The lowest rank that reported from `host`; -1 (the starter) when none.
  int first_rank_on(const std::string& host) const;
  // Makes `host` the root cause, `lost` or only silent, with `what`, and
  // shows its first rank's last lines.
  void blame_host(const std::string& host, bool lost, std::string what);
  // A rank on another host that died may have gone with its host, and
  // mpirun may end on its own when a host's daemon is gone: when such a
  // host cannot be entered, the host is the root cause.
  void check_failed_host();

  const SupervisorOptions& options_;
  const std::string token_entry_;  // in the environment of this run's ranks
  Monitor& monitor_;
  StatusLine& status_;
  std::vector<CheckpointEvent>& checkpoints_;
  std::vector<InjectedFailure>& injected_;  // each fires once over the whole run
  // At most one injected failure per attempt: a second one due before the
  // launcher has seen the first rank die would land in the same failed
  // attempt, and a test that counts recoveries would count one. The others
  // wait for the next attempt, which replays the steps since the checkpoint.
  bool injected_one_ = false;
  AttemptRecord record_;
  std::map<int, RankState> ranks_;  // in rank order, for reports
  // The same ranks by number, for the work per heartbeat.
  std::unordered_map<int, RankState*> rank_index_;
  int clean_exits_ = 0;  // ranks that said they exit with code 0
  OutputTails tails_;
  MpirunMessageParser mpirun_messages_;
  LineSplitter out_lines_;
  LineSplitter err_lines_;
  Clock::time_point last_activity_;
  bool any_hello_ = false;  // some rank connected: the program speaks to lockstep
  // When every rank had said it exits with code 0; its processes may still
  // hang in their teardown (PyTorch's process groups are known to).
  std::optional<std::string> banner_;  // a notice of mpirun's being gathered
  bool banner_stderr_ = false;
  std::optional<Clock::time_point> goodbye_at_;
  bool lingering_ = false;  // such processes were stopped
  bool any_step_ = false;   // start-up is over: the hang timeout applies
  int stop_requests_seen_ = 0;
  bool stop_asked_ = false;
  bool hang_ = false;
  bool ranks_stopped_ = false;  // ranks stopped early on a signal of their own
  int hung_rank_ = -1;
  std::string hang_evidence_;       // why hung_rank_ is blamed
  std::optional<RankEvent> fault_;  // the first fault a rank reported
  // When the ranks' flight records were due (Unix ns): a rank that writes
  // later does so after the stop resumed it.
  std::optional<std::int64_t> flight_deadline_ns_;
  pid_t starter_pid_ = 0;
  int world_size_ = 0;
  bool starter_killed_ = false;  // mpirun/srun ended by a signal lockstep did not send
  Notices& notices_;
  MetricsFeed& metrics_;
  const std::filesystem::path& session_dir_;
  const std::string local_host_;
  StragglerDetector stragglers_;
  std::string silent_host_;        // a host whose ranks all fell silent
  std::string silent_evidence_;    // what the launcher saw of it
  bool silent_host_lost_ = false;  // ... and it cannot be entered (or is under Slurm)
};

void Attempt::flush_banner() {
  if (!banner_) return;
  const std::string text = std::move(*banner_);
  banner_.reset();
  if (text.empty()) return;
  status_.print_line((options_.plan.starter == Starter::kSrun ? "[srun] " : "[mpirun] ") + text,
                     banner_stderr_);
}

void Attempt::print(const OutputLine& line) {
  tails_.add(line);
  note_unreachable(line.text);
  std::string prefix;
  if (line.rank < 0) {
    mpirun_messages_.feed(line.text);
    // mpirun's notices come as paragraphs between lines of dashes: each is
    // told in one line.
    const std::string_view text = line.text;
    const auto first = text.find_first_not_of(" \t");
    const auto last = text.find_last_not_of(" \t\r");
    const std::string_view body =
        first == std::string_view::npos ? std::string_view() : text.substr(first, last - first + 1);
    if (body.size() >= 20 && body.find_first_not_of('-') == std::string_view::npos) {
      if (banner_) {
        flush_banner();
      } else {
        banner_ = std::string();
        banner_stderr_ = line.is_stderr;
      }
      return;
    }
    if (banner_) {
      if (!body.empty()) {
        if (!banner_->empty()) *banner_ += ' ';
        *banner_ += body;
      }
      // A paragraph that never ends is not held back for ever.
      if (banner_->size() > 2048) flush_banner();
      return;
    }
    prefix = options_.plan.starter == Starter::kSrun ? "[srun] " : "[mpirun] ";
  } else if (!line.text.starts_with(fmt::format("[{}/", line.rank))) {
    // Lines from lockstep's logger already carry "[rank/world host]".
    const auto it = rank_index_.find(line.rank);
    prefix = options_.multi_host && it != rank_index_.end() && !it->second->host.empty()
                 ? fmt::format("[rank {} {}] ", line.rank, it->second->host)
                 : fmt::format("[rank {}] ", line.rank);
  }
  status_.print_line(prefix + line.text, line.is_stderr);
}

void Attempt::note_unreachable(std::string_view text) {
  const std::size_t at = text.find(" cannot reach the launcher at ");
  if (at == std::string_view::npos) return;
  const std::size_t start = text.rfind("rank ", at);
  const std::size_t end = text.find(')', at);
  if (start == std::string_view::npos || end == std::string_view::npos) return;
  const std::string what(text.substr(start, end + 1 - start));
  // One entry per rank: its log line and the exception's text say the same.
  const std::string who = what.substr(0, at - start);
  std::vector<std::string>& seen = record_.unreachable;
  const bool known = std::any_of(seen.begin(), seen.end(), [&](const std::string& entry) {
    return entry.starts_with(who + " ");
  });
  if (!known && seen.size() < AttemptRecord::kMaxUnreachable) seen.push_back(what);
}

void Attempt::pump_output(ChildProcess& job, int timeout_ms) {
  pollfd fds[2] = {{job.stdout_fd(), POLLIN, 0}, {job.stderr_fd(), POLLIN, 0}};
  if (poll(fds, 2, timeout_ms) <= 0) return;
  char chunk[65536];
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
    const ssize_t got = read(fds[i].fd, chunk, sizeof(chunk));
    // A signal (the user's ^C, Slurm's warning) interrupts a read; that is
    // not the end of the stream.
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    LineSplitter& lines = i == 0 ? out_lines_ : err_lines_;
    const bool srun = options_.plan.starter == Starter::kSrun;
    const auto emit = [&](std::string_view text) { print(parse_tagged_line(text, i == 1, srun)); };
    if (got > 0) {
      lines.feed(std::string_view(chunk, static_cast<std::size_t>(got)), emit);
    } else {
      if (const std::string rest = lines.take_rest(); !rest.empty()) emit(rest);
      i == 0 ? job.close_stdout() : job.close_stderr();
    }
  }
}

void Attempt::inject(std::int64_t step, bool at_checkpoint) {
  if (injected_one_) return;
  for (InjectedFailure& failure : injected_) {
    if (failure.fired || step < failure.step || failure.at_checkpoint != at_checkpoint) continue;
    const auto it = ranks_.find(failure.rank);
    if (it == ranks_.end() || it->second.pid <= 0) continue;
    failure.fired = true;
    if (!environment_has(it->second.pid, token_entry_)) {
      status_.print_line(fmt::format("lockstep: cannot inject a failure into rank {}: it does not "
                                     "run on this machine",
                                     failure.rank),
                         true);
      continue;
    }
    status_.print_line(
        fmt::format("lockstep: injecting a failure: signal {} ({}) to rank {} (pid {}) at {} {}",
                    failure.signal, strsignal(failure.signal), failure.rank, it->second.pid,
                    at_checkpoint ? "the checkpoint of step" : "step", step),
        true);
    kill(it->second.pid, failure.signal);
    injected_one_ = true;
    return;
  }
}

RankState& Attempt::rank_state(int rank) {
  const auto found = rank_index_.find(rank);
  if (found != rank_index_.end()) return *found->second;
  RankState& state = ranks_[rank];  // a map's elements never move
  rank_index_.emplace(rank, &state);
  return state;
}

void Attempt::handle(RankEvent& event) {
  if (event.restart_count != record_.index) return;  // a straggler of an earlier attempt
  RankState& rank = rank_state(event.rank);
  rank.last_seen = event.time;
  if (event.kind == RankEvent::Kind::kAlive) {
    // Says that the rank lives, not that the job gets anywhere: no hang
    // timeout is reset by it.
    rank.collectives = std::move(event.collectives);
    return;
  }
  last_activity_ = event.time;
  switch (event.kind) {
    case RankEvent::Kind::kHello:
      any_hello_ = true;
      rank.pid = event.pid;
      rank.host = event.host;
      world_size_ = std::max(world_size_, event.world_size);
      break;
    case RankEvent::Kind::kStep:
      any_step_ = true;
      rank.last_step = std::max(rank.last_step, event.step);
      rank.step_seconds = event.step_time;
      if (event.has_collectives) rank.collectives = std::move(event.collectives);
      if (event.compute_steps > 0) {
        stragglers_.on_step(event.rank, rank.host, event.compute, event.compute_steps);
      }
      if (event.rank == 0) {
        if (!record_.first_step_at) {
          record_.first_step_at = event.time;
          record_.first_step = event.step;
        }
        record_.last_step_at = event.time;
        record_.last_step = event.step;
        record_.step_seconds = event.step_time;
        status_.on_step(event.step, event.metrics, event.time);
      }
      if (event.rank == 0) inject(event.step, false);
      break;
    case RankEvent::Kind::kCheckpoint:
      if (event.rank == 0) {
        checkpoints_.push_back({event.time, event.step, event.stall});
        status_.on_checkpoint(event.step);
        inject(event.step, true);
      }
      break;
    case RankEvent::Kind::kExit: {
      // Counted as they come: counting every rank at each goodbye would be
      // quadratic in the ranks at the end of every run.
      const bool was_clean = rank.said_exit && rank.exit_code == 0;
      rank.said_exit = true;
      rank.exit_code = event.exit_code;
      clean_exits_ += (event.exit_code == 0 ? 1 : 0) - (was_clean ? 1 : 0);
      if (!goodbye_at_ && world_size_ > 0 && clean_exits_ == world_size_) {
        goodbye_at_ = event.time;
      }
      ranks_stopped_ = ranks_stopped_ || event.stopped;
      if (event.rank == 0 && event.step > record_.last_step) {
        // Step heartbeats are rate-limited; the goodbye has the final step.
        record_.last_step = event.step;
        record_.last_step_at = event.time;
        status_.on_step(event.step, {}, event.time);
      }
      break;
    }
    case RankEvent::Kind::kFault:
      // The first fault a rank found and reported is the cause of what
      // follows (its abort, the others' lost connections).
      if (!fault_) {
        fault_ = event;
        status_.print_line(fmt::format("lockstep: rank {} reports: {}", event.rank, event.what),
                           true);
      }
      break;
    case RankEvent::Kind::kClosed:
      if (!rank.said_exit && !rank.died_at) {
        rank.died_at = event.time;
        if (!record_.failure_at) record_.failure_at = event.time;
      }
      break;
    case RankEvent::Kind::kAlive:
      break;
  }
}

std::vector<RankView> Attempt::rank_views(Clock::time_point now) const {
  std::vector<RankView> views;
  views.reserve(ranks_.size());
  for (const auto& [number, rank] : ranks_) {
    views.push_back({.rank = number,
                     .host = rank.host,
                     .heartbeat_age = std::chrono::duration<double>(now - rank.last_seen).count(),
                     .last_step = rank.last_step,
                     .step_seconds = rank.step_seconds,
                     .exited = rank.said_exit,
                     .compute_seconds = std::nullopt,
                     .relative_score = std::nullopt,
                     .straggler = false});
    const auto score = stragglers_.scores().find(number);
    if (score != stragglers_.scores().end()) {
      views.back().compute_seconds = score->second.compute_seconds;
      views.back().relative_score = score->second.relative;
    }
  }
  std::set<int> straggling;
  for (const StragglerRecord& straggler : stragglers_.current()) straggling.insert(straggler.rank);
  for (RankView& view : views) view.straggler = straggling.contains(view.rank);
  return views;
}

void Attempt::check_stragglers(Clock::time_point now) {
  const std::vector<StragglerDetector::Change> changes = stragglers_.tick(now, status_.step());
  if (changes.empty()) return;
  for (const StragglerDetector::Change& change : changes) {
    const StragglerRecord& record = change.record;
    status_.print_line(
        change.named ? fmt::format("lockstep: straggler: {}; every rank waits for it each step",
                                   describe(record))
                     : fmt::format("lockstep: rank {}{} no longer straggles", record.rank,
                                   record.host.empty() ? "" : " on " + record.host),
        true);
  }
  const std::vector<StragglerRecord> current = stragglers_.current();
  std::string text;
  if (!current.empty()) {
    const StragglerRecord& slowest = current.front();
    text = fmt::format("straggler rank {}{} {:.1f}x", slowest.rank,
                       slowest.host.empty() ? "" : " (" + slowest.host + ")", slowest.slowdown);
    if (current.size() > 1) text += fmt::format(" and {} more", current.size() - 1);
  }
  status_.set_stragglers(text);
}

void Attempt::request_stop(ChildProcess& job) {
  const int requests = g_stop_requests.load();
  if (requests == stop_requests_seen_) return;
  stop_requests_seen_ = requests;
  if (g_interrupts.load() >= 2) {
    status_.print_line("lockstep: second interrupt: stopping every rank now", true);
    job.stop_all(std::chrono::milliseconds(0));
    return;
  }
  // The ranks are asked once: a repeated SIGTERM (`timeout` sends one to its
  // child and one to its process group) would reach a rank that already
  // checkpointed and gave its signal handlers back, and kill it.
  if (stop_asked_) return;
  stop_asked_ = true;
  status_.print_line(
      "lockstep: stop requested: ranks will checkpoint and exit (interrupt again "
      "to stop at once)",
      true);
  bool signalled = false;
  if (options_.plan.starter == Starter::kSrun) {
    // Ranks may run on other nodes. srun forwards SIGUSR2 to every task
    // (a SIGTERM it would turn into SIGKILL); the runtime takes SIGUSR2 as
    // "checkpoint and stop".
    signalled = !ranks_.empty() && kill(job.pid(), SIGUSR2) == 0;
  } else {
    bool remote = false;
    for (const auto& [rank, state] : ranks_) {
      if (state.pid <= 0 || state.died_at) continue;
      if (environment_has(state.pid, token_entry_)) {
        signalled = kill(state.pid, SIGTERM) == 0 || signalled;
      } else {
        remote = true;
      }
    }
    // Ranks on other hosts: mpirun forwards SIGUSR2 to every rank.
    if (remote) signalled = kill(job.pid(), SIGUSR2) == 0 || signalled;
  }
  // Ranks not yet introduced cannot checkpoint; stop the job as a whole.
  if (!signalled)
    job.stop_all(duration_cast<std::chrono::milliseconds>(duration_of(options_.grace)));
}

std::optional<Laggard> Attempt::laggard() const {
  std::map<int, RankProgress> progress;
  for (const auto& [rank, state] : ranks_) progress[rank] = {state.host, state.collectives};
  return find_laggard(progress);
}

void Attempt::find_hung_rank() {
  // Before the job is stopped: a rank that never entered a collective the
  // others wait in is the culprit (its host may be anywhere: this needs
  // nothing but the heartbeats); else a rank that is stopped or stuck in the
  // kernel on this machine; else the one that reported the lowest step, and
  // of those the one silent for longest.
  if (const std::optional<Laggard> behind = laggard()) {
    hung_rank_ = behind->rank;
    hang_evidence_ = "it " + behind->what;
    return;
  }
  const RankState* culprit = nullptr;
  bool culprit_stuck = false;
  for (const auto& [rank, state] : ranks_) {
    const char process = state.pid > 0 && !options_.multi_host ? process_state(state.pid) : 0;
    const bool stuck = process == 'T' || process == 't' || process == 'D';
    const bool earlier =
        culprit == nullptr || state.last_step < culprit->last_step ||
        (state.last_step == culprit->last_step && state.last_seen < culprit->last_seen);
    if ((stuck && !culprit_stuck) || (stuck == culprit_stuck && earlier)) {
      culprit = &state;
      culprit_stuck = stuck;
      hung_rank_ = rank;
      hang_evidence_ = stuck ? fmt::format("its process {} is {}", state.pid,
                                           process == 'D' ? "stuck in the kernel" : "stopped")
                             : fmt::format("it reported the lowest step, {}", state.last_step);
    }
  }
}

// The hosts of `hosts` that cannot be entered the way mpirun enters them,
// all tried at once, each within a few seconds.
std::vector<HostProblem> entry_problems(const std::vector<std::string>& hosts) {
  constexpr std::chrono::seconds kProbeTimeout{3};
  return preflight_hosts(hosts, rsh_agent(kProbeTimeout), kProbeTimeout);
}

int Attempt::first_rank_on(const std::string& host) const {
  for (const auto& [rank, state] : ranks_) {
    if (same_host(state.host, host)) return rank;
  }
  return -1;
}

void Attempt::blame_host(const std::string& host, bool lost, std::string what) {
  record_.failed_rank = -1;
  record_.failed_host = host;
  record_.host_lost = lost;
  record_.outside_kill = lost;
  record_.failure = std::move(what);
  const auto& tail = tails_.of(first_rank_on(host));
  record_.tail.assign(tail.begin(), tail.end());
}

void Attempt::check_failed_host() {
  if (record_.host_lost || hang_ || !record_.failed_process.empty() || !options_.multi_host ||
      options_.plan.starter != Starter::kMpirun) {
    return;
  }
  // Every other host the ranks ran on, the failed rank's first: when a host
  // vanishes, mpirun ends the job and the first rank to go may be anywhere.
  std::vector<std::string> hosts;
  if (record_.failed_rank >= 0) hosts.push_back(record_.failed_host);
  for (const auto& [rank, state] : ranks_) {
    if (std::find(hosts.begin(), hosts.end(), state.host) == hosts.end()) {
      hosts.push_back(state.host);
    }
  }
  // No rank got as far as saying hello (mpirun could not start its daemon on
  // a host that vanished since preflight): every host of the list.
  if (ranks_.empty()) hosts = options_.remote_hosts;
  std::erase_if(
      hosts, [&](const std::string& host) { return host.empty() || same_host(host, local_host_); });
  if (hosts.empty()) return;
  const std::vector<HostProblem> problems = entry_problems(hosts);
  if (problems.empty()) return;
  const HostProblem& lost = problems.front();
  const std::string first =
      record_.failed_rank >= 0
          ? fmt::format(
                "rank {}{} {}", record_.failed_rank,
                same_host(record_.failed_host, lost.host) ? " there" : " on " + record_.failed_host,
                record_.failure)
          : record_.failure;
  // The host went when its ranks fell silent, before the deaths it caused.
  std::optional<Clock::time_point> last_heard;
  for (const auto& [rank, state] : ranks_) {
    if (same_host(state.host, lost.host) && (!last_heard || state.last_seen > *last_heard)) {
      last_heard = state.last_seen;
    }
  }
  if (last_heard && (!record_.failure_at || *last_heard < *record_.failure_at)) {
    record_.failure_at = last_heard;
  }
  blame_host(lost.host, /*lost=*/true,
             fmt::format("it cannot be entered ({}); first seen: {}", lost.problem, first));
}

bool Attempt::check_hosts(ChildProcess& job, Clock::time_point now) {
  if (options_.host_timeout <= 0 || !options_.multi_host || record_.failure_at) return false;
  const auto limit = duration_of(options_.host_timeout);
  struct Silence {
    std::vector<int> ranks;
    Clock::time_point last_heard{};
  };
  std::map<std::string, Silence> silent;
  std::set<std::string> heard;
  for (const auto& [rank, state] : ranks_) {
    if (state.pid <= 0 || state.said_exit || state.died_at || state.host.empty()) continue;
    if (now - state.last_seen <= limit || same_host(state.host, local_host_)) {
      heard.insert(state.host);
      continue;
    }
    Silence& entry = silent[state.host];
    entry.ranks.push_back(rank);
    entry.last_heard = std::max(entry.last_heard, state.last_seen);
  }
  for (const auto& [host, entry] : silent) {
    if (heard.contains(host)) continue;  // some of its ranks still speak
    const double quiet = std::chrono::duration<double>(now - entry.last_heard).count();
    std::string evidence = fmt::format(
        "no message from its {} {} ({}) for {:.1f} s", entry.ranks.size(),
        entry.ranks.size() == 1 ? "rank" : "ranks", fmt::join(entry.ranks, ", "), quiet);
    bool lost = !heard.empty();
    if (options_.plan.starter == Starter::kMpirun) {
      // Enter it the way mpirun does: a host that answers is not lost, its
      // ranks are frozen or cut off from the launcher only.
      const std::vector<HostProblem> problems = entry_problems({host});
      const std::string problem = problems.empty() ? "" : problems.front().problem;
      lost = !problem.empty();
      evidence += lost ? fmt::format(", and it cannot be entered ({})", problem)
                       : ", though the host can be entered (its ranks are frozen, or cut off "
                         "from this host)";
    }
    if (!lost && heard.empty())
      continue;  // all silent and the host answers: the hang timeout decides
    silent_host_ = host;
    silent_host_lost_ = lost;
    silent_evidence_ = evidence;
    record_.failure_at = entry.last_heard;
    record_.detected_at = now;
    status_.print_line(
        fmt::format("lockstep: {} {}: {}; stopping the job", lost ? "host" : "ranks on host",
                    lost ? host + " lost" : host + " stopped answering", evidence),
        true);
    // The ranks elsewhere wait for the lost ones inside a collective: there
    // is nothing for them to save, and no reason to wait the whole grace.
    record_.killed_after_grace = job.stop_all(std::chrono::milliseconds(
        static_cast<std::int64_t>(std::min(options_.grace, kLostHostGraceSeconds) * 1000)));
    return true;
  }
  return false;
}

// A signal a program raises by itself (a crash, an assertion), unlike
// SIGKILL or SIGTERM, which come from outside.
bool raised_by_program(int signal_number) {
  switch (signal_number) {
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
    case SIGABRT:
    case SIGTRAP:
    case SIGSYS:
      return true;
    default:
      return false;
  }
}

void Attempt::attribute_failure() {
  // The first rank to die is the cause; mpirun's verdict fills in how it died.
  std::optional<Clock::time_point> first;
  for (const auto& [rank, state] : ranks_) {
    if (state.died_at && (!first || *state.died_at < *first)) {
      first = state.died_at;
      record_.failed_rank = rank;
    }
  }
  const MpirunVerdict& verdict = mpirun_messages_.verdict();
  const char* starter = options_.plan.starter == Starter::kSrun ? "srun" : "mpirun";
  if (silent_host_.empty() && !verdict.failed_node.empty()) {
    // Slurm's own word that it lost a node, before any rank's death.
    silent_host_ = verdict.failed_node;
    silent_host_lost_ = true;
    silent_evidence_ = fmt::format("Slurm reports a node failure (srun: error: Node failure on {})",
                                   verdict.failed_node);
  }
  if (!silent_host_.empty()) {
    // The whole host went first; its ranks' lost connections and mpirun's
    // complaints about its daemon follow from that.
    blame_host(silent_host_, silent_host_lost_, silent_evidence_);
    return;
  }
  if (!hang_ && fault_) {
    record_.failed_rank = fault_->blamed.empty() ? fault_->rank : fault_->blamed.front();
    record_.failure = fault_->what;
    record_.program_fault = true;  // the program found it and stopped
    record_.failed_host = ranks_[record_.failed_rank].host;
    const auto& tail = tails_.of(record_.failed_rank);
    record_.tail.assign(tail.begin(), tail.end());
    return;
  }
  if (!hang_ && starter_killed_ && !verdict.names(record_.failed_rank)) {
    // mpirun (srun) died of a signal the launcher did not send: the ranks
    // that lost their connection went down with it, they are not the cause.
    record_.failed_rank = -1;
    record_.failed_process = fmt::format("{} (pid {})", starter, starter_pid_);
    record_.failure = fmt::format(
        "was killed by {} from outside lockstep; the ranks went down "
        "with it",
        record_.mpirun_status->str());
    record_.outside_kill = record_.mpirun_status->signal == SIGKILL;
    const auto& tail = tails_.of(-1);
    record_.tail.assign(tail.begin(), tail.end());
    return;
  }
  if (hang_) {
    record_.failed_rank = hung_rank_;
    record_.failure = fmt::format("{} (hang); {}", hang_reason(), hang_evidence_);
  } else if (record_.failed_rank < 0 ||
             (!verdict.names(record_.failed_rank) && verdict.rank >= 0 &&
              (verdict.signal != 0 || verdict.called_abort || verdict.exit_code))) {
    // mpirun's verdict says how a rank ended; the order in which the ranks'
    // connections closed, when several ended at once, does not.
    record_.failed_rank = verdict.rank;
  }
  if (!hang_) {
    if (verdict.names(record_.failed_rank) && verdict.signal != 0) {
      record_.failure =
          fmt::format("killed by signal {} ({})", verdict.signal, strsignal(verdict.signal));
      record_.outside_kill = verdict.signal == SIGKILL;
      record_.program_fault = raised_by_program(verdict.signal);
    } else if (verdict.names(record_.failed_rank) && verdict.called_abort &&
               verdict.exit_code == kWatchdogExitCode && laggard()) {
      // A collective's watchdog aborted the job: the rank that never
      // entered the collective is the cause, not the one whose watchdog
      // fired.
      const Laggard behind = *laggard();
      record_.failure = fmt::format("{}; the collective watchdog of rank {} aborted the job",
                                    behind.what, record_.failed_rank);
      record_.failed_rank = behind.rank;
    } else if (verdict.names(record_.failed_rank) && verdict.called_abort) {
      record_.failure =
          fmt::format("called MPI_Abort (error code {})", verdict.exit_code.value_or(-1));
      record_.program_fault = true;
    } else if (verdict.names(record_.failed_rank) && verdict.exit_code) {
      record_.failure = fmt::format("exited with code {}", *verdict.exit_code);
      record_.program_fault = true;
    } else if (record_.failed_rank >= 0) {
      record_.failure = "lost its connection to the launcher (the process ended)";
    } else {
      record_.failure =
          record_.mpirun_status ? "mpirun ended with " + record_.mpirun_status->str() : "unknown";
    }
  }
  if (record_.failed_rank >= 0) {
    record_.failed_host = ranks_[record_.failed_rank].host;
    if (record_.failed_host.empty() && verdict.names(record_.failed_rank)) {
      record_.failed_host = verdict.node;
    }
    const auto& tail = tails_.of(record_.failed_rank);
    record_.tail.assign(tail.begin(), tail.end());
  } else {
    const auto& tail = tails_.of(-1);
    record_.tail.assign(tail.begin(), tail.end());
  }
}

bool Attempt::hangs(Clock::time_point now) const {
  if (goodbye_at_) return false;  // done: only its processes' exit is awaited
  if (any_step_) return now - last_activity_ > duration_of(options_.hang_timeout);
  // Start-up: timed from the start, unless no rank ever connected and the
  // program may run unwatched (it does not speak to the launcher).
  if (!any_hello_ && options_.allow_unmonitored) return false;
  return now - record_.start > duration_of(options_.startup_timeout);
}

std::string Attempt::hang_reason() const {
  if (any_step_) return fmt::format("no heartbeat for {:.0f} s", options_.hang_timeout);
  return fmt::format(
      "no step heartbeat {:.0f} s after the start (--startup-timeout; {} rank(s) connected)",
      options_.startup_timeout, ranks_.size());
}

AttemptRecord Attempt::run(ChildProcess& job) {
  record_.start = Clock::now();
  starter_pid_ = job.pid();
  last_activity_ = record_.start;
  stop_requests_seen_ = g_stop_requests.load();
  bool stopping = false;
  std::optional<Clock::time_point> give_mpirun_until;
  while (true) {
    pump_output(job, 100);
    for (RankEvent& event : monitor_.drain()) handle(event);
    if (g_stop_requests.load() != stop_requests_seen_) {
      stopping = true;
      request_stop(job);
    }
    status_.tick(Clock::now());
    const auto now = Clock::now();
    notices_.check(Clock::now(), monitor_, status_);
    check_stragglers(now);
    if (metrics_.due(now)) metrics_.publish(now, record_, rank_views(now));
    if (const auto status = job.poll()) {
      record_.mpirun_status = *status;
      starter_killed_ = status->signal != 0 && !job.stopped_by_launcher();
      while (job.stdout_fd() >= 0 || job.stderr_fd() >= 0) pump_output(job, 200);
      flush_banner();
      break;
    }
    if (goodbye_at_ && !lingering_ && now - *goodbye_at_ > kLingerAfterGoodbye) {
      lingering_ = true;
      status_.print_line(
          fmt::format("lockstep: every rank said it exits with code 0 {:.0f} s ago, but the job "
                      "has not ended (a hang in the program's teardown?); stopping its processes",
                      std::chrono::duration<double>(kLingerAfterGoodbye).count()),
          true);
      job.stop_all(std::chrono::milliseconds(1000));
    }
    if (stopping) continue;
    if (record_.failure_at && !give_mpirun_until) {
      // mpirun notices a dead rank and ends the job itself, naming the rank
      // and how it died; give it that chance before stopping everything.
      give_mpirun_until = now + kMpirunVerdictWait;
    }
    if (give_mpirun_until && now > *give_mpirun_until) {
      record_.killed_after_grace =
          job.stop_all(std::chrono::milliseconds(static_cast<std::int64_t>(options_.grace * 1000)));
    }
    if (check_hosts(job, now)) continue;
    if (!record_.failure_at && hangs(now)) {
      hang_ = true;
      record_.failure_at = now;
      // The request goes first: the ranks write while the launcher looks
      // for the rank to blame, which at scale takes a moment.
      monitor_.request_dump();
      find_hung_rank();
      status_.print_line(fmt::format("lockstep: {}: the job hangs; stopping it", hang_reason()),
                         true);
      collect_flight_records(job);
      record_.killed_after_grace =
          job.stop_all(std::chrono::milliseconds(static_cast<std::int64_t>(options_.grace * 1000)));
    }
  }
  // Whatever happened, no process of this job may outlive it.
  const auto leftovers =
      job.stop_all(std::chrono::milliseconds(static_cast<std::int64_t>(options_.grace * 1000)));
  record_.killed_after_grace.insert(record_.killed_after_grace.end(), leftovers.begin(),
                                    leftovers.end());
  record_.survivors = descendants_of(getpid()).size();
  for (RankEvent& event : monitor_.drain()) handle(event);
  record_.end = Clock::now();
  for (const auto& [rank, state] : ranks_) {
    if (state.pid > 0) ++record_.ranks_reported;
  }
  record_.world_size = world_size_;
  record_.stragglers = stragglers_.records();
  status_.set_stragglers("");
  // Ranks that said goodbye and were stopped lingering finished their work.
  const bool clean =
      ((record_.mpirun_status && record_.mpirun_status->success()) || lingering_) && !hang_;
  if (clean && !record_.failure_at) {
    // Ranks may be asked to stop without the launcher: Slurm's preemption
    // signals the job steps, not the batch script.
    record_.outcome = stopping || ranks_stopped_ ? "stopped" : "success";
  } else {
    record_.outcome = hang_ ? "hang" : "failed";
    if (!record_.failure_at) record_.failure_at = record_.end;
    attribute_failure();
    check_failed_host();
    if (const auto verdict = read_flight_records(attempt_dir(), world_size_, flight_deadline_ns_)) {
      record_.flight = verdict->to_json();
      status_.print_line("lockstep: flight recorder: " + verdict->text(), true);
    }
  }
  return record_;
}

std::filesystem::path Attempt::attempt_dir() const {
  return session_dir_ / fmt::format("attempt-{}", record_.index);
}

void Attempt::collect_flight_records(ChildProcess& job) {
  const auto deadline = Clock::now() + kFlightRecordWait;
  // The ranks that introduced themselves, each of which may answer.
  const auto written = [this] {
    std::size_t count = 0;
    for (const auto& [rank, state] : ranks_) {
      std::error_code error;
      if (std::filesystem::exists(attempt_dir() / fmt::format("flight-rank-{}.json", rank),
                                  error)) {
        ++count;
      }
    }
    return count;
  };
  while (Clock::now() < deadline && written() < std::max<std::size_t>(1, ranks_.size())) {
    pump_output(job, 100);
    for (RankEvent& event : monitor_.drain()) handle(event);
  }
  flight_deadline_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
}

// Whether any rank of the run ever reported to the launcher.
bool monitored(const std::vector<AttemptRecord>& attempts) {
  return std::any_of(attempts.begin(), attempts.end(),
                     [](const AttemptRecord& attempt) { return attempt.ranks_reported > 0; });
}

// A job whose ranks never report cannot be watched: no hang detection, no
// steps, no goodput. Say so instead of reporting a quiet success; unless
// the user asked for an unmonitored run, such an end is not a success.
void warn_if_unmonitored(const AttemptRecord& record, const std::string& address,
                         bool allow_unmonitored, StatusLine& status) {
  if (record.ranks_reported == 0) {
    status.print_line(
        fmt::format("lockstep: {}: no rank of attempt {} ever reported to the launcher at "
                    "{}: the program does not create a lockstep::Runtime, or its ranks could not "
                    "reach that address (see their log lines). The job was not monitored: a hang "
                    "would not have been detected, and no step or goodput is known{}",
                    allow_unmonitored ? "warning" : "error", record.index + 1, address,
                    allow_unmonitored ? ""
                                      : ". Not counted as a success; pass --allow-unmonitored "
                                        "to run a program that does not report"),
        true);
  } else if (record.world_size > record.ranks_reported) {
    status.print_line(
        fmt::format("lockstep: warning: only {} of {} ranks of attempt {} reported to the "
                    "launcher at {}; the others were not monitored",
                    record.ranks_reported, record.world_size, record.index + 1, address),
        true);
  }
}

// The hosts (or Slurm nodes) the launcher may leave out and replace; none
// for a job on this machine alone, or in a one-node allocation.
std::optional<HostPool> make_pool(const SupervisorOptions& options) {
  PoolRules rules{.ranks = options.plan.ranks,
                  .min_hosts = options.min_hosts,
                  .exclude_after = options.exclude_after};
  if (options.plan.starter == Starter::kSrun) {
    if (options.slurm.node_names.empty()) return std::nullopt;
    std::vector<Host> nodes;
    for (const std::string& name : options.slurm.node_names) {
      nodes.push_back({name, options.slurm.ranks_per_node});
    }
    rules.noun = "node";
    if (rules.ranks <= 0) rules.ranks = options.slurm.ranks_per_node * options.slurm.nodes;
    return HostPool(std::move(nodes), rules);
  }
  if (options.plan.hosts.empty()) return std::nullopt;
  return HostPool(options.plan.hosts, rules);
}

// Sizes the next attempt from what the pool has left: mpirun gets the hosts
// it needs (spares stay out of its list), srun the nodes to leave out and the
// count of nodes and ranks.
void apply(const HostPool& pool, LaunchPlan& plan) {
  const PoolLayout layout = pool.layout();
  if (plan.starter == Starter::kSrun) {
    // Nothing left out and no spare: srun takes the allocation as it is.
    if (pool.left_out().empty() && layout.spares.empty()) return;
    plan.excluded_nodes.clear();
    for (const LeftOut& entry : pool.left_out()) plan.excluded_nodes.push_back(entry.host);
    plan.nodes = static_cast<int>(layout.hosts.size());
  } else {
    plan.hosts = layout.hosts;
  }
  plan.ranks = layout.ranks;
}

// Checks every remaining host before an attempt the way the attempt will
// use it: a host list's hosts are entered with mpirun's rsh agent, all at
// once; a Slurm allocation's nodes are looked up in Slurm's own view (a
// node it counts DOWN or NOT_RESPONDING). A host that fails is left out of
// the pool at once. Returns the record of an attempt that was not started
// when too few hosts remain then; nullopt when the attempt can start.
std::optional<AttemptRecord> preflight(const SupervisorOptions& options, HostPool* pool, int index,
                                       StatusLine& status) {
  const bool slurm = options.plan.starter == Starter::kSrun;
  constexpr std::chrono::seconds kPreflightTimeout{10};
  AttemptRecord record;
  record.index = index;
  record.start = Clock::now();
  std::vector<HostProblem> problems;
  std::size_t checked = 0;
  std::string how;
  if (slurm) {
    if (pool == nullptr) return std::nullopt;
    const std::vector<std::string> nodes = pool->remaining();
    checked = nodes.size();
    how = "Slurm";
    try {
      for (const UnusableNode& node : unusable_nodes(options.slurm, nodes)) {
        problems.push_back({node.name, "Slurm reports it " + node.state});
      }
    } catch (const IoError& error) {
      status.print_line(fmt::format("lockstep: warning: {}; starting attempt {} without Slurm's "
                                    "view of the nodes",
                                    error.what(), index + 1),
                        true);
      return std::nullopt;
    }
  } else {
    if (options.remote_hosts.empty()) return std::nullopt;
    const std::vector<std::string> remaining =
        pool != nullptr ? pool->remaining() : options.remote_hosts;
    std::vector<std::string> hosts;
    for (const std::string& host : options.remote_hosts) {
      if (std::find(remaining.begin(), remaining.end(), host) != remaining.end()) {
        hosts.push_back(host);
      }
    }
    checked = hosts.size();
    const std::vector<std::string> agent = rsh_agent(kPreflightTimeout);
    how = fmt::format("{}", fmt::join(agent, " "));
    problems = preflight_hosts(hosts, agent, kPreflightTimeout);
  }
  record.end = Clock::now();
  if (problems.empty()) return std::nullopt;
  for (const HostProblem& problem : problems) {
    record.tail.push_back(problem.host + ": " + problem.problem);
    status.print_line(
        slurm ? fmt::format("lockstep: preflight: node {}: {}", problem.host, problem.problem)
              : fmt::format("lockstep: preflight: host {} cannot be entered with {}: {}",
                            problem.host, how, problem.problem),
        true);
    if (pool == nullptr) continue;
    const std::string why = slurm ? problem.problem : "cannot be entered: " + problem.problem;
    if (const auto change = pool->implicate(problem.host, /*lost=*/true, why, index + 1)) {
      status.print_line(*change, true);
    }
  }
  if (pool != nullptr && pool->shortfall().empty()) return std::nullopt;
  record.outcome = "preflight";
  record.failure_at = record.end;
  record.failed_host = problems.front().host;
  record.failure =
      slurm ? problems.front().problem : "cannot be entered: " + problems.front().problem;
  record.host_lost = true;
  record.outside_kill = true;
  status.print_line(
      fmt::format("lockstep: not starting attempt {}: {} of {} host(s) failed preflight ({:.1f} "
                  "s); {}",
                  index + 1, problems.size(), checked,
                  std::chrono::duration<double>(record.end - record.start).count(),
                  pool != nullptr ? pool->shortfall()
                                  : "bring them back or take them out of the host list"),
      true);
  return record;
}

// Ranks that could not reach the launcher: name them, the address they
// were given and why it was chosen, and what to set.
void report_unreachable(const AttemptRecord& record, const MonitorEndpoint& endpoint,
                        const std::string& address, StatusLine& status) {
  status.print_line(
      fmt::format("lockstep: attempt {} failed: {} rank(s) cannot reach the launcher at {}:",
                  record.index + 1, record.unreachable.size(), address),
      true);
  for (const std::string& what : record.unreachable) status.print_line("  " + what, true);
  const std::string addresses = describe(local_addresses());
  status.print_line(
      fmt::format("lockstep: the launcher advertised {} ({}). Give --monitor-address (or "
                  "LOCKSTEP_LAUNCHER_ADDRESS) an address or interface of this host that the "
                  "ranks' hosts reach (this host has: {}), or pass --allow-unmonitored to train "
                  "unwatched; not restarting, since every attempt would fail the same way",
                  endpoint.advertised, endpoint.reason, addresses),
      true);
}

void report_failure(const AttemptRecord& record, StatusLine& status) {
  std::string where;
  if (record.failed_rank >= 0) {
    where = fmt::format("rank {}{}", record.failed_rank,
                        record.failed_host.empty() ? "" : " on " + record.failed_host);
  } else if (!record.failed_host.empty() && record.failed_process.empty()) {
    where = (record.host_lost ? "host " : "the ranks on host ") + record.failed_host;
  } else {
    where = record.failed_process.empty() ? std::string("the job") : record.failed_process;
  }
  status.print_line(fmt::format("lockstep: attempt {} {} at step {}: first failure: {}{} {}",
                                record.index + 1, record.outcome, record.last_step, where,
                                record.host_lost ? " lost:" : "", record.failure),
                    true);
  if (!record.tail.empty()) {
    status.print_line(fmt::format("lockstep: last lines of {}:", where), true);
    for (const std::string& line : record.tail) status.print_line("  | " + line, true);
  }
  if (record.survivors != 0) {
    status.print_line(
        fmt::format("lockstep: error: {} processes of the job survived the stop", record.survivors),
        true);
  }
}

}  // namespace

InjectedFailure parse_injected_failure(const std::string& text) {
  static const std::map<std::string, int> kSignals = {
      {"KILL", SIGKILL}, {"TERM", SIGTERM}, {"STOP", SIGSTOP}, {"SEGV", SIGSEGV},
      {"ABRT", SIGABRT}, {"INT", SIGINT},   {"USR1", SIGUSR1}};
  const auto fail = [&] {
    return UsageError(
        fmt::format("--inject-failure '{}' is not RANK:STEP[:SIGNAL] (e.g. 2:50, "
                    "1:30:STOP, or 3:100c to wait for a checkpoint; SIGNAL: KILL, TERM, STOP, "
                    "SEGV, ABRT, INT, USR1 or a "
                    "number)",
                    text));
  };
  InjectedFailure failure;
  const std::size_t first = text.find(':');
  if (first == std::string::npos) throw fail();
  const std::size_t second = text.find(':', first + 1);
  try {
    std::size_t used = 0;
    failure.rank = std::stoi(text.substr(0, first), &used);
    if (used != first || failure.rank < 0) throw fail();
    std::string step = text.substr(
        first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
    if (!step.empty() && step.back() == 'c') {
      failure.at_checkpoint = true;
      step.pop_back();
    }
    failure.step = std::stoll(step, &used);
    if (used != step.size() || failure.step < 0) throw fail();
    if (second != std::string::npos) {
      const std::string name = text.substr(second + 1);
      if (const auto it = kSignals.find(name); it != kSignals.end()) {
        failure.signal = it->second;
      } else {
        failure.signal = std::stoi(name, &used);
        if (used != name.size() || failure.signal <= 0 || failure.signal >= NSIG) throw fail();
      }
    }
  } catch (const std::logic_error&) {
    throw fail();
  }
  return failure;
}

int supervise(SupervisorOptions options) {
  become_subreaper();
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  for (const int signal_number : {SIGINT, SIGTERM, SIGUSR1})
    sigaction(signal_number, &action, nullptr);
  g_stop_requests = 0;
  g_interrupts = 0;
  g_last_signal = 0;
  const bool slurm = options.plan.starter == Starter::kSrun;
  std::optional<HostPool> pool = make_pool(options);
  bool requeued = false;

  // Rank connections, pipes and files all need descriptors; use what the
  // hard limit allows (the monitor still leaves a reserve of them).
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  std::error_code made;
  files::create_directories(options.run_dir, made);
  if (made) {
    throw IoError(fmt::format("cannot create the run directory {}: {}", options.run_dir.string(),
                              made.message()));
  }
  const std::string token = random_token();
  Monitor monitor(options.monitor.bind, token);
  const std::string address = fmt::format("{}:{}", options.monitor.advertised, monitor.port());
  LineLog attempts_log(options.run_dir / "attempts.jsonl");
  Notices notices(options.run_dir, monitor.port());
  StatusLine status(options.total_steps, options.status_interval);
  if (options.multi_host || options.monitor.advertised != "127.0.0.1") {
    status.print_line(
        fmt::format("lockstep: ranks report to {} ({}){}", address, options.monitor.reason,
                    options.monitor.bind == "0.0.0.0" ? "; listening on every address" : ""),
        true);
  }
  if (options.metrics) status.print_line("lockstep: metrics at " + options.metrics->url(), true);
  std::vector<AttemptRecord> attempts;
  std::vector<CheckpointEvent> checkpoints;
  const Clock::time_point run_start = Clock::now();
  LauncherTimeline timeline(
      options.run_dir / "trace" /
          session_name(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count(),
                       getpid()),
      run_start);
  // The timeline is a view, not the record: a problem writing it is said
  // once and the run goes on.
  bool timeline_warned = false;
  const auto on_timeline = [&](const std::string& problem) {
    if (problem.empty() || timeline_warned) return;
    timeline_warned = true;
    status.print_line("lockstep: warning: the timeline is incomplete: " + problem, true);
  };
  on_timeline(timeline.start(options.slurm.job_id, options.slurm.restart_count));
  MetricsFeed metrics(options.metrics.get(), attempts, checkpoints, run_start, monitor, status);
  int exit_code = kRunFailed;
  int no_progress_streak = 0;

  for (int index = 0;; ++index) {
    if (const std::optional<AttemptRecord> refused =
            preflight(options, pool ? &*pool : nullptr, index, status)) {
      attempts.push_back(*refused);
      if (const std::string problem = attempts_log.append(to_json(*refused, run_start).dump());
          !problem.empty()) {
        status.print_line("lockstep: warning: " + problem, true);
      }
      break;
    }
    LaunchPlan plan = options.plan;
    if (pool) apply(*pool, plan);
    // The step of the failed attempt may linger (Slurm ends a step that
    // spans a lost node only once it marks the node DOWN).
    plan.overlap = slurm && index > 0;
    plan.environment["LOCKSTEP_RUN_DIR"] = options.run_dir.string();
    plan.environment["LOCKSTEP_RESTART_COUNT"] = std::to_string(index);
    plan.environment["LOCKSTEP_MONITOR_ADDRESS"] = address;
    plan.environment["LOCKSTEP_MONITOR_TOKEN"] = token;
    plan.environment["LOCKSTEP_TRACE_DIR"] = timeline.session_dir().string();
    status.set_restarts(index);
    ChildProcess job = ChildProcess::start(launch_argv(plan), plan.environment);
    Attempt attempt(
        options, index, token,
        {monitor, status, checkpoints, options.injected, notices, metrics, timeline.session_dir()});
    attempts.push_back(attempt.run(job));
    for (const Host& host : plan.hosts) attempts.back().hosts.push_back(host.name);
    if (pool && slurm) {
      for (const Host& host : pool->layout().hosts) attempts.back().hosts.push_back(host.name);
    }
    attempts.back().ranks_started = plan.ranks;
    const AttemptRecord& record = attempts.back();
    if (const std::string problem = attempts_log.append(to_json(record, run_start).dump());
        !problem.empty()) {
      status.print_line("lockstep: warning: " + problem, true);
    }
    on_timeline(timeline.attempt(record, checkpoints));
    if (!record.unreachable.empty() && !options.allow_unmonitored) {
      // Not a fault that a restart would mend: the ranks are told an address
      // they cannot reach.
      report_unreachable(record, options.monitor, address, status);
      break;
    }
    warn_if_unmonitored(record, address, options.allow_unmonitored, status);
    if (record.outcome == "success") {
      exit_code = record.ranks_reported > 0 || options.allow_unmonitored ? kRunSuccess : kRunFailed;
      break;
    }
    if (record.outcome == "stopped") {
      exit_code = kRunStopped;
      if (slurm && options.slurm.requeue && g_last_signal.load() == SIGUSR1) {
        // Slurm's warning before the time limit: the checkpoint is written,
        // so the job goes back to the queue and resumes from it.
        const std::string problem = requeue_job(options.slurm);
        requeued = problem.empty();
        if (requeued) {
          on_timeline(timeline.note("launcher",
                                    fmt::format("requeued Slurm job {}", options.slurm.job_id)));
        }
        status.print_line(
            requeued ? fmt::format("lockstep: stopped after a checkpoint at Slurm's warning "
                                   "signal; requeued job {}: it resumes when it starts again",
                                   options.slurm.job_id)
                     : fmt::format("lockstep: stopped after a checkpoint, but could not requeue "
                                   "job {} ({}); submit the job again to resume (was it "
                                   "submitted with --requeue?)",
                                   options.slurm.job_id, problem),
            true);
      } else if (g_stop_requests.load() == 0) {
        status.print_line(
            "lockstep: the ranks were asked to stop (a signal sent to them, not to lockstep; "
            "under Slurm, preemption) and stopped after a checkpoint; run again to resume",
            true);
      } else {
        status.print_line("lockstep: stopped on request after a checkpoint; run again to resume",
                          true);
      }
      break;
    }
    report_failure(record, status);
    if (g_stop_requests.load() > 0) break;
    if (pool && !record.failed_host.empty()) {
      if (const auto change =
              pool->implicate(record.failed_host, record.host_lost, record.failure, index + 2)) {
        status.print_line(*change, true);
      }
      if (const std::string shortfall = pool->shortfall(); !shortfall.empty()) {
        status.print_line("lockstep: not restarting: " + shortfall, true);
        break;
      }
    }
    // Only failures the program causes itself (a non-zero exit, MPI_Abort, a
    // crash signal, a fault it reports) may end the restarts early; a kill
    // from outside, a lost host or a death without a verdict before the
    // first step says nothing about a bug.
    no_progress_streak = record.first_step < 0 && record.program_fault ? no_progress_streak + 1 : 0;
    if (no_progress_streak >= 2) {
      status.print_line(
          "lockstep: the job failed twice in a row before completing a step: "
          "this looks like a bug in the program, not a fault; not restarting",
          true);
      break;
    }
    if (index >= options.max_restarts) {
      status.print_line(fmt::format("lockstep: giving up after {} restarts (--max-restarts)",
                                    options.max_restarts),
                        true);
      break;
    }
    status.print_line(fmt::format("lockstep: restarting the job ({} of {}); it resumes from the "
                                  "newest committed checkpoint",
                                  index + 1, options.max_restarts),
                      true);
    on_timeline(timeline.note(
        "launcher", fmt::format("restarting ({} of {})", index + 1, options.max_restarts)));
  }
  const Goodput goodput = compute_goodput(attempts, checkpoints, run_start, Clock::now());
  nlohmann::json summary = to_json(goodput);
  summary["exit_code"] = exit_code;
  summary["outcome"] = attempts.back().outcome;
  summary["heartbeats_refused"] = monitor.refused();
  summary["heartbeats_malformed"] = monitor.malformed();
  std::vector<std::string> left_out;
  if (pool) {
    nlohmann::json hosts = nlohmann::json::array();
    for (const LeftOut& entry : pool->left_out()) {
      left_out.push_back(entry.host);
      hosts.push_back({{"host", entry.host}, {"why", entry.why}, {"from_attempt", entry.attempt}});
    }
    summary["hosts_left_out"] = hosts;
  }
  if (slurm) {
    summary["slurm"] = {
        {"job_id", options.slurm.job_id},
        {"requeued", requeued},
        {"requeues", options.slurm.restart_count + (requeued ? 1 : 0)},
        {"excluded_nodes", left_out},
    };
  }
  summary["monitored"] = monitored(attempts);
  summary["heartbeat_accept_failures"] = monitor.accept_failures();
  summary["heartbeat_relays"] = monitor.relays();
  nlohmann::json stragglers = nlohmann::json::array();
  for (const AttemptRecord& attempt : attempts) {
    for (const StragglerRecord& straggler : attempt.stragglers) {
      nlohmann::json entry = to_json(straggler);
      entry["attempt"] = attempt.index;
      stragglers.push_back(std::move(entry));
    }
  }
  summary["stragglers"] = stragglers;
  if (const std::string problem =
          files::replace_file(options.run_dir / "summary.json", summary.dump(2) + "\n");
      !problem.empty()) {
    status.print_line("lockstep: warning: " + problem, true);
  }
  status.finish();
  if (monitored(attempts)) {
    std::cerr << describe(goodput) << "\n";
  } else {
    std::cerr << fmt::format(
        "goodput: unknown: no rank reported to the launcher, so the run was not monitored "
        "({:.1f} s wall time)\n",
        goodput.wall_seconds);
  }
  if (slurm) {
    std::cerr << fmt::format("  Slurm job {}: started {} time(s), requeued {} time(s)\n",
                             options.slurm.job_id, options.slurm.restart_count + 1,
                             options.slurm.restart_count + (requeued ? 1 : 0));
  }
  if (pool) {
    for (const LeftOut& entry : pool->left_out()) {
      std::cerr << fmt::format("  {} {} left out from attempt {} on: {}\n", pool->rules().noun,
                               entry.host, entry.attempt, entry.why);
    }
  }
  std::cerr << fmt::format("lockstep: attempts in {}, summary in {}\n",
                           (options.run_dir / "attempts.jsonl").string(),
                           (options.run_dir / "summary.json").string());
  return exit_code;
}

}  // namespace lockstep::launcher
