#include "communicator.h"

#include <chrono>

#include <fmt/format.h>

#include "../src/metadata_exchange.h"
#include "../src/poll_until.h"
#include "../src/unsupported.h"
#include "lockstep/cuda_check.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "lockstep/nccl_check.h"

namespace lockstep::detail {

namespace {

constexpr std::string_view kBackend = "nccl";
constexpr auto kCompletionPoll = std::chrono::microseconds(200);

ncclDataType_t nccl_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

void check_on(const Tensor& tensor, Device device, std::string_view operation) {
  if (tensor.device() != device) {
    throw_unsupported(kBackend,
                      fmt::format("{} on '{}' in {} memory; this communicator works on "
                                  "{} (use the mpi backend for host tensors)",
                                  operation, tensor.name(), tensor.device().str(), device.str()));
  }
}

void check_blocks(const Tensor& whole, const Tensor& block, int size, std::string_view operation) {
  if (whole.dtype() != block.dtype() || whole.numel() != block.numel() * size) {
    throw UsageError(fmt::format(
        "{}: expected the larger tensor to hold {} blocks of the smaller one with the same dtype, "
        "found '{}' and '{}'",
        operation, size, whole.describe(), block.describe()));
  }
}

std::string describe(std::string_view operation, const Tensor& tensor) {
  return fmt::format("{} ({} bytes, {})", operation, tensor.nbytes(), dtype_name(tensor.dtype()));
}

std::string describe(std::string_view operation, const Tensor& tensor, ReduceOp op) {
  return fmt::format("{} ({} bytes, {}, {})", operation, tensor.nbytes(),
                     dtype_name(tensor.dtype()), reduce_op_name(op));
}

std::size_t count_of(const Tensor& tensor) { return static_cast<std::size_t>(tensor.numel()); }

// Drives a non-blocking NCCL call that answered ncclInProgress to its end,
// pausing between polls; aborts the communicator when that takes longer than
// `timeout`. The caller must not hold a lock that the completion thread needs.
void settle(NcclCommHandle& comm, ncclResult_t result, const char* call,
            CollectiveTimeout timeout) {
  const bool settled = poll_until(
      [&] {
        if (result == ncclInProgress) {
          LOCKSTEP_CHECK_NCCL(ncclCommGetAsyncError(comm.get(), &result));
        }
        return result != ncclInProgress;
      },
      {.timeout = timeout});
  if (!settled) {
    comm.abort();
    throw TimeoutError(
        fmt::format("{} did not complete within {:.3g} s; the NCCL communicator "
                    "was aborted",
                    call, timeout.count()));
  }
  if (result != ncclSuccess) throw_nccl_error(result, call, __FILE__, __LINE__);
}

// Binds `device` to this thread and creates the NCCL communicator over the
// ranks of `comm`: rank 0's ncclUniqueId travels by MPI broadcast.
std::shared_ptr<NcclCommHandle> create_comm(MPI_Comm comm, int rank, int size, Device device,
                                            CollectiveTimeout timeout) {
  if (!device.is_cuda()) {
    throw_unsupported(kBackend, "communicators on " + device.str() + "; use the mpi backend");
  }
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(device.index));
  ncclUniqueId id{};
  if (rank == 0) LOCKSTEP_CHECK_NCCL(ncclGetUniqueId(&id));
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return at once, so that a hang can be aborted
  ncclComm_t raw = nullptr;
  const ncclResult_t started = ncclCommInitRankConfig(&raw, size, id, rank, &config);
  if (started != ncclSuccess && started != ncclInProgress) {
    throw_nccl_error(started, "ncclCommInitRankConfig", __FILE__, __LINE__);
  }
  auto handle = std::make_shared<NcclCommHandle>(raw);
  settle(*handle, started, "ncclCommInitRankConfig", timeout);
  return handle;
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, Device device, const CommunicatorOptions& options)
    : control_(MpiComm::dup(comm)),
      rank_(control_.rank()),
      size_(control_.size()),
      device_(device),
      options_(options),
      board_(control_.get()),
      comm_(create_comm(control_.get(), rank_, size_, device_, options_.timeout)),
      stream_(CudaStreamHandle::create()),
      barrier_scratch_(Tensor::allocate("nccl/barrier", DType::kF32, {1}, device_)),
      watchdog_(std::string(kBackend), board_, [this] { comm_->abort(); }),
      completion_thread_([this] { watch_completions(); }) {}

NcclCommunicator::~NcclCommunicator() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  in_flight_changed_.notify_all();
  completion_thread_.join();
}

std::shared_ptr<Work> NcclCommunicator::launch(std::string description, CollectiveTimeout timeout,
                                               std::vector<Tensor> keep_alive, const Launch& call) {
  if (timeout.count() <= 0) timeout = options_.timeout;
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(device_.index));
  // Our stream does not synchronise with the default one: make it wait for
  // what the caller has queued there (the kernels that produced the data).
  CudaEventHandle inputs_ready = CudaEventHandle::create();
  LOCKSTEP_CHECK_CUDA(cudaEventRecord(inputs_ready.get(), nullptr));
  LOCKSTEP_CHECK_CUDA(cudaStreamWaitEvent(stream_.get(), inputs_ready.get(), 0));
  CudaEventHandle done = CudaEventHandle::create();

  // One issuing thread at a time keeps the ranks in step. The completion
  // thread never takes this lock, so it goes on retiring collectives while
  // an enqueue settles.
  MutexLock issuing(issue_mutex_);
  const std::uint64_t sequence = issued_ + 1;
  board_.publish(sequence);
  // Enqueue first: a call that fails has issued nothing, so it takes no
  // sequence number and leaves the watchdog nothing to report as a hang.
  settle(*comm_, call(comm_->get(), stream_.get()), description.c_str(), timeout);
  issued_ = sequence;
  try {
    LOCKSTEP_CHECK_CUDA(cudaEventRecord(done.get(), stream_.get()));
    auto work = std::make_shared<NcclWork>(sequence, std::move(description), std::move(done), comm_,
                                           std::move(keep_alive));
    {
      MutexLock lock(mutex_);
      in_flight_.push_back(work);
      // Under mutex_, so that the completion thread cannot retire it first.
      try {
        watchdog_.started(sequence, work->describe(), timeout);
      } catch (const std::exception& error) {
        // The other ranks' watchdogs guard it as well.
        log::warn("{} runs without the watchdog on this rank: {}", work->describe(), error.what());
      }
    }
    in_flight_changed_.notify_one();
    return work;
  } catch (...) {
    // The collective is queued on the device and counted by every rank, but
    // nothing would see it end: abort the communicator, so that it fails
    // rather than hangs unwatched.
    comm_->abort();
    throw;
  }
}

void NcclCommunicator::watch_completions() {
  cudaSetDevice(device_.index);
  MutexLock lock(mutex_);
  for (;;) {
    while (!in_flight_.empty() && in_flight_.front()->finished_on_device()) {
      watchdog_.finished(in_flight_.front()->sequence_number());
      in_flight_.pop_front();
    }
    if (stopping_ && in_flight_.empty()) return;
    if (in_flight_.empty()) {
      in_flight_changed_.wait(lock);
    } else {
      in_flight_changed_.wait_for(lock, kCompletionPoll);
    }
  }
}

std::shared_ptr<Work> NcclCommunicator::allreduce_async(Tensor tensor,
                                                        const AllreduceOptions& options) {
  check_on(tensor, device_, "allreduce");
  const ReduceOp op = options.op;
  return launch(describe("allreduce", tensor, op), options.timeout, {tensor},
                [&](ncclComm_t comm, cudaStream_t stream) {
                  return ncclAllReduce(tensor.data(), tensor.data(), count_of(tensor),
                                       nccl_dtype(tensor.dtype()), nccl_op(op), comm, stream);
                });
}

void NcclCommunicator::allreduce(Tensor& tensor, const AllreduceOptions& options) {
  allreduce_async(tensor, options)->wait();
}

std::shared_ptr<Work> NcclCommunicator::broadcast_async(Tensor tensor,
                                                        const BroadcastOptions& options) {
  check_on(tensor, device_, "broadcast");
  if (options.root < 0 || options.root >= size_) {
    throw UsageError(fmt::format("broadcast: root {} is not a rank of this communicator (0..{})",
                                 options.root, size_ - 1));
  }
  const int root = options.root;
  return launch(describe("broadcast", tensor), options.timeout, {tensor},
                [&](ncclComm_t comm, cudaStream_t stream) {
                  return ncclBroadcast(tensor.data(), tensor.data(), count_of(tensor),
                                       nccl_dtype(tensor.dtype()), root, comm, stream);
                });
}

void NcclCommunicator::broadcast(Tensor& tensor, const BroadcastOptions& options) {
  broadcast_async(tensor, options)->wait();
}

std::shared_ptr<Work> NcclCommunicator::allgather_async(Tensor input, Tensor output,
                                                        const AllgatherOptions& options) {
  check_on(input, device_, "allgather");
  check_on(output, device_, "allgather");
  check_blocks(output, input, size_, "allgather");
  return launch(describe("allgather", input), options.timeout, {input, output},
                [&](ncclComm_t comm, cudaStream_t stream) {
                  return ncclAllGather(input.data(), output.data(), count_of(input),
                                       nccl_dtype(input.dtype()), comm, stream);
                });
}

void NcclCommunicator::allgather(const Tensor& input, Tensor& output,
                                 const AllgatherOptions& options) {
  allgather_async(input, output, options)->wait();
}

std::shared_ptr<Work> NcclCommunicator::reduce_scatter_async(Tensor input, Tensor output,
                                                             const ReduceScatterOptions& options) {
  check_on(input, device_, "reduce_scatter");
  check_on(output, device_, "reduce_scatter");
  check_blocks(input, output, size_, "reduce_scatter");
  const ReduceOp op = options.op;
  return launch(describe("reduce_scatter", input, op), options.timeout, {input, output},
                [&](ncclComm_t comm, cudaStream_t stream) {
                  return ncclReduceScatter(input.data(), output.data(), count_of(output),
                                           nccl_dtype(input.dtype()), nccl_op(op), comm, stream);
                });
}

void NcclCommunicator::reduce_scatter(const Tensor& input, Tensor& output,
                                      const ReduceScatterOptions& options) {
  reduce_scatter_async(input, output, options)->wait();
}

std::shared_ptr<Work> NcclCommunicator::barrier_async(const BarrierOptions& options) {
  Tensor scratch = barrier_scratch_;
  return launch("barrier", options.timeout, {scratch}, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(scratch.data(), scratch.data(), 1, ncclFloat32, ncclSum, comm, stream);
  });
}

void NcclCommunicator::barrier(const BarrierOptions& options) { barrier_async(options)->wait(); }

std::vector<std::string> NcclCommunicator::exchange_metadata(const std::string& mine) {
  return allgather_strings(control_.get(), mine);
}

}  // namespace lockstep::detail
