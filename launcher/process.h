// Child processes of the launcher: start one with its output on pipes, and
// make sure that a stopped job leaves no process behind.
#pragma once

#include <sys/types.h>

#include <csignal>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "unique_fd.h"

namespace lockstep::launcher {

// Makes this process the reaper of its orphaned descendants, so that ranks
// whose mpirun died are still ours to find, signal and reap.
void become_subreaper();

// How a process ended, from a wait status.
struct ExitStatus {
  int code = 0;    // exit code when exited normally
  int signal = 0;  // terminating signal, 0 when exited
  static ExitStatus from_wait_status(int status);
  bool success() const { return signal == 0 && code == 0; }
  std::string str() const;  // "exit code 1", "signal 9 (Killed)"
};

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH) in a process group of its own, with
  // `environment` added to this process's environment, stdout and stderr on
  // pipes. The child gets `death_signal` when the launcher dies, however it
  // dies (SIGKILL included), so that a job never outlives its launcher.
  // Throws IoError when it cannot be started.
  static ChildProcess start(const std::vector<std::string>& argv,
                            const std::map<std::string, std::string>& environment,
                            int death_signal = SIGTERM);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return stdout_fd_.get(); }
  int stderr_fd() const { return stderr_fd_.get(); }
  void close_stdout();
  void close_stderr();

  // The exit status once the process has ended (reaped); nullopt before.
  std::optional<ExitStatus> poll();

  // Stops the process and every descendant: SIGTERM to all, then SIGKILL to
  // whatever is left after `grace`. Returns the pids that needed SIGKILL.
  std::vector<pid_t> stop_all(std::chrono::milliseconds grace);
  // Like poll(), but reaps only this process and no orphan: for short
  // commands run while other threads run children of their own.
  std::optional<ExitStatus> poll_own();
  // SIGKILLs this process's group (it leads one) and reaps the process;
  // every other descendant of the launcher is left alone.
  void kill_group();
  // Whether stop_all() was called while the process was alive: a signal
  // that ended it may have come from the launcher itself.
  bool stopped_by_launcher() const { return stopped_by_launcher_; }

 private:
  ChildProcess() = default;
  // Reaps every ended child of this process without blocking (orphaned
  // ranks included), keeping the status when it is ours.
  void reap_all();

  pid_t pid_ = -1;
  UniqueFd stdout_fd_;
  UniqueFd stderr_fd_;
  std::optional<ExitStatus> status_;
  bool stopped_by_launcher_ = false;
};

// What a short command said and how it ended.
struct CommandResult {
  std::optional<ExitStatus> status;  // nullopt: killed after the timeout
  std::string out;                   // standard output, at most 64 KiB
  std::string err;                   // standard error, at most 64 KiB, trailing blanks cut
  // "" when it succeeded, else one line: "<argv0> ended with exit code 255:
  // <its stderr>", "<argv0> did not finish within 10 s", or why it could
  // not start.
  std::string problem;
};

// Runs `argv` with its output captured and waits for it at most `timeout`;
// then SIGKILLs its process group. Reaps only its own process, so several
// threads may run commands at once. Never throws for the command's own
// failures: they are in `problem`.
CommandResult run_bounded(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// True when the local process `pid` was started with `entry` ("NAME=value")
// in its environment: a pid a rank reported is only signalled when it is
// that rank here, not some other process on this machine with the same pid.
bool environment_has(pid_t pid, std::string_view entry);

// The state letter of a local process from /proc ('R', 'S', 'T' for
// stopped, ...), or 0 when it does not exist.
char process_state(pid_t pid);

// Every living descendant of `root` (children, their children, ...), read
// from /proc. Includes orphans re-parented to this process when it is a
// subreaper and `root` is this process.
std::vector<pid_t> descendants_of(pid_t root);

}  // namespace lockstep::launcher
