// Checkpoint benchmark: a synchronous save against `dd bs=1M conv=fsync` of
// the same number of bytes, the time an asynchronous save() blocks training,
// and a restore against `cat` of the step's files, both from a cold page
// cache (the files are dropped from the cache before each).
// Usage: mpiexec -n <ranks> bench_checkpoint [--megabytes M] [--dir D] [--repeat R]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lockstep/checkpointer.h>
#include <lockstep/lockstep.h>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Evicts the files below `dir` from the page cache, so reads hit the disk.
void drop_from_cache(const fs::path& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Runs a shell command on rank 0 and returns its wall time on every rank.
double timed_command(const lockstep::Runtime& runtime, const std::string& command) {
  double seconds = 0;
  if (runtime.rank() == 0) {
    const auto start = Clock::now();
    if (std::system(command.c_str()) != 0) {
      throw lockstep::IoError(fmt::format("benchmark command failed: {}", command));
    }
    seconds = seconds_since(start);
  }
  MPI_Bcast(&seconds, 1, MPI_DOUBLE, 0, runtime.comm());
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  std::int64_t megabytes = 512;
  int repeat = 3;
  fs::path dir = runtime.run_dir() / "bench-checkpoint";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--megabytes") megabytes = std::stoll(argv[i + 1]);
    if (flag == "--dir") dir = argv[i + 1];
    if (flag == "--repeat") repeat = std::stoi(argv[i + 1]);
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  MPI_Barrier(runtime.comm());

  // A model-like mix: a few large matrices and many small vectors.
  std::vector<lockstep::Tensor> tensors;
  const std::int64_t bytes = megabytes << 20;
  const std::int64_t large = bytes / 8 / 4;  // 8 matrices of f32 hold nearly everything
  for (int i = 0; i < 8; ++i) {
    tensors.push_back(lockstep::Tensor::allocate(fmt::format("layer{}.weight", i),
                                                 lockstep::DType::kF32, {large / 1024, 1024}));
    tensors.push_back(
        lockstep::Tensor::allocate(fmt::format("layer{}.bias", i), lockstep::DType::kF32, {1024}));
  }
  std::uint64_t total = 0;
  for (auto& tensor : tensors) {
    std::memset(tensor.data(), 0x5A, tensor.nbytes());
    total += tensor.nbytes();
  }
  lockstep::State state{{"model", tensors}};
  const double gigabytes = static_cast<double>(total) / 1e9;

  std::vector<double> sync_times;
  std::vector<double> dd_times;
  std::vector<double> stall_times;
  std::vector<double> restore_times;
  std::vector<double> cat_times;
  {
    lockstep::Checkpointer sync(runtime, {.dir = dir / "sync", .keep_last = 1, .async = false});
    lockstep::Checkpointer async(runtime, {.dir = dir / "async", .keep_last = 1, .async = true});
    async.save(0, state);  // warms the staging buffer, like every save after the first
    async.wait();
    for (int r = 1; r <= repeat; ++r) {
      MPI_Barrier(runtime.comm());
      auto start = Clock::now();
      sync.save(r, state);
      MPI_Barrier(runtime.comm());
      sync_times.push_back(seconds_since(start));

      dd_times.push_back(timed_command(
          runtime, fmt::format("dd if=/dev/zero of={} bs=1M count={} conv=fsync status=none",
                               (dir / "dd.bin").string(), total >> 20)));

      MPI_Barrier(runtime.comm());
      start = Clock::now();
      async.save(r, state);
      stall_times.push_back(seconds_since(start));
      async.wait();

      const fs::path step_dir = dir / "sync" / fmt::format("step-{}", r);
      if (runtime.rank() == 0) drop_from_cache(step_dir);
      MPI_Barrier(runtime.comm());
      start = Clock::now();
      sync.restore(r, state);
      MPI_Barrier(runtime.comm());
      restore_times.push_back(seconds_since(start));

      if (runtime.rank() == 0) drop_from_cache(step_dir);
      cat_times.push_back(
          timed_command(runtime, fmt::format("cat {}/* > /dev/null", step_dir.string())));
    }
  }
  if (runtime.rank() == 0) {
    const double sync_save = median(sync_times);
    const double dd = median(dd_times);
    const double stall = median(stall_times);
    const double restore = median(restore_times);
    const double cat = median(cat_times);
    std::cout << fmt::format(
        "checkpoint bench: {} ranks, {:.3f} GB of state, median of {}\n"
        "  sync save   {:7.3f} s  {:6.2f} GB/s   dd bs=1M conv=fsync {:7.3f} s  {:6.2f} GB/s  "
        "ratio save/dd throughput {:.2f}\n"
        "  async save() blocked {:7.4f} s = {:.1f}% of a sync save\n"
        "  restore     {:7.3f} s  {:6.2f} GB/s   cat (cold cache)    {:7.3f} s  {:6.2f} GB/s  "
        "ratio restore/cat throughput {:.2f}\n",
        runtime.world_size(), gigabytes, repeat, sync_save, gigabytes / sync_save, dd,
        gigabytes / dd, dd / sync_save, stall, 100 * stall / sync_save, restore,
        gigabytes / restore, cat, gigabytes / cat, cat / restore);
  }
  if (runtime.rank() == 0) fs::remove_all(dir);
  return 0;
}
