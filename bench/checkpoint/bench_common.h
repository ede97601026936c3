// What the checkpoint benchmarks share: GPT-2 small's tensor shapes, a
// clock, cold reads and a quiet disk before each timed operation.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <lockstep/lockstep.h>

namespace lockstep::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// GPT-2 small (124M parameters): token and position embeddings, 12 blocks
// of attention and MLP with their layer norms, a final layer norm. `scale`
// shrinks the large dimensions (vocabulary, context, MLP width) so that the
// same mix of a few huge and many small tensors fits a smaller machine.
inline std::vector<std::pair<std::string, lockstep::Shape>> gpt2_small_shapes(double scale) {
  const auto scaled = [scale](std::int64_t n) {
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(n) * scale));
  };
  const std::int64_t d = 768;
  std::vector<std::pair<std::string, lockstep::Shape>> shapes = {{"wte", {scaled(50257), d}},
                                                                 {"wpe", {scaled(1024), d}}};
  for (int layer = 0; layer < 12; ++layer) {
    const auto block = [layer](const char* name) { return fmt::format("h{}.{}", layer, name); };
    shapes.push_back({block("ln_1.weight"), {d}});
    shapes.push_back({block("ln_1.bias"), {d}});
    shapes.push_back({block("attn.c_attn.weight"), {d, scaled(3 * d)}});
    shapes.push_back({block("attn.c_attn.bias"), {scaled(3 * d)}});
    shapes.push_back({block("attn.c_proj.weight"), {d, scaled(d)}});
    shapes.push_back({block("attn.c_proj.bias"), {d}});
    shapes.push_back({block("ln_2.weight"), {d}});
    shapes.push_back({block("ln_2.bias"), {d}});
    shapes.push_back({block("mlp.c_fc.weight"), {d, scaled(4 * d)}});
    shapes.push_back({block("mlp.c_fc.bias"), {scaled(4 * d)}});
    shapes.push_back({block("mlp.c_proj.weight"), {scaled(4 * d), d}});
    shapes.push_back({block("mlp.c_proj.bias"), {d}});
  }
  shapes.push_back({"ln_f.weight", {d}});
  shapes.push_back({"ln_f.bias", {d}});
  return shapes;
}

// Evicts the files below `dir` from the page cache, so reads hit the disk.
inline void drop_from_cache(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Runs a shell command on rank 0 and returns its wall time on every rank.
inline double timed_command(const lockstep::Runtime& runtime, const std::string& command) {
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

// Lets the disk finish what earlier work left it (write-back, and the
// discards of deleted files on a file system mounted with `discard`), so
// that every timed operation starts on a quiet disk.
inline void settle_disk(const lockstep::Runtime& runtime) {
  if (runtime.rank() == 0) ::sync();
  MPI_Barrier(runtime.comm());
}

// A training step's stand-in: `work` passes of arithmetic over a buffer that
// fits in cache (compute, like a forward/backward), then the gradient
// all-reduce's synchronisation (a small all-reduce). With `wait_seconds`
// set, the step instead waits that long with its core idle, as the host
// thread of a step computed by an accelerator does.
struct FakeStep {
  std::vector<float> values = std::vector<float>(1 << 18, 1.0F);
  int work = 1;
  double wait_seconds = 0;

  void run(MPI_Comm comm) {
    if (wait_seconds > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(wait_seconds));
    } else {
      for (int pass = 0; pass < work; ++pass) {
        for (auto& value : values) value = value * 0.999F + 0.001F;
      }
    }
    float sum = values[7];
    MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_FLOAT, MPI_SUM, comm);
    values[7] = sum / 1e6F;
  }
};

}  // namespace lockstep::bench
