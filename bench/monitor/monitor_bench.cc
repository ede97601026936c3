// The launcher's monitor under the heartbeats of N ranks on N/K nodes, on
// loopback: a child process plays the ranks (each rank on a connection of
// its own, or each node's relay on one connection, sending what
// lockstep::NodeRelay sends), and this process runs the real Monitor and
// drains it every 100 ms into a per-rank view, as `lockstep run` does.
// After a while every rank stops stepping (a hang) and the view must notice
// within the hang timeout.
//
// Prints one line of "key value" pairs: the CPU (cores) of the monitor
// process and of the monitor's own thread while heartbeats flow, its peak memory, how late
// heartbeats reach the view (p50, p99, max), and how long after the hang timeout the hang was seen.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "monitor.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

struct Options {
  int ranks = 1024;
  int ranks_per_node = 8;
  bool relay = true;
  double seconds = 20;      // heartbeats flow this long after everyone said hello
  double hang_timeout = 5;  // the view counts the job hung after this long without a step
  double step_rate = 5;     // a rank's step lines per second (the client's rate limit)
};

std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

void raise_descriptor_limit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

// CPU seconds of this process's threads other than the calling one: the
// monitor's own thread.
double other_threads_cpu_seconds() {
  const long ticks = sysconf(_SC_CLK_TCK);
  double total = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == std::to_string(gettid())) continue;
    std::ifstream stat(task.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const std::size_t end = text.rfind(')');
    if (end == std::string::npos) continue;
    std::istringstream fields(text.substr(end + 2));
    std::string field;
    double user = 0;
    double system = 0;
    for (int i = 3; fields >> field; ++i) {
      if (i == 14) user = std::stod(field);
      if (i == 15) {
        system = std::stod(field);
        break;
      }
    }
    total += (user + system) / static_cast<double>(ticks);
  }
  return total;
}

// VmHWM of this process, in MiB.
double peak_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmHWM:")) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

int connect_to(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) return fd;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::fprintf(stderr, "generator: connect: %s\n", std::strerror(errno));
  std::_Exit(3);
}

// The ranks: connects, says hello, then sends steps and alive reports at the
// real rates, spread evenly over each period, until `stop_ns`; then only
// alive reports (every rank waits in a collective) until killed.
// Seconds of the realtime clock, which a shell script reads too.
double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// `in_run`: the generator is the program of a real `lockstep run` (and
// `stop_ns` counts from when it is connected); it says
// when the ranks were all in, when they stopped, and when the launcher's
// request for flight records (sent when it finds the job hung) arrived.
[[noreturn]] void generate(const Options& options, int port, const std::string& token,
                           std::int64_t stop_ns, bool in_run) {
  prctl(PR_SET_NAME, "generator");  // apart from the monitor in profiles
  const int nodes = (options.ranks + options.ranks_per_node - 1) / options.ranks_per_node;
  const int connections = options.relay ? nodes : options.ranks;
  std::vector<int> fds;
  fds.reserve(static_cast<std::size_t>(connections));
  std::int64_t dropped = 0;
  const auto send_line = [&](int fd, const std::string& line) {
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
        static_cast<ssize_t>(line.size())) {
      ++dropped;
    }
  };
  const auto hello = [&](int rank) {
    return fmt::format(
        R"({{"type":"hello","token":"{}","rank":{},"world_size":{},"pid":{},"host":"node{}","restart_count":0}})",
        token, rank, options.ranks, 1000 + rank, rank / options.ranks_per_node);
  };
  for (int c = 0; c < connections; ++c) {
    const int fd = connect_to(port);
    fds.push_back(fd);
    if (options.relay) {
      std::string batch = R"({"type":"batch","messages":[)";
      for (int r = c * options.ranks_per_node;
           r < std::min(options.ranks, (c + 1) * options.ranks_per_node); ++r) {
        if (r != c * options.ranks_per_node) batch += ',';
        batch += hello(r);
      }
      send_line(fd, fmt::format(R"({{"type":"node","token":"{}","host":"node{}","pid":{}}})", token,
                                c, 1000 + c) +
                        "\n" + batch + "]}\n");
    } else {
      send_line(fd, hello(c) + "\n");
    }
  }
  // Ticks of 10 ms; a connection sends in the ticks of its phase.
  constexpr int kTickMs = 10;
  const int step_ticks =
      options.relay ? 100 : std::max(1, static_cast<int>(100 / options.step_rate) / 1);
  const int alive_ticks = 100;
  const std::int64_t start_ns = monotonic_ns();
  if (in_run) {
    stop_ns += start_ns;  // given as a duration from here
    std::printf("monitor_bench: all in at %.3f\n", unix_seconds());
  }
  bool said_stop = false;
  bool said_dump = false;
  std::string received;
  for (std::int64_t tick = 0;; ++tick) {
    const std::int64_t now = monotonic_ns();
    const bool stepping = now < stop_ns;
    if (in_run && !stepping && !said_stop) {
      said_stop = true;
      std::printf("monitor_bench: stopped stepping at %.3f\n", unix_seconds());
      std::fflush(stdout);
    }
    if (in_run && !said_dump) {
      char chunk[4096];
      const ssize_t got = recv(fds.front(), chunk, sizeof(chunk), MSG_DONTWAIT);
      if (got > 0) received.append(chunk, static_cast<std::size_t>(got));
      if (received.find("\"dump\"") != std::string::npos) {
        said_dump = true;
        std::printf("monitor_bench: the launcher asked for flight records at %.3f\n",
                    unix_seconds());
        std::fflush(stdout);
      }
      if (received.size() > 65536) received.erase(0, received.size() - 64);
    }
    const std::int64_t step = (now - start_ns) / 200'000'000;  // 5 steps a second, everywhere
    const std::string alive_entry = fmt::format(
        R"("collectives":[{{"channel":"mpi 1","started":{},"finished":{},"waiting_in":""}}])", step,
        step);
    for (int c = static_cast<int>(tick % step_ticks); c < connections; c += step_ticks) {
      const int fd = fds[static_cast<std::size_t>(c)];
      if (options.relay) {
        std::string batch = R"({"type":"batch","messages":[)";
        bool first = true;
        for (int r = c * options.ranks_per_node;
             r < std::min(options.ranks, (c + 1) * options.ranks_per_node); ++r) {
          // As NodeRelay sends it: a rank's newest step carries its alive
          // report; without a step, the alive report alone.
          if (stepping) {
            batch += fmt::format(
                R"({}{{"type":"step","rank":{},"step":{},"step_time":0.2,"compute":0.1,"steps":5,"metrics":{{"loss":0.5,"sent_ns":{}}},{}}})",
                first ? "" : ",", r, step, now, alive_entry);
          } else {
            batch += fmt::format(R"({}{{"type":"alive","rank":{},{}}})", first ? "" : ",", r,
                                 alive_entry);
          }
          first = false;
        }
        send_line(fd, batch + "]}\n");
      } else if (stepping) {
        send_line(
            fd,
            fmt::format(
                R"({{"type":"step","step":{},"step_time":0.2,"compute":0.1,"steps":1,"metrics":{{"loss":0.5,"sent_ns":{}}}}})",
                step, now) +
                "\n");
      }
    }
    if (!options.relay) {
      for (int c = static_cast<int>(tick % alive_ticks); c < connections; c += alive_ticks) {
        send_line(fds[static_cast<std::size_t>(c)], "{\"type\":\"alive\"," + alive_entry + "}\n");
      }
    }
    const std::int64_t next = start_ns + (tick + 1) * kTickMs * 1'000'000;
    const std::int64_t wait = next - monotonic_ns();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
    if (tick % 500 == 0 && dropped > 0) {
      std::fprintf(stderr, "generator: %lld lines not taken by the kernel\n",
                   static_cast<long long>(dropped));
    }
  }
}

struct View {
  std::int64_t last_step = -1;
  SteadyClock::time_point last_seen{};
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string mode = "relay";
  CLI::App app{"The launcher's monitor under N ranks' heartbeats"};
  app.add_option("--ranks", options.ranks)->check(CLI::Range(1, 1 << 20));
  app.add_option("--ranks-per-node", options.ranks_per_node)->check(CLI::Range(1, 1024));
  app.add_option("--mode", mode)->check(CLI::IsMember({"relay", "direct"}));
  app.add_option("--seconds", options.seconds)->check(CLI::Range(1.0, 3600.0));
  app.add_option("--hang-timeout", options.hang_timeout)->check(CLI::Range(1.0, 600.0));
  CLI11_PARSE(app, argc, argv);
  options.relay = mode == "relay";
  raise_descriptor_limit();
  if (const char* address = std::getenv("LOCKSTEP_MONITOR_ADDRESS"); address != nullptr) {
    // The program of a real `lockstep run` (bench/monitor/run.sh): play the
    // ranks against it.
    const std::string text = address;
    const char* token = std::getenv("LOCKSTEP_MONITOR_TOKEN");
    const int port = std::atoi(text.substr(text.rfind(':') + 1).c_str());
    generate(options, port, token != nullptr ? token : "",
             static_cast<std::int64_t>(options.seconds * 1e9), /*in_run=*/true);
  }
  const std::string token = "bench-token";
  lockstep::launcher::Monitor monitor("127.0.0.1", token);
  const double memory_before = peak_mib();
  // The hang begins once everyone is in and heartbeats flowed a while; the
  // child learns when from the time it is started at, as does this process.
  const std::int64_t connect_allowance_ns =
      static_cast<std::int64_t>(2e9 + 1e9 * options.ranks / 20000.0);
  const std::int64_t stop_ns =
      monotonic_ns() + connect_allowance_ns + static_cast<std::int64_t>(options.seconds * 1e9);
  const pid_t child = fork();
  if (child == 0) generate(options, monitor.port(), token, stop_ns, /*in_run=*/false);

  std::vector<View> view(static_cast<std::size_t>(options.ranks));
  std::vector<double> latencies;
  latencies.reserve(1 << 20);
  std::int64_t hellos = 0;
  std::int64_t events = 0;
  std::optional<SteadyClock::time_point> all_in;
  double cpu_at_all_in = 0;
  double cpu_at_stop = 0;
  double thread_cpu_at_all_in = 0;
  double thread_cpu_at_stop = 0;
  std::optional<SteadyClock::time_point> stopped_at;
  SteadyClock::time_point last_step_event = SteadyClock::now();
  std::optional<double> detection_delay;
  std::size_t connections = 0;
  const auto give_up = SteadyClock::now() + std::chrono::nanoseconds(connect_allowance_ns) +
                       std::chrono::duration<double>(options.seconds + options.hang_timeout + 30);
  while (!detection_delay && SteadyClock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto now = SteadyClock::now();
    const std::int64_t now_ns = monotonic_ns();
    for (const lockstep::launcher::RankEvent& event : monitor.drain()) {
      if (all_in && !stopped_at) ++events;  // while heartbeats flow
      if (event.rank < 0 || event.rank >= options.ranks) continue;
      View& rank = view[static_cast<std::size_t>(event.rank)];
      rank.last_seen = now;
      if (event.kind == lockstep::launcher::RankEvent::Kind::kHello) ++hellos;
      if (event.kind == lockstep::launcher::RankEvent::Kind::kStep) {
        rank.last_step = std::max(rank.last_step, event.step);
        last_step_event = now;
        const auto sent = event.metrics.find("sent_ns");
        if (sent != event.metrics.end() && all_in) {
          latencies.push_back(static_cast<double>(now_ns) * 1e-9 - sent->second * 1e-9);
        }
      }
    }
    if (!all_in && hellos == options.ranks) {
      all_in = now;
      cpu_at_all_in = cpu_seconds();
      thread_cpu_at_all_in = other_threads_cpu_seconds();
    }
    if (!stopped_at && now_ns >= stop_ns) {
      stopped_at = now;
      cpu_at_stop = cpu_seconds();
      thread_cpu_at_stop = other_threads_cpu_seconds();
      connections = monitor.open_connections();
    }
    // The hang, as the supervisor sees it: no step for the hang timeout;
    // counted from when the ranks stopped.
    if (stopped_at && now - last_step_event > std::chrono::duration<double>(options.hang_timeout)) {
      detection_delay = static_cast<double>(now_ns - stop_ns) * 1e-9 - options.hang_timeout;
    }
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  if (!all_in || !stopped_at) {
    std::fprintf(stderr, "only %lld of %d ranks said hello\n", static_cast<long long>(hellos),
                 options.ranks);
    return 1;
  }
  std::sort(latencies.begin(), latencies.end());
  const auto quantile = [&](double q) {
    return latencies.empty()
               ? -1.0
               : latencies[std::min(
                     latencies.size() - 1,
                     static_cast<std::size_t>(q * static_cast<double>(latencies.size())))];
  };
  const double flowing = std::chrono::duration<double>(*stopped_at - *all_in).count();
  std::int64_t stepped = 0;
  for (const View& rank : view) stepped += rank.last_step >= 0 ? 1 : 0;
  fmt::print(
      "mode {} ranks {} nodes {} connections {} ranks_stepping {} events_per_s {:.0f} "
      "monitor_cores {:.3f} monitor_thread_cores {:.3f} memory_mib {:.1f} latency_p50_s {:.3f} "
      "latency_p99_s {:.3f} "
      "latency_max_s {:.3f} oldest_view_s {:.3f} hang_seen_after_timeout_s {:.2f} "
      "hang_worst_after_timeout_s {:.2f} malformed {} refused {}\n",
      mode, options.ranks, (options.ranks + options.ranks_per_node - 1) / options.ranks_per_node,
      connections, stepped, static_cast<double>(events) / flowing,
      (cpu_at_stop - cpu_at_all_in) / flowing,
      (thread_cpu_at_stop - thread_cpu_at_all_in) / flowing, peak_mib() - memory_before,
      quantile(0.5), quantile(0.99), latencies.empty() ? -1.0 : latencies.back(),
      // The oldest a rank's step can be in the view: the client holds a step
      // up to its 200 ms rate limit, a relay up to its 1 s interval, then
      // the trip measured here.
      (latencies.empty() ? 0.0 : latencies.back()) + 0.2 + (options.relay ? 1.0 : 0.0),
      detection_delay.value_or(-1),
      // A step made just before the stop may still be held that long.
      detection_delay.value_or(-1) + 0.2 + (options.relay ? 1.0 : 0.0), monitor.malformed(),
      monitor.refused());
  return detection_delay ? 0 : 1;
}
