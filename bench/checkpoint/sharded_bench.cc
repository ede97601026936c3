// Checkpoint benchmark of sharded state (ZeRO-1): GPT-2 small's parameters,
// replicated, with Adam's two moments sharded as ShardedGradSync lays them
// out (each rank its contiguous share of every bucket), on one file system:
//   save (the default): synchronous saves of the sharded state against
//     synchronous saves of the same state held whole on every rank, in
//     alternating order; the target is sharded time / replicated time <= 1.
//     The last sharded step stays in DIR/sharded.
//   --restore: at any world size, restores the newest step in DIR/sharded
//     into this world's shards, after evicting its files from the page
//     cache, against `cat` of the step's files (every file: each rank needs
//     the whole parameters, and some rank each moment's piece), in rounds of
//     alternating order; the target is cat time / restore time >= 0.8. Every
//     restored element is checked against the values saved.
// Rank 0 prints a summary and one `RESULT key=value ...` line;
// bench/checkpoint/sharded.sh runs both at 4 ranks and restores at 2 and 4.
//
// Usage: mpiexec -n <ranks> bench_checkpoint_sharded --dir DIR [--restore] [options]
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <lockstep/checkpointer.h>
#include <lockstep/communicator.h>
#include <lockstep/lockstep.h>
#include <lockstep/sharded_grad_sync.h>

#include "bench_common.h"

namespace {

namespace fs = std::filesystem;
using lockstep::bench::Clock;
using lockstep::bench::median;
using lockstep::bench::seconds_since;

// The value of element `index` of parameter `param` in group `group` (0:
// the parameters, 1: m, 2: v) as saved at `step`: small multiples of 0.25,
// exact in f32, different for every step.
float value(int group, std::size_t param, std::int64_t index, std::int64_t step) {
  const auto mixed = static_cast<std::int64_t>(param) * 131 + index * 7 + group * 17 + step * 5;
  return static_cast<float>(mixed % 4093) * 0.25F;
}

struct ShardedAdam {
  std::vector<lockstep::Tensor> parameters;  // whole, replicated
  lockstep::ShardLayout layout;
  lockstep::Tensor m;  // this rank's elements of every parameter
  lockstep::Tensor v;

  lockstep::State state() const {
    return {{"model", parameters}, {"optim.m", layout.chunks(m)}, {"optim.v", layout.chunks(v)}};
  }
};

// GPT-2 small's parameters, and ShardedGradSync's layout of them over the
// ranks of `runtime` with the default buckets (the gradients it needs are
// freed again).
ShardedAdam make_sharded_adam(const lockstep::Runtime& runtime, double scale) {
  ShardedAdam adam;
  std::vector<lockstep::Tensor> gradients;
  for (const auto& [name, shape] : lockstep::bench::gpt2_small_shapes(scale)) {
    adam.parameters.push_back(lockstep::Tensor::allocate(name, lockstep::DType::kF32, shape));
    gradients.push_back(lockstep::Tensor::allocate(name, lockstep::DType::kF32, shape));
  }
  {
    const auto communicator = lockstep::make_communicator(runtime);
    const lockstep::ShardedGradSync sync(*communicator, adam.parameters, gradients);
    adam.layout = sync.layout();
  }
  const lockstep::Shape owned{adam.layout.local_elements};
  adam.m = lockstep::Tensor::allocate("m", lockstep::DType::kF32, owned);
  adam.v = lockstep::Tensor::allocate("v", lockstep::DType::kF32, owned);
  return adam;
}

// Writes the values of `step` into the parameters and the owned moments (as
// an optimizer step would touch them before a save).
void fill_sharded(ShardedAdam& adam, std::int64_t step) {
  for (std::size_t p = 0; p < adam.parameters.size(); ++p) {
    auto* values = adam.parameters[p].data_as<float>();
    for (std::int64_t i = 0; i < adam.parameters[p].numel(); ++i) values[i] = value(0, p, i, step);
    const lockstep::ShardSlice& slice = adam.layout.slices[p];
    for (int group : {1, 2}) {
      auto* owned = (group == 1 ? adam.m : adam.v).data_as<float>() + slice.local_offset;
      for (std::int64_t k = 0; k < slice.count; ++k)
        owned[k] = value(group, p, slice.begin + k, step);
    }
  }
}

// Elements of the sharded state that differ from the values of `step`.
std::int64_t count_wrong(const ShardedAdam& adam, std::int64_t step) {
  std::int64_t wrong = 0;
  for (std::size_t p = 0; p < adam.parameters.size(); ++p) {
    const auto* values = adam.parameters[p].data_as<float>();
    for (std::int64_t i = 0; i < adam.parameters[p].numel(); ++i) {
      wrong += values[i] != value(0, p, i, step) ? 1 : 0;
    }
    const lockstep::ShardSlice& slice = adam.layout.slices[p];
    for (int group : {1, 2}) {
      const auto* owned = (group == 1 ? adam.m : adam.v).data_as<float>() + slice.local_offset;
      for (std::int64_t k = 0; k < slice.count; ++k) {
        wrong += owned[k] != value(group, p, slice.begin + k, step) ? 1 : 0;
      }
    }
  }
  return wrong;
}

// The same state with the moments whole on every rank.
struct ReplicatedAdam {
  std::vector<lockstep::Tensor> parameters;  // shared with the sharded state
  std::vector<lockstep::Tensor> m;
  std::vector<lockstep::Tensor> v;

  lockstep::State state() const { return {{"model", parameters}, {"optim.m", m}, {"optim.v", v}}; }
};

ReplicatedAdam make_replicated_adam(const ShardedAdam& sharded) {
  ReplicatedAdam adam{.parameters = sharded.parameters, .m = {}, .v = {}};
  for (const lockstep::Tensor& parameter : sharded.parameters) {
    for (auto* group : {&adam.m, &adam.v}) {
      group->push_back(
          lockstep::Tensor::allocate(parameter.name(), lockstep::DType::kF32, parameter.shape()));
    }
  }
  return adam;
}

void fill_replicated(ReplicatedAdam& adam, std::int64_t step) {
  for (std::size_t p = 0; p < adam.parameters.size(); ++p) {
    for (int group : {0, 1, 2}) {
      lockstep::Tensor& tensor =
          group == 0 ? adam.parameters[p] : (group == 1 ? adam.m : adam.v)[p];
      auto* values = tensor.data_as<float>();
      for (std::int64_t i = 0; i < tensor.numel(); ++i) values[i] = value(group, p, i, step);
    }
  }
}

std::uint64_t state_bytes(const ShardedAdam& adam) {
  std::uint64_t bytes = 0;
  for (const lockstep::Tensor& parameter : adam.parameters) bytes += 3 * parameter.nbytes();
  return bytes;
}

// Times one synchronous save, barrier to barrier, on a quiet disk.
double timed_save(const lockstep::Runtime& runtime, lockstep::Checkpointer& checkpointer,
                  std::int64_t step, const lockstep::State& state) {
  lockstep::bench::settle_disk(runtime);
  const auto start = Clock::now();
  checkpointer.save(step, state);
  MPI_Barrier(runtime.comm());
  const double seconds = seconds_since(start);
  checkpointer.wait();  // retention's deletions, outside the time
  double write = checkpointer.last_save_stats().write_seconds;
  MPI_Allreduce(MPI_IN_PLACE, &write, 1, MPI_DOUBLE, MPI_MAX, runtime.comm());
  if (runtime.rank() == 0)
    std::cout << fmt::format("    the slowest rank's write {:.3f} s\n", write);
  return seconds;
}

int run_saves(const lockstep::Runtime& runtime, const fs::path& dir, double scale, int repeat) {
  ShardedAdam sharded = make_sharded_adam(runtime, scale);
  ReplicatedAdam replicated = make_replicated_adam(sharded);
  if (runtime.rank() == 0) fs::remove_all(dir);
  MPI_Barrier(runtime.comm());
  const auto env = lockstep::checkpoint_options(runtime).env;
  lockstep::Checkpointer replicated_saves(
      runtime, {.dir = dir / "replicated", .keep_last = 1, .async = false, .env = env});
  lockstep::Checkpointer sharded_saves(
      runtime, {.dir = dir / "sharded", .keep_last = 1, .async = false, .env = env});
  // The first save of each lays out its files; later ones reuse the layout.
  fill_sharded(sharded, 0);
  sharded_saves.save(0, sharded.state());
  fill_replicated(replicated, 0);
  replicated_saves.save(0, replicated.state());
  std::vector<double> sharded_times;
  std::vector<double> replicated_times;
  std::vector<double> ratios;
  for (int r = 1; r <= repeat; ++r) {
    double times[2] = {0, 0};  // sharded, replicated
    for (int turn = 0; turn < 2; ++turn) {
      const int which = (turn + r) % 2;
      if (which == 0) {
        fill_sharded(sharded, r);
        times[0] = timed_save(runtime, sharded_saves, r, sharded.state());
      } else {
        fill_replicated(replicated, r);
        times[1] = timed_save(runtime, replicated_saves, r, replicated.state());
      }
    }
    sharded_times.push_back(times[0]);
    replicated_times.push_back(times[1]);
    ratios.push_back(times[0] / times[1]);
    if (runtime.rank() == 0) {
      std::cout << fmt::format("  save {}: sharded {:.3f} s, replicated {:.3f} s\n", r, times[0],
                               times[1]);
    }
  }
  // The bytes each rank wrote in the last save of each kind (data and HDF5
  // metadata): the slowest writer sets a save's time.
  std::uint64_t written[2] = {sharded_saves.last_save_stats().bytes_written,
                              replicated_saves.last_save_stats().bytes_written};
  std::uint64_t most_written[2] = {0, 0};
  MPI_Reduce(written, most_written, 2, MPI_UINT64_T, MPI_MAX, 0, runtime.comm());
  if (runtime.rank() == 0) {
    std::cout << fmt::format("  the most a rank wrote: sharded {} bytes, replicated {} bytes\n",
                             most_written[0], most_written[1]);
    const double bytes = static_cast<double>(state_bytes(sharded));
    const double sharded_s = median(sharded_times);
    const double replicated_s = median(replicated_times);
    std::cout << fmt::format(
        "sharded checkpoint save: {} ranks, {:.3f} GB (parameters replicated, Adam's m and v "
        "sharded: this rank {} of {} elements per moment), median of {}\n"
        "  sharded {:.3f} s {:.3f} GB/s | replicated {:.3f} s {:.3f} GB/s | sharded/replicated "
        "{:.2f} (median of the repetitions' ratios; target <= 1)\n"
        "RESULT phase=save ranks={} bytes={:.0f} sharded_s={:.4f} replicated_s={:.4f} "
        "ratio={:.4f}\n",
        runtime.world_size(), bytes / 1e9, sharded.layout.local_elements, state_bytes(sharded) / 12,
        repeat, sharded_s, bytes / 1e9 / sharded_s, replicated_s, bytes / 1e9 / replicated_s,
        median(ratios), runtime.world_size(), bytes, sharded_s, replicated_s, median(ratios));
  }
  return 0;
}

int run_restores(const lockstep::Runtime& runtime, const fs::path& dir, double scale, int rounds) {
  ShardedAdam sharded = make_sharded_adam(runtime, scale);
  const auto env = lockstep::checkpoint_options(runtime).env;
  lockstep::Checkpointer checkpointer(runtime,
                                      {.dir = dir / "sharded", .keep_last = 0, .env = env});
  const std::vector<std::int64_t> steps = checkpointer.committed_steps();
  if (steps.empty()) {
    if (runtime.rank() == 0) {
      lockstep::log::error("bench_checkpoint_sharded: no checkpoint in {}; run the saves first",
                           (dir / "sharded").string());
    }
    return 2;
  }
  const std::int64_t step = steps.back();
  const fs::path step_dir = dir / "sharded" / fmt::format("step-{}", step);
  std::uint64_t file_bytes = 0;
  for (const auto& entry : fs::directory_iterator(step_dir)) {
    if (entry.is_regular_file()) file_bytes += entry.file_size();
  }
  const std::string cat = fmt::format("cat {}/* > /dev/null", step_dir.string());
  std::vector<double> restore_times;
  std::vector<double> cat_times;
  std::vector<double> ratios;
  std::int64_t wrong = 0;
  for (int k = 0; k < rounds; ++k) {
    double times[2] = {0, 0};  // restore, cat
    for (int turn = 0; turn < 2; ++turn) {
      lockstep::bench::settle_disk(runtime);
      if (runtime.rank() == 0) lockstep::bench::drop_from_cache(step_dir);
      if ((turn + k) % 2 == 1) {
        times[1] = lockstep::bench::timed_command(runtime, cat);
        continue;
      }
      fill_sharded(sharded, step + 1);  // not the saved values
      MPI_Barrier(runtime.comm());
      auto state = sharded.state();
      const auto start = Clock::now();
      checkpointer.restore(step, state);
      MPI_Barrier(runtime.comm());
      times[0] = seconds_since(start);
      std::int64_t mine = count_wrong(sharded, step);
      MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_INT64_T, MPI_SUM, runtime.comm());
      wrong += mine;
    }
    restore_times.push_back(times[0]);
    cat_times.push_back(times[1]);
    ratios.push_back(times[1] / times[0]);
    if (runtime.rank() == 0) {
      std::cout << fmt::format("  restore round {}: restore {:.3f} s, cat {:.3f} s\n", k, times[0],
                               times[1]);
    }
  }
  if (runtime.rank() == 0) {
    const double gigabytes = static_cast<double>(file_bytes) / 1e9;
    std::cout << fmt::format(
        "sharded checkpoint restore: step {} into {} ranks' shards, {:.3f} GB of files, cold "
        "cache, median of {} rounds; {} restored elements differ from the saved values\n"
        "  restore {:.3f} s {:.3f} GB/s | cat {:.3f} s {:.3f} GB/s | restore/cat {:.2f} (median "
        "of the rounds' ratios; target >= 0.8)\n"
        "RESULT phase=restore ranks={} bytes={} restore_s={:.4f} cat_s={:.4f} rest_cat={:.4f} "
        "wrong={}\n",
        step, runtime.world_size(), gigabytes, rounds, wrong, median(restore_times),
        gigabytes / median(restore_times), median(cat_times), gigabytes / median(cat_times),
        median(ratios), runtime.world_size(), file_bytes, median(restore_times), median(cat_times),
        median(ratios), wrong);
  }
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  fs::path dir;
  double scale = 1.0;
  int repeat = 3;
  int rounds = 5;
  bool restore = false;
  CLI::App app{
      "Checkpoint save and restore of GPT-2 small with Adam's moments sharded (ZeRO-1): sharded "
      "saves against replicated saves of the same state, and a restore at this world size of "
      "the last sharded save against cat of its files (bench/checkpoint/sharded.sh runs both)"};
  app.add_option("--dir", dir, "Scratch directory for the checkpoints (kept for --restore)")
      ->required();
  app.add_option("--scale", scale, "Shrinks the large dimensions (1.0: 124M parameters, 1.5 GB)")
      ->check(CLI::Range(0.001, 100.0))
      ->capture_default_str();
  app.add_option("--repeat", repeat, "Saves of each kind; the figures are their medians")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "With --restore: rounds of restore and cat")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_flag("--restore", restore,
               "Restore the newest step of DIR/sharded (saved at any world size) instead of "
               "saving");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return runtime.rank() == 0 ? app.exit(error) : error.get_exit_code();
  }
  return restore ? run_restores(runtime, dir, scale, rounds)
                 : run_saves(runtime, dir, scale, repeat);
}
