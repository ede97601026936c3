// Checkpoint benchmark on the state of GPT-2 small with Adam (124M parameters,
// each with two moments: 3 f32 tensors per parameter, about 1.5 GB), against
// the disk itself and a peer, all on the same file system:
//   (a) a synchronous save against `dd bs=1M conv=fsync` of the same bytes;
//   (b) the same save against torch.save + fsync (--torch-peer: a command,
//       run on rank 0 in every repetition, that prints
//       `RESULT torch_save_s=<s>`; bench/checkpoint/run.sh passes
//       bench/peers/torch_save.py on the tensors --shapes-only lists);
//   (c) how long an asynchronous save() blocks, and the step throughput a
//       training loop loses when it saves asynchronously at the interval
//       the library's automatic policy would choose: the Young/Daly
//       interval for the measured stall and a mean time between failures of
//       --mtbf seconds (3600: Llama 3 405B saw one interruption every 3
//       hours on 16k GPUs). What one save costs the loop is measured in
//       pairs of W plain steps and W steps that start with a save and end
//       when it is committed, W steps lasting about three times an
//       asynchronous save's whole run; the median over the pairs of the
//       difference, against the interval, is the loss. Short pairs, many of
//       them, because a virtual machine's speed drifts by tens of percent
//       over seconds even when idle: two long segments seconds apart differ
//       by more than a save costs;
//   (d) a restore against `cat` of the step's files, both from a cold page
//       cache (the files are dropped from the cache before each), in
//       --restores rounds per repetition, each round in another order; in
//       each round also the read floor: every rank reads every file into its
//       own memory with no checks, as the restore does on one node, the
//       least that giving each rank its own copy costs (CPU state only).
// As in training, an optimizer step that writes every tensor comes before
// each timed save and restore.
// Rank 0 prints a summary and one `RESULT key=value ...` line for run.sh.
//
// Usage: mpiexec -n <ranks> bench_checkpoint [options]; --help lists them.
// --device cuda keeps the state on the rank's GPU, as in GPU training: the
// saves copy it to host memory first and the restores copy it back.
// --every 0 (the default) saves at the Young/Daly interval; the cost of a
// save to the loop is the median over P (9) pairs.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <lockstep/checkpoint_policy.h>
#include <lockstep/checkpointer.h>
#include <lockstep/lockstep.h>
#include "bench_common.h"

#if LOCKSTEP_HAVE_CUDA
#include <cuda_runtime.h>

#include <lockstep/cuda_check.h>
#endif

namespace {

namespace fs = std::filesystem;
using lockstep::bench::Clock;
using lockstep::bench::drop_from_cache;
using lockstep::bench::FakeStep;
using lockstep::bench::gpt2_small_shapes;
using lockstep::bench::median;
using lockstep::bench::seconds_since;
using lockstep::bench::settle_disk;
using lockstep::bench::timed_command;

// CPU time (user and system, every thread) this process has used, in seconds.
double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// The least any restore that gives every rank its own copy of the state
// must do: every rank reads every file of `step_dir` into its own memory,
// here the state's CPU tensors (`into`, filled in turn), with no checks.
// The reads go as the restore's do on one node: 1 MiB parts, the files in
// step 8 MiB of offset at a time, the rank's own files first in each.
void read_floor(const fs::path& step_dir, int rank, const std::vector<std::span<std::byte>>& into) {
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(step_dir)) {
    if (entry.is_regular_file()) paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  struct Part {
    std::uint64_t window;
    std::size_t turn;
    std::uint64_t offset;
    std::size_t file;
  };
  constexpr std::uint64_t kPart = 1U << 20;
  constexpr std::uint64_t kWindow = 8U << 20;
  const std::size_t files = paths.size();
  std::size_t own = 0;  // the rank's own file, which the restore reads first
  for (std::size_t f = 0; f < files; ++f) {
    if (paths[f].filename() == fmt::format("rank-{:05d}.h5", rank)) own = f;
  }
  std::vector<int> fds;
  std::vector<std::uint64_t> sizes;
  std::vector<Part> parts;
  for (std::size_t f = 0; f < files; ++f) {
    fds.push_back(::open(paths[f].c_str(), O_RDONLY | O_CLOEXEC));
    if (fds.back() < 0) throw lockstep::IoError("cannot open " + paths[f].string());
    sizes.push_back(fs::file_size(paths[f]));
    for (std::uint64_t offset = 0; offset < sizes[f]; offset += kPart) {
      parts.push_back({offset / kWindow, (f + files - own) % files, offset, f});
    }
  }
  std::sort(parts.begin(), parts.end(), [](const Part& a, const Part& b) {
    return std::tie(a.window, a.turn, a.offset) < std::tie(b.window, b.turn, b.offset);
  });
  std::size_t tensor = 0;
  std::size_t used = 0;  // of into[tensor]
  for (const auto& part : parts) {
    const std::uint64_t end = std::min(sizes[part.file], part.offset + kPart);
    for (std::uint64_t offset = part.offset; offset < end;) {
      if (used == into[tensor].size()) {
        tensor = (tensor + 1) % into.size();
        used = 0;
        continue;
      }
      const std::size_t bytes = std::min<std::uint64_t>(into[tensor].size() - used, end - offset);
      const ssize_t got =
          ::pread(fds[part.file], into[tensor].data() + used, bytes, static_cast<off_t>(offset));
      if (got <= 0) throw lockstep::IoError("cannot read " + paths[part.file].string());
      used += static_cast<std::size_t>(got);
      offset += static_cast<std::uint64_t>(got);
    }
  }
  for (const int fd : fds) ::close(fd);
}

// Runs the torch.save peer on rank 0 and returns the seconds it reports on
// every rank (its own measure of save + fsync, without Python's start).
double torch_peer_seconds(const lockstep::Runtime& runtime, const std::string& command) {
  double seconds = 0;
  if (runtime.rank() == 0) {
    std::FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) throw lockstep::IoError("cannot run the peer: " + command);
    std::string output;
    char line[512];
    while (std::fgets(line, sizeof line, pipe) != nullptr) output += line;
    const auto at = output.find("RESULT torch_save_s=");
    if (::pclose(pipe) != 0 || at == std::string::npos) {
      throw lockstep::IoError(fmt::format("the peer `{}` failed: {}", command, output));
    }
    seconds = std::stod(output.substr(at + std::strlen("RESULT torch_save_s=")));
  }
  MPI_Bcast(&seconds, 1, MPI_DOUBLE, 0, runtime.comm());
  return seconds;
}

// Sets every byte of `tensor` to `value`, on whichever device it lives.
void fill(lockstep::Tensor& tensor, int value) {
  if (tensor.device().is_cpu()) {
    std::memset(tensor.data(), value, tensor.nbytes());
    return;
  }
#if LOCKSTEP_HAVE_CUDA
  LOCKSTEP_CHECK_CUDA(cudaMemset(tensor.data(), value, tensor.nbytes()));
#endif
}

// The optimizer step that comes before a save in training: it writes every
// parameter and moment, so the state is in use, not memory that lay idle
// since the last save (which on a virtual machine can cost a fault per page
// at the next touch). On a GPU each step writes a new byte pattern and ends
// when the device is done.
void optimizer_step(std::initializer_list<std::vector<lockstep::Tensor>*> groups) {
  static int pattern = 0x3F;
  pattern = pattern == 0x3F ? 0x3E : 0x3F;
  [[maybe_unused]] bool on_gpu = false;
  for (auto* group : groups) {
    for (auto& tensor : *group) {
      if (!tensor.device().is_cpu()) {
        fill(tensor, pattern);
        on_gpu = true;
        continue;
      }
      auto* values = static_cast<float*>(tensor.data());
      for (std::int64_t i = 0; i < tensor.numel(); ++i) values[i] = values[i] * 0.999F + 0.001F;
    }
  }
#if LOCKSTEP_HAVE_CUDA
  if (on_gpu) LOCKSTEP_CHECK_CUDA(cudaDeviceSynchronize());
#endif
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  double scale = 1.0;
  int repeat = 3;
  int restores = 3;
  int every = 0;  // 0: the Young/Daly interval
  double mtbf = 3600;
  int pairs = 9;
  double step_ms = 100;
  std::string shapes_only;
  std::string torch_peer;
  std::string device_name = "cpu";
  fs::path dir = runtime.run_dir() / "bench-checkpoint";
  CLI::App app{
      "Checkpoint save, asynchronous save and restore of GPT-2 small with Adam, against dd, "
      "torch.save and cat of the same bytes (bench/checkpoint/run.sh runs it at 1, 2 and 4 "
      "ranks and prints one table)"};
  app.add_option("--scale", scale, "Shrinks the large dimensions (1.0: 124M parameters, 1.5 GB)")
      ->check(CLI::Range(0.001, 100.0))
      ->capture_default_str();
  app.add_option("--dir", dir, "Scratch directory for the checkpoints (removed at the end)")
      ->capture_default_str();
  app.add_option("--repeat", repeat, "Repetitions of the saves; the figures are their medians")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--restores", restores,
                 "Rounds of restore, read floor and cat in each repetition (restore/cat is the "
                 "median of their ratios)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--every", every, "The loop saves every K steps; 0: the Young/Daly interval")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  app.add_option("--mtbf", mtbf, "Mean time between failures for the Young/Daly interval, s")
      ->check(CLI::Range(0.001, 1e9))
      ->capture_default_str();
  app.add_option("--pairs", pairs, "Pairs of plain steps and steps with a save in the loop")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--step-ms", step_ms, "The loop's step time to calibrate to, ms")
      ->check(CLI::Range(0.001, 1e9))
      ->capture_default_str();
  app.add_option("--torch-peer", torch_peer,
                 "Command that saves the same tensors with torch.save + fsync and prints "
                 "`RESULT torch_save_s=<s>`");
  app.add_option("--shapes-only", shapes_only,
                 "Write the tensors' names and shapes (JSON) for the peer to FILE, then exit");
  app.add_option("--device", device_name, "Where the state lives: cpu, or cuda (the rank's GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return runtime.rank() == 0 ? app.exit(error) : error.get_exit_code();
  }
  lockstep::Device device = lockstep::Device::cpu();
  if (device_name == "cuda") {
    if (!LOCKSTEP_HAVE_CUDA || !runtime.device().is_cuda()) {
      if (runtime.rank() == 0) {
        lockstep::log::error("bench_checkpoint: --device cuda, but no GPU is bound to this rank");
      }
      return 2;
    }
    device = runtime.device();
  }
  const auto shapes = gpt2_small_shapes(scale);
  if (!shapes_only.empty()) {
    // The tensors for the torch.save peer: every parameter and both moments.
    if (runtime.rank() == 0) {
      nlohmann::json list = nlohmann::json::object();
      for (const char* group : {"model", "exp_avg", "exp_avg_sq"}) {
        for (const auto& [name, shape] : shapes) list[fmt::format("{}.{}", group, name)] = shape;
      }
      std::ofstream(shapes_only) << list.dump() << "\n";
    }
    return 0;
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  MPI_Barrier(runtime.comm());

  std::vector<lockstep::Tensor> parameters;
  std::vector<lockstep::Tensor> exp_avg;
  std::vector<lockstep::Tensor> exp_avg_sq;
  std::uint64_t total = 0;
  std::int64_t parameter_count = 0;
  for (const auto& [name, shape] : shapes) {
    for (auto* group : {&parameters, &exp_avg, &exp_avg_sq}) {
      group->push_back(lockstep::Tensor::allocate(name, lockstep::DType::kF32, shape, device));
      fill(group->back(), 0x3F);
      total += group->back().nbytes();
    }
    parameter_count += parameters.back().numel();
  }
  lockstep::State state{{"model", parameters}, {"exp_avg", exp_avg}, {"exp_avg_sq", exp_avg_sq}};
  std::vector<std::span<std::byte>> host_bytes;  // where the read floor lands
  for (auto* group : {&parameters, &exp_avg, &exp_avg_sq}) {
    for (auto& tensor : *group) {
      if (tensor.device().is_cpu()) {
        host_bytes.emplace_back(static_cast<std::byte*>(tensor.data()), tensor.nbytes());
      }
    }
  }
  const double gigabytes = static_cast<double>(total) / 1e9;

  std::vector<double> sync_times;
  std::vector<double> dd_times;
  std::vector<double> stall_times;
  std::vector<double> restore_times;
  std::vector<double> cat_times;
  std::vector<double> rest_cat_ratios;  // per round of restore, floor and cat
  std::vector<double> floor_times;
  std::vector<double> rest_floor_ratios;
  std::vector<double> torch_times;
  std::vector<double> save_cpu_times;
  std::vector<double> async_times;  // save() to the end of wait(), no loop beside
  std::vector<double> save_costs;
  double plain_steps = 0;
  int window = 0;
  double young_daly = 0;  // seconds
  {
    // The file system as the configuration says (LOCKSTEP_CHECKPOINT_DIRECT_IO).
    const auto env = lockstep::checkpoint_options(runtime).env;
    lockstep::Checkpointer sync(runtime,
                                {.dir = dir / "sync", .keep_last = 1, .async = false, .env = env});
    lockstep::Checkpointer async(runtime,
                                 {.dir = dir / "async", .keep_last = 1, .async = true, .env = env});
    // The first save of each allocates its staging buffer and lays out its
    // HDF5 files; every later save reuses them, as in training.
    sync.save(0, state);
    async.save(0, state);
    async.wait();
    for (int r = 1; r <= repeat; ++r) {
      settle_disk(runtime);
      optimizer_step({&parameters, &exp_avg, &exp_avg_sq});
      MPI_Barrier(runtime.comm());
      const double cpu_before = cpu_seconds();
      auto start = Clock::now();
      sync.save(r, state);
      MPI_Barrier(runtime.comm());
      sync_times.push_back(seconds_since(start));
      // The CPU a save takes from training: every rank's, added up.
      double cpu = cpu_seconds() - cpu_before;
      MPI_Allreduce(MPI_IN_PLACE, &cpu, 1, MPI_DOUBLE, MPI_SUM, runtime.comm());
      save_cpu_times.push_back(cpu);

      // A save deletes the step it replaces after it returns; dd's and the
      // peer's files are deleted outside their times too.
      sync.wait();
      settle_disk(runtime);
      const std::string dd_file = (dir / "dd.bin").string();
      dd_times.push_back(timed_command(
          runtime, fmt::format("dd if=/dev/zero of={} bs=1M count={} conv=fsync status=none",
                               dd_file, total >> 20)));
      if (runtime.rank() == 0) fs::remove(dd_file);
      if (!torch_peer.empty()) {
        settle_disk(runtime);
        torch_times.push_back(torch_peer_seconds(runtime, torch_peer));
      }

      settle_disk(runtime);
      optimizer_step({&parameters, &exp_avg, &exp_avg_sq});
      MPI_Barrier(runtime.comm());
      start = Clock::now();
      async.save(r, state);
      stall_times.push_back(seconds_since(start));
      async.wait();
      MPI_Barrier(runtime.comm());
      async_times.push_back(seconds_since(start));

      // (d) Rounds of a restore, the read floor and a cat, each round in
      // another order: the disk's cold reads vary by tens of percent from
      // one to the next, so the figures are the medians of the rounds'
      // ratios.
      const fs::path step_dir = dir / "sync" / fmt::format("step-{}", r);
      const std::string cat = fmt::format("cat {}/* > /dev/null", step_dir.string());
      for (int k = 0; k < restores; ++k) {
        double restore_time = 0;
        double restore_cpu = 0;
        double floor_time = 0;
        double cat_time = 0;
        for (int turn = 0; turn < 3; ++turn) {
          if (runtime.rank() == 0) drop_from_cache(step_dir);
          const int which = (turn + k) % 3;
          if (which == 0) {
            optimizer_step({&parameters, &exp_avg, &exp_avg_sq});
            MPI_Barrier(runtime.comm());
            const double restore_cpu_before = cpu_seconds();
            start = Clock::now();
            sync.restore(r, state);
            MPI_Barrier(runtime.comm());
            restore_time = seconds_since(start);
            restore_cpu = cpu_seconds() - restore_cpu_before;
            MPI_Allreduce(MPI_IN_PLACE, &restore_cpu, 1, MPI_DOUBLE, MPI_SUM, runtime.comm());
          } else if (which == 1) {
            if (!device.is_cpu()) continue;  // the floor reads into host tensors
            optimizer_step({&parameters, &exp_avg, &exp_avg_sq});
            MPI_Barrier(runtime.comm());
            start = Clock::now();
            read_floor(step_dir, runtime.rank(), host_bytes);
            MPI_Barrier(runtime.comm());
            floor_time = seconds_since(start);
          } else {
            cat_time = timed_command(runtime, cat);
          }
        }
        restore_times.push_back(restore_time);
        cat_times.push_back(cat_time);
        rest_cat_ratios.push_back(cat_time / restore_time);
        if (floor_time > 0) {
          floor_times.push_back(floor_time);
          rest_floor_ratios.push_back(floor_time / restore_time);
        }
        if (runtime.rank() == 0) {
          std::cout << fmt::format(
              "  restore round {}.{}: restore {:.3f} s (CPU, all ranks: {:.3f} s), read floor "
              "{:.3f} s, cat {:.3f} s\n",
              r, k, restore_time, restore_cpu, floor_time, cat_time);
        }
      }
    }

    // (c) A training loop: calibrate the fake step to about step_ms on rank
    // 0 (broadcast, so every rank does the same work), then run pairs of
    // `window` plain steps and `window` steps that start with an
    // asynchronous save and end when it is committed.
    young_daly = lockstep::young_daly_interval(median(stall_times), mtbf);
    FakeStep step;
    settle_disk(runtime);
    if (runtime.rank() == 0) {
      // Long enough to time: 200 passes of about 0.1 ms, the fastest of 5
      // (the restores before may still keep the host busy).
      step.work = 200;
      step.run(MPI_COMM_SELF);
      double one_pass = 1;
      for (int i = 0; i < 5; ++i) {
        const auto start = Clock::now();
        step.run(MPI_COMM_SELF);
        one_pass = std::min(one_pass, seconds_since(start) / step.work);
      }
      step.work = std::max(1, static_cast<int>(step_ms / 1000 / one_pass));
    }
    MPI_Bcast(&step.work, 1, MPI_INT, 0, runtime.comm());
    double measured_step = 0;
    {
      const auto start = Clock::now();
      for (int i = 0; i < 5; ++i) step.run(runtime.comm());
      measured_step = seconds_since(start) / 5;
      MPI_Bcast(&measured_step, 1, MPI_DOUBLE, 0, runtime.comm());
    }
    // Steps between saves: --every, or as many as fit in the interval the
    // automatic policy would use for this stall (the Young/Daly interval,
    // in seconds: the loss below is taken over that time, not over a step
    // count from a step time measured once on a machine whose speed drifts).
    const int saves_every =
        every > 0 ? every : std::max(1, static_cast<int>(young_daly / measured_step));
    // Long enough for a save, slowed by the loop beside it, to finish well
    // inside the segment (the pairs report the seconds the final wait()
    // still blocked), unless saves are due more often than that.
    window =
        std::min(saves_every,
                 std::max(5, static_cast<int>(std::ceil(3 * median(async_times) / measured_step))));
    // The stall and save times above are each rank's own: rank 0's window
    // for all, or ranks would run different numbers of collective steps.
    MPI_Bcast(&window, 1, MPI_INT, 0, runtime.comm());
    const auto plain_segment = [&] {
      settle_disk(runtime);
      const auto start = Clock::now();
      for (int i = 0; i < window; ++i) step.run(runtime.comm());
      MPI_Barrier(runtime.comm());
      return seconds_since(start);
    };
    const auto saving_segment = [&](std::int64_t checkpoint_step) {
      settle_disk(runtime);
      const auto start = Clock::now();
      async.save(checkpoint_step, state);
      for (int i = 0; i < window; ++i) step.run(runtime.comm());
      const auto waiting = Clock::now();
      async.wait();
      MPI_Barrier(runtime.comm());
      return std::pair{seconds_since(start), seconds_since(waiting)};
    };
    for (int pair = 0; pair < pairs; ++pair) {
      // Always plain first: two saves in a row (a pair's second half and the
      // next pair's first) would not be spaced as in training, and on this
      // VM the host's work for one save's writes and deletions slows the
      // next one's segment.
      const double plain = plain_segment();
      const auto [saving, waited] = saving_segment(1000 + pair);
      plain_steps += plain / window;
      save_costs.push_back(saving - plain);
      if (runtime.rank() == 0) {
        std::cout << fmt::format(
            "  loop pair {}: {} plain steps {:.3f} s, with a save {:.3f} s (its final wait {:.3f} "
            "s): the save cost {:+.3f} s\n",
            pair, window, plain, saving, waited, saving - plain);
      }
    }
  }
  if (runtime.rank() == 0) {
    const double sync_save = median(sync_times);
    const double dd = median(dd_times);
    const double stall = median(stall_times);
    const double restore = median(restore_times);
    const double cat = median(cat_times);
    const double step_seconds = plain_steps / pairs;
    // What a save costs the loop, spread over the time between saves.
    const double interval = every > 0 ? every * step_seconds : young_daly;
    std::sort(save_costs.begin(), save_costs.end());
    const double save_cost = median(save_costs);
    const double loop_loss = save_cost / (interval + save_cost);
    const double quartile_low = save_costs[save_costs.size() / 4];
    const double quartile_high = save_costs[(3 * save_costs.size()) / 4];
    std::sort(rest_cat_ratios.begin(), rest_cat_ratios.end());
    const double rest_cat = median(rest_cat_ratios);
    const double read_floor_s = floor_times.empty() ? 0 : median(floor_times);
    const double rest_floor = rest_floor_ratios.empty() ? 0 : median(rest_floor_ratios);
    const double torch = torch_times.empty() ? 0 : median(torch_times);
    const double save_cpu = median(save_cpu_times);
    std::cout << fmt::format(
        "checkpoint bench: {} ranks, state on {}, {:.1f}M parameters x 3 f32 tensors = {:.3f} "
        "GB, median of {}\n"
        "  (a) sync save {:7.3f} s {:6.3f} GB/s | dd bs=1M conv=fsync {:7.3f} s {:6.3f} GB/s | "
        "save/dd {:.2f} | CPU time of a sync save, all ranks {:.3f} s\n",
        runtime.world_size(), device.is_cpu() ? "the CPU" : "GPUs",
        static_cast<double>(parameter_count) / 1e6, gigabytes, repeat, sync_save,
        gigabytes / sync_save, dd, gigabytes / dd, dd / sync_save, save_cpu);
    if (torch > 0) {
      std::cout << fmt::format(
          "  (b) torch.save + fsync {:7.3f} s {:6.3f} GB/s | save/torch {:.2f}\n", torch,
          gigabytes / torch, torch / sync_save);
    }
    std::cout << fmt::format(
        "  (c) async save() blocked {:.4f} s = {:.1f}% of a sync save; a save cost the loop "
        "{:.3f} s (median of {} pairs of {} steps of {:.0f} ms; quartiles {:.3f}, {:.3f} s): "
        "saving every {:.1f} s{}, the loop loses {:.1f}% of its step throughput\n"
        "  (d) restore   {:7.3f} s {:6.3f} GB/s | cat (cold cache)    {:7.3f} s {:6.3f} GB/s | "
        "restore/cat {:.2f} (median of {} rounds; quartiles {:.2f}, {:.2f})\n",
        stall, 100 * stall / sync_save, save_cost, pairs, window, step_seconds * 1000, quartile_low,
        quartile_high, interval,
        every > 0 ? fmt::format(" ({} steps)", every) : " (the Young/Daly interval)",
        100 * loop_loss, restore, gigabytes / restore, cat, gigabytes / cat, rest_cat,
        rest_cat_ratios.size(), rest_cat_ratios[rest_cat_ratios.size() / 4],
        rest_cat_ratios[(3 * rest_cat_ratios.size()) / 4]);
    if (read_floor_s > 0) {
      std::cout << fmt::format(
          "      read floor {:6.3f} s {:6.3f} GB/s | restore/floor {:.2f} (median of the rounds' "
          "ratios; 1.00: the restore costs no more than reading every file into every rank)\n",
          read_floor_s, gigabytes / read_floor_s, rest_floor);
    }
    std::cout << fmt::format(
        "RESULT ranks={} bytes={} sync_s={:.4f} save_cpu_s={:.4f} dd_s={:.4f} torch_s={:.4f} "
        "stall_s={:.4f} step_ms={:.1f} interval_s={:.1f} save_cost_s={:.4f} loop_loss={:.4f} "
        "restore_s={:.4f} cat_s={:.4f} rest_cat={:.4f} floor_s={:.4f} rest_floor={:.4f}\n",
        runtime.world_size(), total, sync_save, save_cpu, dd, torch, stall, step_seconds * 1000,
        interval, save_cost, loop_loss, restore, cat, rest_cat, read_floor_s, rest_floor);
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  return 0;
}
