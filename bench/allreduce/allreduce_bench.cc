// All-reduce (f32, sum) from 8 B to 256 MiB, like nccl-tests' all_reduce_perf:
// time per call, algorithm bandwidth (bytes / time) and bus bandwidth
// (algbw * 2(n-1)/n, what each link carries in a ring), for lockstep's
// communicator and for one raw MPI_Allreduce of the whole buffer.
//
//   mpiexec -n 4 allreduce_bench [--min-bytes 8] [--max-bytes 268435456]
//
// Prints one row per size on rank 0; "speedup" is raw time / lockstep time.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include <lockstep/communicator.h>
#include <lockstep/lockstep.h>

namespace {

struct Range {
  std::size_t min_bytes = 8;
  std::size_t max_bytes = std::size_t{256} << 20;
};

Range parse(int argc, char** argv) {
  Range range;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const auto value = static_cast<std::size_t>(std::strtoull(argv[i + 1], nullptr, 10));
    if (flag == "--min-bytes") range.min_bytes = std::max<std::size_t>(value, 4);
    if (flag == "--max-bytes") range.max_bytes = value;
  }
  return range;
}

// Fewer repetitions for large sizes keep the whole table within minutes on
// a small machine; small sizes need many for a stable mean.
int repetitions(std::size_t bytes) {
  const std::size_t budget = std::size_t{256} << 20;
  return static_cast<int>(
      std::clamp<std::size_t>(budget / std::max<std::size_t>(bytes, 1), 3, 200));
}

// Mean seconds per call, the slowest rank's view (that is when the
// collective has finished everywhere).
double time_per_call(MPI_Comm comm, int calls, const std::function<void()>& call) {
  call();  // warm-up: connections, buffers
  MPI_Barrier(comm);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) call();
  const double mine =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / calls;
  double slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
  return slowest;
}

std::string human(std::size_t bytes) {
  if (bytes >= (std::size_t{1} << 20)) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (std::size_t{1} << 10)) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const Range range = parse(argc, argv);
  auto comm = lockstep::make_communicator(rt);
  const int n = rt.world_size();
  const double bus_factor = 2.0 * (n - 1) / n;
  if (rt.rank() == 0) {
    std::printf("# all-reduce f32 sum, %d ranks, lockstep backend %s, segment %.3g MiB\n", n,
                std::string(comm->backend_name()).c_str(),
                static_cast<double>(lockstep::communicator_options(rt).segment_bytes) / 1048576.0);
    std::printf("%10s %11s | %11s %9s %9s | %11s %9s %9s | %7s\n", "size", "count", "lockstep us",
                "algbw", "busbw", "raw MPI us", "algbw", "busbw", "speedup");
    std::printf("%10s %11s | %11s %9s %9s | %11s %9s %9s | %7s\n", "", "", "", "GB/s", "GB/s", "",
                "GB/s", "GB/s", "");
  }
  for (std::size_t bytes = range.min_bytes; bytes <= range.max_bytes; bytes *= 2) {
    const std::size_t count = bytes / sizeof(float);
    lockstep::Tensor tensor = lockstep::Tensor::allocate("bench", lockstep::DType::kF32,
                                                         {static_cast<std::int64_t>(count)});
    std::fill_n(tensor.data_as<float>(), count, 1.0F);
    const int calls = repetitions(bytes);
    const double ours = time_per_call(rt.comm(), calls, [&] { comm->allreduce(tensor); });
    const double raw = time_per_call(rt.comm(), calls, [&] {
      MPI_Allreduce(MPI_IN_PLACE, tensor.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                    rt.comm());
    });
    if (rt.rank() == 0) {
      const double ours_algbw = static_cast<double>(bytes) / ours / 1e9;
      const double raw_algbw = static_cast<double>(bytes) / raw / 1e9;
      std::printf("%10s %11zu | %11.1f %9.3f %9.3f | %11.1f %9.3f %9.3f | %7.2f\n",
                  human(bytes).c_str(), count, ours * 1e6, ours_algbw, ours_algbw * bus_factor,
                  raw * 1e6, raw_algbw, raw_algbw * bus_factor, raw / ours);
      std::fflush(stdout);
    }
  }
  return 0;
}
