#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "lockstep/error.h"

extern char** environ;

namespace lockstep::launcher {

void become_subreaper() { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

ExitStatus ExitStatus::from_wait_status(int status) {
  ExitStatus result;
  if (WIFEXITED(status)) result.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

std::string ExitStatus::str() const {
  if (signal != 0) return fmt::format("signal {} ({})", signal, strsignal(signal));
  return fmt::format("exit code {}", code);
}

namespace {
struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

Pipe make_pipe() {
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) {
    throw IoError(fmt::format("cannot create pipes for the job's output: {}{}",
                              std::strerror(errno),
                              errno == EMFILE ? " (raise the limit with ulimit -n)" : ""));
  }
  return {UniqueFd(ends[0]), UniqueFd(ends[1])};
}
}  // namespace

ChildProcess ChildProcess::start(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& environment,
                                 int death_signal) {
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls are allowed.
  std::vector<std::string> env_storage;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const std::string name(text.substr(0, text.find('=')));
    if (!environment.contains(name)) env_storage.emplace_back(text);
  }
  for (const auto& [name, value] : environment) env_storage.push_back(name + "=" + value);
  std::vector<char*> env_pointers;
  for (std::string& entry : env_storage) env_pointers.push_back(entry.data());
  env_pointers.push_back(nullptr);
  std::vector<std::string> arg_storage = argv;
  std::vector<char*> arg_pointers;
  for (std::string& argument : arg_storage) arg_pointers.push_back(argument.data());
  arg_pointers.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw IoError(fmt::format("fork failed: {}", std::strerror(errno)));
  if (pid == 0) {
    // The job's own process group keeps a terminal's ^C away from it (the
    // launcher asks the ranks to checkpoint instead), so the kernel's
    // parent-death signal is what ties the job to the launcher's life.
    if (death_signal != 0) {
      prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0);
      if (getppid() != parent) _exit(128 + death_signal);  // died before prctl
    }
    setpgid(0, 0);
    dup2(out.write_end.get(), STDOUT_FILENO);
    dup2(err.write_end.get(), STDERR_FILENO);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execvpe(arg_pointers[0], arg_pointers.data(), env_pointers.data());
    const char message[] = "lockstep: cannot execute the job command\n";
    [[maybe_unused]] const ssize_t written = write(STDERR_FILENO, message, sizeof(message) - 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so there is no race with kill(-pid)
  ChildProcess child;
  child.pid_ = pid;
  child.stdout_fd_ = std::move(out.read_end);
  child.stderr_fd_ = std::move(err.read_end);
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_fd_(std::move(other.stdout_fd_)),
      stderr_fd_(std::move(other.stderr_fd_)),
      status_(other.status_),
      stopped_by_launcher_(other.stopped_by_launcher_) {}

ChildProcess::~ChildProcess() {
  close_stdout();
  close_stderr();
  if (pid_ > 0 && !status_) stop_all(std::chrono::milliseconds(2000));
}

void ChildProcess::close_stdout() { stdout_fd_.reset(); }

void ChildProcess::close_stderr() { stderr_fd_.reset(); }

std::optional<ExitStatus> ChildProcess::poll() {
  if (!status_ && pid_ > 0) reap_all();
  return status_;
}

namespace {
// Reads "pid (comm) state ppid ..." from /proc/<pid>/stat; comm may contain
// spaces and parentheses, so parsing starts after the last ')'.
bool read_stat(const std::filesystem::path& stat_path, char* state, int* ppid) {
  std::ifstream stat(stat_path);
  std::string line;
  if (!std::getline(stat, line)) return false;
  const std::size_t close_paren = line.rfind(')');
  if (close_paren == std::string::npos) return false;
  return std::sscanf(line.c_str() + close_paren + 1, " %c %d", state, ppid) == 2;
}
}  // namespace

bool environment_has(pid_t pid, std::string_view entry) {
  std::ifstream file(std::filesystem::path("/proc") / std::to_string(pid) / "environ",
                     std::ios::binary);
  std::string variable;
  while (std::getline(file, variable, '\0')) {
    if (variable == entry) return true;
  }
  return false;
}

char process_state(pid_t pid) {
  char state = 0;
  int ppid = 0;
  return read_stat(std::filesystem::path("/proc") / std::to_string(pid) / "stat", &state, &ppid)
             ? state
             : 0;
}

std::vector<pid_t> descendants_of(pid_t root) {
  std::map<pid_t, pid_t> parent_of;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (!read_stat(entry.path() / "stat", &state, &ppid)) continue;
    if (state == 'Z') continue;  // already dead, only waiting to be reaped
    parent_of[std::stoi(name)] = ppid;
  }
  std::vector<pid_t> found;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    for (const auto& [pid, ppid] : parent_of) {
      if (ppid == parent) {
        found.push_back(pid);
        frontier.push_back(pid);
      }
    }
  }
  return found;
}

std::optional<ExitStatus> ChildProcess::poll_own() {
  int status = 0;
  if (!status_ && pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = ExitStatus::from_wait_status(status);
  }
  return status_;
}

void ChildProcess::kill_group() {
  if (pid_ <= 0 || status_) return;
  stopped_by_launcher_ = true;
  kill(-pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = ExitStatus::from_wait_status(status);
}

void ChildProcess::reap_all() {
  int status = 0;
  pid_t pid = 0;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == pid_) status_ = ExitStatus::from_wait_status(status);
  }
}

std::vector<pid_t> ChildProcess::stop_all(std::chrono::milliseconds grace) {
  if (pid_ > 0 && !status_) stopped_by_launcher_ = true;
  const auto alive = [this] {
    // Our own descendants: mpirun, its ranks, and ranks orphaned to us.
    std::vector<pid_t> pids = descendants_of(getpid());
    std::erase_if(pids, [](pid_t pid) { return kill(pid, 0) != 0; });
    return pids;
  };
  for (const pid_t pid : alive()) kill(pid, SIGTERM);
  if (pid_ > 0) kill(-pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  std::vector<pid_t> remaining = alive();
  while (!remaining.empty() && std::chrono::steady_clock::now() < deadline) {
    reap_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    remaining = alive();
  }
  for (const pid_t pid : remaining) kill(pid, SIGKILL);
  if (pid_ > 0) kill(-pid_, SIGKILL);
  for (int i = 0; i < 250 && !alive().empty(); ++i) {
    reap_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  reap_all();
  return remaining;
}

CommandResult run_bounded(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CommandResult result;
  const std::string name = argv.empty() ? std::string("(nothing)") : argv.front();
  std::optional<ChildProcess> child;
  try {
    child.emplace(ChildProcess::start(argv, {}));
  } catch (const Error& error) {
    result.problem = error.what();
    return result;
  }
  constexpr std::size_t kMaxOutput = 64 * 1024;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool open[2] = {true, true};
  while ((open[0] || open[1]) && std::chrono::steady_clock::now() < deadline) {
    pollfd fds[2] = {{open[0] ? child->stdout_fd() : -1, POLLIN, 0},
                     {open[1] ? child->stderr_fd() : -1, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(1, left.count()))) < 0 &&
        errno != EINTR) {
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char chunk[4096];
      const ssize_t got = ::read(fds[i].fd, chunk, sizeof(chunk));
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got <= 0) {
        open[i] = false;
        continue;
      }
      std::string& into = i == 0 ? result.out : result.err;
      into.append(chunk, std::min(static_cast<std::size_t>(got),
                                  kMaxOutput - std::min(kMaxOutput, into.size())));
    }
  }
  while (!(result.status = child->poll_own()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  while (!result.err.empty() && std::isspace(static_cast<unsigned char>(result.err.back()))) {
    result.err.pop_back();
  }
  if (!result.status) {
    child->kill_group();
    result.problem = fmt::format("{} did not finish within {:g} s", name,
                                 std::chrono::duration<double>(timeout).count());
  } else if (!result.status->success()) {
    result.problem = fmt::format("{} ended with {}{}{}", name, result.status->str(),
                                 result.err.empty() ? "" : ": ", result.err);
  }
  return result;
}

}  // namespace lockstep::launcher
