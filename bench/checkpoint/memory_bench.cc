// The memory tier's cost to a training loop, against disk-only saves, in
// one run: a loop of fake steps (compute, then a small all-reduce) that
// saves asynchronously every --every steps a state of --mb MB that every
// rank holds whole (as in data-parallel training; each writes 1/N of it):
//   - the save stall (how long save() blocks) against a memcpy of the
//     rank's share, the least a copy of it into host memory can cost
//     (target: <= 1.5x);
//   - the loop's loss: the loop with saves against the same loop without
//     (target: < 1 % with the memory tier at a save every 10 steps);
//   - the bytes written to the checkpoint directory on disk, per save and
//     per hour of this loop (target: the memory tier <= 1/10 of disk only,
//     with --disk-every 10).
// The memory tier sees the ranks on --nodes nodes (the directories of one
// host's tmpfs), so that each save also moves partner copies between them
// over MPI: here through shared memory, across hosts through the network.
// The saves fall half-way between the every-th steps, so that the last
// one's writer also runs inside the timed loop.
// The step computes on the CPU (--step cpu: the worst case, where the
// writer's copies and checksums take cores from the ranks' compute) or
// waits with its core idle (--step wait: the host side of a step computed
// by an accelerator, where the writer runs on cores the step leaves free).
// The three loops alternate for --rounds rounds, each round starting with
// the next one, so that a machine whose speed drifts charges every mode
// alike; loss and loop time are medians over the rounds, the stall the
// median over every save. Rank 0 prints a summary and one RESULT line per
// mode.
//
// Usage: mpiexec -n 4 bench_checkpoint_memory [options]; --help lists them.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <lockstep/checkpointer.h>
#include <lockstep/lockstep.h>

#include "bench_common.h"

namespace {

namespace fs = std::filesystem;
using lockstep::bench::Clock;
using lockstep::bench::FakeStep;
using lockstep::bench::median;
using lockstep::bench::seconds_since;

struct Mode {
  explicit Mode(std::string mode_name) : name(std::move(mode_name)) {}
  void add(const lockstep::SaveStats& save) {
    disk_bytes += save.disk_bytes;
    writes.push_back(save.write_seconds);
  }
  std::string name;
  std::vector<double> loops;   // seconds, one per round
  std::vector<double> losses;  // against the loop without saves, one per round
  std::vector<double> stalls;
  std::vector<double> drains;    // the wait for the last save after each loop
  std::uint64_t disk_bytes = 0;  // this rank's, all saves of the loop
  std::vector<double> writes;    // the writer's time of each save, from staging to commit
  int saves = 0;
};

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  double megabytes = 100;
  int steps = 200;
  int rounds = 3;
  int every = 10;
  int disk_every = 10;
  double step_ms = 100;
  std::string step_kind = "cpu";
  int nodes = 2;  // at most the ranks
  fs::path dir = runtime.run_dir() / "bench-checkpoint-memory";
  fs::path memory = "/dev/shm";
  CLI::App app{
      "The memory tier's save stall, loop loss and bytes on disk against disk-only saves "
      "(asynchronous saves every N steps of a fake training loop)"};
  app.add_option("--mb", megabytes, "State per rank, MB (every rank holds all of it)")
      ->check(CLI::Range(1.0, 100000.0))
      ->capture_default_str();
  app.add_option("--steps", steps, "Steps of each loop")
      ->check(CLI::Range(10, 1000000))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds of the three loops, alternating")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--every", every, "Save every N steps")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--disk-every", disk_every, "With the memory tier: every N-th save on disk")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--step-ms", step_ms, "The fake step's time to calibrate to, ms")
      ->check(CLI::Range(1.0, 100000.0))
      ->capture_default_str();
  app.add_option("--step", step_kind,
                 "cpu: the fake step computes on the CPU; wait: it waits with its core idle, as "
                 "the host thread of a GPU step does")
      ->check(CLI::IsMember({"cpu", "wait"}))
      ->capture_default_str();
  app.add_option("--nodes", nodes,
                 "Nodes the memory tier sees the ranks on (consecutive ranks share one), so that "
                 "each save also sends partner copies to the next node; 1: no partner copies")
      ->check(CLI::Range(1, 100000))
      ->default_str("2, or 1 with one rank");
  app.add_option("--dir", dir, "Scratch directory on disk (removed at the end)")
      ->capture_default_str();
  app.add_option("--memory", memory, "Base of the memory tier (a tmpfs)")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return runtime.rank() == 0 ? app.exit(error) : error.get_exit_code();
  }
  if (app.count("--nodes") == 0) nodes = std::min(nodes, runtime.world_size());
  if (nodes > runtime.world_size()) {
    if (runtime.rank() == 0) {
      lockstep::log::error("--nodes {} is more than the {} ranks; give at most {}", nodes,
                           runtime.world_size(), runtime.world_size());
    }
    return 2;
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  MPI_Barrier(runtime.comm());

  // The state: tensors of 4 MB, the last one shorter.
  std::vector<lockstep::Tensor> tensors;
  const auto total = static_cast<std::int64_t>(megabytes * 1e6 / 4);
  for (std::int64_t begin = 0, i = 0; begin < total; begin += 1 << 20, ++i) {
    tensors.push_back(lockstep::Tensor::allocate(fmt::format("t{}", i), lockstep::DType::kF32,
                                                 {std::min<std::int64_t>(1 << 20, total - begin)}));
    std::memset(tensors.back().data(), 0x3F, tensors.back().nbytes());
  }
  const lockstep::State state{{"model", tensors}};

  // The floor of a save's stall: a memcpy of the rank's 1/N share.
  const std::size_t share =
      static_cast<std::size_t>(total) * 4 / static_cast<std::size_t>(runtime.world_size());
  std::vector<std::byte> from(share, std::byte{1});
  std::vector<std::byte> to(share, std::byte{0});
  std::vector<double> copies;  // 5 at the start of every round
  const auto measure_memcpy = [&] {
    for (int i = 0; i < 5; ++i) {
      const auto start = Clock::now();
      std::memcpy(to.data(), from.data(), share);
      copies.push_back(seconds_since(start));
    }
  };

  FakeStep step;
  if (step_kind == "wait") {
    step.wait_seconds = step_ms / 1000;
  } else if (runtime.rank() == 0) {
    step.work = 100;
    const auto start = Clock::now();
    step.run(MPI_COMM_SELF);
    step.work = std::max(1, static_cast<int>(step_ms / 1000 / (seconds_since(start) / 100)));
  }
  MPI_Bcast(&step.work, 1, MPI_INT, 0, runtime.comm());

  // Steps [first, first + steps) of a training run.
  const auto loop = [&](lockstep::Checkpointer* checkpointer, Mode& mode, int first) {
    lockstep::bench::settle_disk(runtime);
    const auto start = Clock::now();
    bool saved = false;
    for (int s = first; s < first + steps; ++s) {
      step.run(runtime.comm());
      if (checkpointer == nullptr || (s - first + 1 + every / 2) % every != 0) continue;
      const auto saving = Clock::now();
      checkpointer->save(s, state);
      mode.stalls.push_back(seconds_since(saving));
      ++mode.saves;
      // The previous save's figures, now that this one waited for it.
      if (saved) mode.add(checkpointer->last_save_stats());
      saved = true;
    }
    // The loop ends with its last step. The wait for the last save's
    // writer comes once per run, not once per save: it is kept apart.
    MPI_Barrier(runtime.comm());
    mode.loops.push_back(seconds_since(start));
    if (checkpointer != nullptr) {
      const auto draining = Clock::now();
      checkpointer->wait();
      mode.add(checkpointer->last_save_stats());
      MPI_Barrier(runtime.comm());
      mode.drains.push_back(seconds_since(draining));
    }
  };

  const auto env = lockstep::checkpoint_options(runtime).env;
  int pid = static_cast<int>(::getpid());  // rank 0's names the memory directory of all
  MPI_Bcast(&pid, 1, MPI_INT, 0, runtime.comm());
  Mode plain("no saves");
  Mode disk("disk only");
  Mode tiered("memory tier");
  lockstep::Checkpointer disk_checkpointer(
      runtime, {.dir = dir / "disk", .keep_last = 2, .async = true, .env = env});
  lockstep::Checkpointer tiered_checkpointer(
      runtime, {.dir = dir / "tiered",
                .keep_last = 2,
                .async = true,
                .env = env,
                .memory_dir = memory / fmt::format("lockstep-bench-{}-{}", ::geteuid(), pid),
                .node = fmt::format("bench-node-{}", runtime.rank() * nodes / runtime.world_size()),
                .disk_every = disk_every});
  if (!tiered_checkpointer.memory_tier_on()) {
    if (runtime.rank() == 0) lockstep::log::error("the memory tier is off; see the warning");
    return 1;
  }
  loop(nullptr, plain, 0);  // warm-up
  plain.loops.clear();
  for (int round = 0; round < rounds; ++round) {
    measure_memcpy();
    // Each round starts with another loop, so that none is always the one
    // after the disk-only writes.
    for (int turn = 0; turn < 3; ++turn) {
      switch ((round + turn) % 3) {
        case 0:
          loop(nullptr, plain, round * steps);
          break;
        case 1:
          loop(&disk_checkpointer, disk, round * steps);
          break;
        default:
          loop(&tiered_checkpointer, tiered, round * steps);
      }
    }
    for (Mode* mode : {&disk, &tiered}) {
      mode->losses.push_back((mode->loops.back() - plain.loops.back()) / mode->loops.back());
    }
    if (runtime.rank() == 0) {
      std::cout << fmt::format("round {}/{}: loops {:.3f} / {:.3f} / {:.3f} s\n", round + 1, rounds,
                               plain.loops.back(), disk.loops.back(), tiered.loops.back())
                << std::flush;
    }
  }
  tiered_checkpointer.discard_memory_tier();
  const double memcpy_s = median(copies);
  std::uint64_t bytes[2] = {disk.disk_bytes, tiered.disk_bytes};
  MPI_Allreduce(MPI_IN_PLACE, bytes, 2, MPI_UINT64_T, MPI_SUM, runtime.comm());
  if (runtime.rank() == 0) {
    std::cout << fmt::format(
        "memory tier bench: {} ranks on {} node(s), {:.0f} MB state per rank (each writes 1/{}), "
        "a save every {} steps of {:.0f} ms ({}), {} steps, {} rounds; memcpy of a rank's share "
        "({:.1f} MB) {:.4f} s\n",
        runtime.world_size(), nodes, megabytes, runtime.world_size(), every,
        1000 * median(plain.loops) / steps,
        step_kind == "wait" ? "waiting, the core idle" : "computing on the CPU", steps, rounds,
        static_cast<double>(share) / 1e6, memcpy_s);
    for (const Mode* mode : {&disk, &tiered}) {
      const double stall = median(mode->stalls);
      const double loss = median(mode->losses);
      const double loop_s = median(mode->loops);
      const double plain_s = median(plain.loops);
      const std::uint64_t job_bytes = mode == &disk ? bytes[0] : bytes[1];
      double all_loops = 0;
      for (const double seconds : mode->loops) all_loops += seconds;
      const double per_hour = static_cast<double>(job_bytes) / all_loops * 3600;
      // What the stall alone takes of the steps between two saves.
      const double stall_share = stall / (plain_s / steps * every);
      const double write = median(mode->writes);
      std::cout << fmt::format(
          "  {:<11} stall {:.4f} s = {:.2f} x memcpy, {:.2f} % of {} steps; writer {:.3f} s | "
          "loop {:.3f} s against {:.3f} s: loss {:.1f} %, then {:.3f} s for the last save | on "
          "disk {:.1f} MB in {} saves, {:.1f} GB per hour\n",
          mode->name, stall, stall / memcpy_s, 100 * stall_share, every, write, loop_s, plain_s,
          100 * loss, median(mode->drains), static_cast<double>(job_bytes) / 1e6, mode->saves,
          per_hour / 1e9);
      std::cout << fmt::format(
          "RESULT mode={} step={} nodes={} stall_s={:.5f} memcpy_s={:.5f} stall_share={:.5f} "
          "write_s={:.4f} loop_s={:.4f} plain_s={:.4f} loss={:.5f} drain_s={:.4f} disk_bytes={} "
          "saves={} disk_gb_per_hour={:.3f}\n",
          mode == &disk ? "disk" : "memory", step_kind, nodes, stall, memcpy_s, stall_share, write,
          loop_s, plain_s, loss, median(mode->drains), job_bytes, mode->saves, per_hour / 1e9);
    }
    const auto [fastest, slowest] = std::minmax_element(plain.loops.begin(), plain.loops.end());
    std::cout << fmt::format(
        "the loop without saves took {:.3f} to {:.3f} s over the rounds: losses smaller than "
        "that spread ({:.1f} %) are noise\n",
        *fastest, *slowest, 100 * (*slowest - *fastest) / *slowest);
    std::cout << fmt::format(
        "memory tier / disk only: bytes on disk {:.3f} (target <= 0.10 with --disk-every 10)\n",
        static_cast<double>(bytes[1]) / static_cast<double>(std::max<std::uint64_t>(1, bytes[0])));
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  return 0;
}
