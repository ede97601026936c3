// All-reduce (f32, sum) from 8 B to 256 MiB, like nccl-tests' all_reduce_perf:
// time per call, algorithm bandwidth (bytes / time) and bus bandwidth
// (algbw * 2(n-1)/n, what each link carries in a ring), for lockstep's
// communicator and for the raw library call on the whole buffer: one
// MPI_Allreduce on host memory, or with --device cuda (one GPU per rank)
// lockstep's NCCL backend against one ncclAllReduce on a stream of the
// bench's own NCCL communicator, waited for with cudaStreamSynchronize.
//
//   mpiexec -n 4 allreduce_bench [--min-bytes 8] [--max-bytes 268435456]
//                                [--device cpu|cuda]   (--help explains them)
//
// Prints one row per size on rank 0; "speedup" is raw time / lockstep time.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <lockstep/communicator.h>
#include <lockstep/lockstep.h>
#if LOCKSTEP_HAVE_NCCL
#include <nccl.h>

#include <lockstep/cuda_check.h>
#include <lockstep/nccl_check.h>
#endif

namespace {

struct Range {
  std::size_t min_bytes = 8;
  std::size_t max_bytes = std::size_t{256} << 20;
  std::string device = "cpu";
};

// The range from the command line; nullopt after --help or a bad flag
// (CLI11 has printed why on rank 0), with `exit_code` for main.
std::optional<Range> parse(int argc, char** argv, int rank, int& exit_code) {
  Range range;
  CLI::App app{
      "All-reduce time, algbw and busbw from --min-bytes to --max-bytes (doubling), lockstep "
      "against the raw library call on the same buffer"};
  app.add_option("--min-bytes", range.min_bytes, "The smallest message (at least 4 bytes)")
      ->check(CLI::Range(std::size_t{4}, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-bytes", range.max_bytes, "The largest message")
      ->check(CLI::Range(std::size_t{4}, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--device", range.device,
                 "cpu (lockstep's MPI backend against MPI_Allreduce) or cuda (NCCL backend "
                 "against ncclAllReduce, one GPU per rank)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    exit_code = rank == 0 ? app.exit(error) : error.get_exit_code();
    return std::nullopt;
  }
  return range;
}

// The raw peer: the library's own all-reduce of the whole buffer, in place.
class RawAllreduce {
 public:
  virtual ~RawAllreduce() = default;
  virtual const char* name() const = 0;
  virtual void run(lockstep::Tensor& tensor) = 0;
};

class RawMpi final : public RawAllreduce {
 public:
  explicit RawMpi(MPI_Comm comm) : comm_(comm) {}
  const char* name() const override { return "raw MPI"; }
  void run(lockstep::Tensor& tensor) override {
    MPI_Allreduce(MPI_IN_PLACE, tensor.data(), static_cast<int>(tensor.numel()), MPI_FLOAT, MPI_SUM,
                  comm_);
  }

 private:
  MPI_Comm comm_;
};

#if LOCKSTEP_HAVE_NCCL
class RawNccl final : public RawAllreduce {
 public:
  explicit RawNccl(MPI_Comm comm) {
    int rank = 0;
    int size = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    ncclUniqueId id{};
    if (rank == 0) LOCKSTEP_CHECK_NCCL(ncclGetUniqueId(&id));
    MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm);
    LOCKSTEP_CHECK_NCCL(ncclCommInitRank(&comm_, size, id, rank));
    LOCKSTEP_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  RawNccl(const RawNccl&) = delete;
  RawNccl& operator=(const RawNccl&) = delete;
  RawNccl(RawNccl&&) = delete;
  RawNccl& operator=(RawNccl&&) = delete;
  ~RawNccl() override {
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }
  const char* name() const override { return "raw NCCL"; }
  void run(lockstep::Tensor& tensor) override {
    LOCKSTEP_CHECK_NCCL(ncclAllReduce(tensor.data(), tensor.data(),
                                      static_cast<std::size_t>(tensor.numel()), ncclFloat, ncclSum,
                                      comm_, stream_));
    LOCKSTEP_CHECK_CUDA(cudaStreamSynchronize(stream_));
  }

 private:
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};
#endif

// A tensor of `count` ones on `device`.
lockstep::Tensor ones(std::size_t count, const lockstep::Device& device) {
  lockstep::Tensor tensor = lockstep::Tensor::allocate("bench", lockstep::DType::kF32,
                                                       {static_cast<std::int64_t>(count)}, device);
  if (device.is_cpu()) {
    std::fill_n(tensor.data_as<float>(), count, 1.0F);
    return tensor;
  }
#if LOCKSTEP_HAVE_CUDA
  const std::vector<float> host(count, 1.0F);
  LOCKSTEP_CHECK_CUDA(
      cudaMemcpy(tensor.data(), host.data(), count * sizeof(float), cudaMemcpyHostToDevice));
#endif
  return tensor;
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
  int exit_code = 0;
  const auto parsed = parse(argc, argv, rt.rank(), exit_code);
  if (!parsed) return exit_code;
  const Range& range = *parsed;
  lockstep::Device device = lockstep::Device::cpu();
  std::unique_ptr<RawAllreduce> raw = std::make_unique<RawMpi>(rt.comm());
  if (range.device == "cuda") {
#if LOCKSTEP_HAVE_NCCL
    if (!rt.device().is_cuda()) {
      if (rt.rank() == 0) lockstep::log::error("allreduce_bench: no GPU is bound to this rank");
      return 2;
    }
    device = rt.device();
    raw = std::make_unique<RawNccl>(rt.comm());
#else
    if (rt.rank() == 0) lockstep::log::error("allreduce_bench: built without NCCL");
    return 2;
#endif
  }
  auto comm = lockstep::make_communicator(rt.comm(), device, lockstep::communicator_options(rt));
  const int n = rt.world_size();
  const double bus_factor = 2.0 * (n - 1) / n;
  if (rt.rank() == 0) {
    std::printf("# all-reduce f32 sum, %d ranks, %s, lockstep backend %s, segment %.3g MiB\n", n,
                device.str().c_str(), std::string(comm->backend_name()).c_str(),
                static_cast<double>(lockstep::communicator_options(rt).segment_bytes) / 1048576.0);
    const std::string raw_us = std::string(raw->name()) + " us";
    std::printf("%10s %11s | %11s %9s %9s | %11s %9s %9s | %7s\n", "size", "count", "lockstep us",
                "algbw", "busbw", raw_us.c_str(), "algbw", "busbw", "speedup");
    std::printf("%10s %11s | %11s %9s %9s | %11s %9s %9s | %7s\n", "", "", "", "GB/s", "GB/s", "",
                "GB/s", "GB/s", "");
  }
  for (std::size_t bytes = range.min_bytes; bytes <= range.max_bytes; bytes *= 2) {
    const std::size_t count = bytes / sizeof(float);
    lockstep::Tensor tensor = ones(count, device);
    const int calls = repetitions(bytes);
    const double ours = time_per_call(rt.comm(), calls, [&] { comm->allreduce(tensor); });
    const double theirs = time_per_call(rt.comm(), calls, [&] { raw->run(tensor); });
    if (rt.rank() == 0) {
      const double ours_algbw = static_cast<double>(bytes) / ours / 1e9;
      const double raw_algbw = static_cast<double>(bytes) / theirs / 1e9;
      std::printf("%10s %11zu | %11.1f %9.3f %9.3f | %11.1f %9.3f %9.3f | %7.2f\n",
                  human(bytes).c_str(), count, ours * 1e6, ours_algbw, ours_algbw * bus_factor,
                  theirs * 1e6, raw_algbw, raw_algbw * bus_factor, theirs / ours);
      std::fflush(stdout);
    }
  }
  return 0;
}
