#include "communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <utility>

#include <fmt/format.h>

#include "../src/element_ops.h"
#include "../src/group_work.h"
#include "../src/metadata_exchange.h"
#include "../src/unsupported.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "ring_allreduce.h"

namespace lockstep::detail {

namespace {

constexpr std::string_view kBackend = "mpi";

// All-reduces of at least this many bytes (a tensor, or a coalesced list)
// run as a pipelined ring of point-to-point messages (ring_allreduce.h);
// smaller ones call MPI_Allreduce, whose latency is lower. Chunks of
// 256 KiB keep a received chunk in the L2 cache until it is reduced; see
// docs/BENCHMARKS.md#collectives for the measurements behind both.
constexpr std::size_t kRingMinBytes = std::size_t{1} << 20;
constexpr std::size_t kRingChunkBytes = std::size_t{256} << 10;
constexpr int kRingWindow = 4;

void check_host(const Tensor& tensor, std::string_view operation) {
  if (!tensor.device().is_cpu()) {
    throw_unsupported(kBackend, fmt::format("{} on tensors in {} memory ('{}'); use the nccl "
                                            "backend for GPU tensors",
                                            operation, tensor.device().str(), tensor.name()));
  }
}

int checked_count(std::size_t count, std::string_view operation) {
  if (count > static_cast<std::size_t>(INT_MAX)) {
    throw_unsupported(kBackend, fmt::format("{} of more than {} elements in one call ({})",
                                            operation, INT_MAX, count));
  }
  return static_cast<int>(count);
}

std::string describe(std::string_view operation, const Tensor& tensor) {
  return fmt::format("{} ({} bytes, {})", operation, tensor.nbytes(), dtype_name(tensor.dtype()));
}

std::string describe(std::string_view operation, const Tensor& tensor, ReduceOp op) {
  return fmt::format("{} ({} bytes, {}, {})", operation, tensor.nbytes(),
                     dtype_name(tensor.dtype()), reduce_op_name(op));
}

void check_blocks(const Tensor& whole, const Tensor& block, int size, std::string_view operation) {
  if (whole.dtype() != block.dtype() || whole.numel() != block.numel() * size) {
    throw UsageError(fmt::format(
        "{}: expected the larger tensor to hold {} blocks of the smaller one with the same dtype, "
        "found '{}' and '{}'",
        operation, size, whole.describe(), block.describe()));
  }
}

char* bytes_of(Tensor& tensor) { return static_cast<char*>(tensor.data()); }

// Calls a function when the scope ends, whether normally or by an exception.
template <class Function>
class ScopeExit {
 public:
  explicit ScopeExit(Function function) : function_(std::move(function)) {}
  // Neither copyable nor movable: the function runs once, at this scope's end.
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() { function_(); }

 private:
  Function function_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, const CommunicatorOptions& options)
    : data_(MpiComm::dup(comm)),
      control_(MpiComm::dup(comm)),
      rank_(data_.rank()),
      size_(data_.size()),
      options_(options),
      board_(control_.get()),
      watchdog_(std::string(kBackend), board_) {
  LOCKSTEP_CHECK_MPI(MPI_Comm_set_errhandler(data_.get(), MPI_ERRORS_RETURN));
  LOCKSTEP_CHECK_MPI(MPI_Comm_set_errhandler(control_.get(), MPI_ERRORS_RETURN));
  // Last, after everything that can throw: a constructor that throws with
  // the thread running would destroy a joinable std::thread (std::terminate).
  communication_thread_ = std::thread([this] { communicate(); });
}

MpiCommunicator::~MpiCommunicator() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  queue_changed_.notify_all();
  communication_thread_.join();
}

std::shared_ptr<MpiWork> MpiCommunicator::enqueue(Wake wake, std::string description,
                                                  CollectiveTimeout timeout,
                                                  std::function<void()> body) {
  if (timeout.count() <= 0) timeout = options_.timeout;
  std::shared_ptr<MpiWork> work;
  {
    MutexLock lock(mutex_);
    // The number is taken once the work is queued: a failed allocation has
    // issued nothing, and the next collective gets the number again.
    work = std::make_shared<MpiWork>(issued_ + 1, std::move(description), timeout, std::move(body));
    queue_.push_back(work);
    ++issued_;
    try {
      // Under the lock, before the communication thread can take it: the
      // flight recorder has it queued before started, in issue order.
      watchdog_.queued(work->sequence_number(), work->describe());
    } catch (const std::exception&) {
      // Only the flight recorder misses it; the collective runs.
    }
  }
  if (wake == Wake::kNow) queue_changed_.notify_one();
  return work;
}

void MpiCommunicator::complete(const std::shared_ptr<MpiWork>& work) {
  bool inline_run = false;
  {
    MutexLock lock(mutex_);
    // Running a blocking call on the caller's thread saves two thread
    // switches (about 15 us); allowed only when it is next in line and the
    // communication thread is idle, which keeps the issue order.
    if (!busy_ && !queue_.empty() && queue_.front() == work) {
      queue_.pop_front();
      busy_ = true;
      inline_run = true;
    }
  }
  if (inline_run) {
    // However execute() ends, busy_ falls and the communication thread hears
    // of it: left set, it would hold back every later collective.
    const ScopeExit release_thread([this] {
      bool wake = false;
      {
        MutexLock lock(mutex_);
        busy_ = false;
        wake = !queue_.empty() || stopping_;  // others issued meanwhile wait for busy_
      }
      if (wake) queue_changed_.notify_one();
    });
    execute(*work);
  } else {
    queue_changed_.notify_one();
  }
  work->wait(std::chrono::duration<double>(-1));  // rethrows a failure
}

void MpiCommunicator::execute(MpiWork& work) {
  try {
    board_.publish(work.sequence_number());
  } catch (const std::exception& error) {
    log::warn("could not publish progress of {}: {}", work.describe(), error.what());
  }
  try {
    watchdog_.started(work.sequence_number(), work.describe(), work.timeout());
  } catch (const std::exception& error) {
    // The other ranks enter this collective; skipping it here would leave
    // them waiting and this rank a collective behind. Their watchdogs guard
    // it as well.
    log::warn("{} runs without the watchdog on this rank: {}", work.describe(), error.what());
  }
  work.run();
  watchdog_.finished(work.sequence_number());
}

void MpiCommunicator::communicate() {
  MutexLock lock(mutex_);
  for (;;) {
    queue_changed_.wait(lock, [this]() LOCKSTEP_REQUIRES(mutex_) {
      return (stopping_ && !busy_) || (!queue_.empty() && !busy_);
    });
    if (queue_.empty()) return;  // stopping, and everything issued is done
    std::shared_ptr<MpiWork> work = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    execute(*work);
    lock.lock();
    busy_ = false;
  }
}

// --- the MPI calls, run on the communication thread ---

void MpiCommunicator::run_allreduce(std::vector<Tensor>& tensors, ReduceOp op) {
  const DType dtype = tensors.front().dtype();
  const std::size_t element = dtype_size(dtype);
  const MPI_Datatype datatype = reduce_ops_.datatype(dtype);
  const MPI_Op mpi_op = reduce_ops_.op(dtype, op);
  std::size_t total_bytes = 0;
  for (const Tensor& tensor : tensors) total_bytes += tensor.nbytes();
  if (total_bytes >= kRingMinBytes) {
    std::vector<RingSpan> spans;
    for (Tensor& tensor : tensors) {
      spans.push_back({tensor.data(), static_cast<std::size_t>(tensor.numel())});
    }
    RingAllreduceOptions ring{.chunk_bytes = kRingChunkBytes, .window = kRingWindow};
    if (op == ReduceOp::kAvg) {
      // Only the block this rank completes; the others arrive averaged.
      ring.finish_chunk = [&](void* data, std::size_t count) {
        divide_in_place(data, dtype, count, size_);
      };
    }
    ring_allreduce(spans, element, datatype, mpi_op, data_.get(), ring, ring_scratch_);
    return;
  }
  // Small: Open MPI's own all-reduce has the lower latency.
  const std::size_t segment = std::clamp<std::size_t>(options_.segment_bytes / element, 1,
                                                      static_cast<std::size_t>(INT_MAX));
  for (Tensor& tensor : tensors) {
    const std::size_t total = static_cast<std::size_t>(tensor.numel());
    for (std::size_t offset = 0; offset < total; offset += segment) {
      const std::size_t count = std::min(segment, total - offset);
      char* data = bytes_of(tensor) + offset * element;
      LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), datatype,
                                       mpi_op, data_.get()));
      // Right after the sum, while the segment is still in cache.
      if (op == ReduceOp::kAvg) divide_in_place(data, dtype, count, size_);
    }
  }
}

void MpiCommunicator::run_broadcast(Tensor& tensor, int root) {
  const std::size_t total = tensor.nbytes();
  const std::size_t segment =
      std::clamp<std::size_t>(options_.segment_bytes, 1, static_cast<std::size_t>(INT_MAX));
  for (std::size_t offset = 0; offset < total; offset += segment) {
    const int count = static_cast<int>(std::min(segment, total - offset));
    LOCKSTEP_CHECK_MPI(MPI_Bcast(bytes_of(tensor) + offset, count, MPI_BYTE, root, data_.get()));
  }
}

void MpiCommunicator::run_allgather(const Tensor& input, Tensor& output) {
  const int count = checked_count(input.nbytes(), "allgather");
  // An input that is already block rank() of the output stays where it is
  // (MPI forbids overlapping buffers otherwise).
  char* mine = bytes_of(output) + static_cast<std::size_t>(rank_) * input.nbytes();
  const bool in_place = input.nbytes() > 0 && input.data() == mine;
  if (output.nbytes() >= kRingMinBytes && size_ > 1) {
    if (!in_place) std::memcpy(mine, input.data(), input.nbytes());
    std::vector<Tensor> stream = {output};
    run_ring_half(stream, RingPhases::kAllgather, ReduceOp::kSum);
    return;
  }
  LOCKSTEP_CHECK_MPI(MPI_Allgather(in_place ? MPI_IN_PLACE : input.data(), count, MPI_BYTE,
                                   output.data(), count, MPI_BYTE, data_.get()));
}

void MpiCommunicator::run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op,
                                         bool input_is_scratch) {
  const int count = checked_count(static_cast<std::size_t>(output.numel()), "reduce_scatter");
  if (input.nbytes() >= kRingMinBytes && size_ > 1) {
    // In the input, or in a copy of it when the caller keeps it.
    Tensor work = input;
    if (!input_is_scratch) {
      input_copy_.resize(input.nbytes());
      std::memcpy(input_copy_.data(), input.data(), input.nbytes());
      work = Tensor::borrow(input.name(), input_copy_.data(), input.dtype(), input.shape());
    }
    std::vector<Tensor> stream = {work};
    run_ring_half(stream, RingPhases::kReduceScatter, op);
    std::memcpy(
        output.data(),
        static_cast<const char*>(work.data()) + static_cast<std::size_t>(rank_) * output.nbytes(),
        output.nbytes());
    return;
  }
  LOCKSTEP_CHECK_MPI(MPI_Reduce_scatter_block(input.data(), output.data(), count,
                                              reduce_ops_.datatype(input.dtype()),
                                              reduce_ops_.op(input.dtype(), op), data_.get()));
  if (op == ReduceOp::kAvg) {
    divide_in_place(output.data(), output.dtype(), static_cast<std::size_t>(count), size_);
  }
}

void MpiCommunicator::run_ring_half(std::vector<Tensor>& tensors, RingPhases phases, ReduceOp op) {
  const DType dtype = tensors.front().dtype();
  std::vector<RingSpan> spans;
  for (Tensor& tensor : tensors) {
    spans.push_back({tensor.data(), static_cast<std::size_t>(tensor.numel())});
  }
  RingAllreduceOptions ring{
      .phases = phases, .chunk_bytes = kRingChunkBytes, .window = kRingWindow};
  const bool reduces = phases != RingPhases::kAllgather;
  if (reduces && op == ReduceOp::kAvg) {
    // Each chunk of this rank's share as it completes, while in cache.
    ring.finish_chunk = [&](void* data, std::size_t count) {
      divide_in_place(data, dtype, count, size_);
    };
  }
  ring_allreduce(spans, dtype_size(dtype), reduce_ops_.datatype(dtype),
                 reduces ? reduce_ops_.op(dtype, op) : MPI_OP_NULL, data_.get(), ring,
                 ring_scratch_);
}

void MpiCommunicator::run_reduce_scatter_stream(std::vector<Tensor>& tensors, ReduceOp op) {
  std::size_t total_bytes = 0;
  for (const Tensor& tensor : tensors) total_bytes += tensor.nbytes();
  if (total_bytes < kRingMinBytes || size_ == 1) {
    // Small: reducing every share costs no more than the latency of one.
    run_allreduce(tensors, op);
    return;
  }
  run_ring_half(tensors, RingPhases::kReduceScatter, op);
}

void MpiCommunicator::run_allgather_stream(std::vector<Tensor>& tensors) {
  const std::size_t element = dtype_size(tensors.front().dtype());
  std::size_t total = 0;  // elements
  for (const Tensor& tensor : tensors) total += static_cast<std::size_t>(tensor.numel());
  if (total * element >= kRingMinBytes && size_ > 1) {
    run_ring_half(tensors, RingPhases::kAllgather, ReduceOp::kSum);
    return;
  }
  // Small: through one contiguous copy of the stream, shares of uneven size.
  std::vector<char> stream(total * element);
  std::size_t offset = 0;
  for (const Tensor& tensor : tensors) {
    std::memcpy(stream.data() + offset, tensor.data(), tensor.nbytes());
    offset += tensor.nbytes();
  }
  const std::size_t share =
      (total + static_cast<std::size_t>(size_) - 1) / static_cast<std::size_t>(size_);
  std::vector<int> counts(static_cast<std::size_t>(size_));
  std::vector<int> displacements(static_cast<std::size_t>(size_));
  for (std::size_t r = 0; r < counts.size(); ++r) {
    const std::size_t begin = std::min(total, r * share);
    counts[r] = checked_count((std::min(total - begin, share)) * element, "allgather");
    displacements[r] = checked_count(begin * element, "allgather");
  }
  LOCKSTEP_CHECK_MPI(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_BYTE, stream.data(), counts.data(),
                                    displacements.data(), MPI_BYTE, data_.get()));
  offset = 0;
  for (Tensor& tensor : tensors) {
    std::memcpy(tensor.data(), stream.data() + offset, tensor.nbytes());
    offset += tensor.nbytes();
  }
}

// --- the public operations: check on the caller's thread, run on ours ---

std::shared_ptr<MpiWork> MpiCommunicator::start_allreduce(std::vector<Tensor> tensors,
                                                          const AllreduceOptions& options,
                                                          Wake wake) {
  for (const Tensor& tensor : tensors) check_host(tensor, "allreduce");
  const ReduceOp op = options.op;
  std::string description = describe("allreduce", tensors.front(), op);
  if (tensors.size() > 1) {
    std::size_t bytes = 0;
    for (const Tensor& tensor : tensors) bytes += tensor.nbytes();
    description = fmt::format("allreduce ({} bytes in {} tensors, {}, {})", bytes, tensors.size(),
                              dtype_name(tensors.front().dtype()), reduce_op_name(op));
  }
  return enqueue(
      wake, std::move(description), options.timeout,
      [this, tensors = std::move(tensors), op]() mutable { run_allreduce(tensors, op); });
}

std::shared_ptr<MpiWork> MpiCommunicator::start_broadcast(Tensor tensor,
                                                          const BroadcastOptions& options,
                                                          Wake wake) {
  check_host(tensor, "broadcast");
  if (options.root < 0 || options.root >= size_) {
    throw UsageError(fmt::format("broadcast: root {} is not a rank of this communicator (0..{})",
                                 options.root, size_ - 1));
  }
  const int root = options.root;
  return enqueue(wake, describe("broadcast", tensor), options.timeout,
                 [this, tensor, root]() mutable { run_broadcast(tensor, root); });
}

std::shared_ptr<MpiWork> MpiCommunicator::start_allgather(Tensor input, Tensor output,
                                                          const AllgatherOptions& options,
                                                          Wake wake) {
  check_host(input, "allgather");
  check_host(output, "allgather");
  check_blocks(output, input, size_, "allgather");
  checked_count(input.nbytes(), "allgather");
  return enqueue(wake, describe("allgather", input), options.timeout,
                 [this, input, output]() mutable { run_allgather(input, output); });
}

std::shared_ptr<MpiWork> MpiCommunicator::start_reduce_scatter(Tensor input, Tensor output,
                                                               const ReduceScatterOptions& options,
                                                               Wake wake) {
  check_host(input, "reduce_scatter");
  check_host(output, "reduce_scatter");
  check_blocks(input, output, size_, "reduce_scatter");
  checked_count(static_cast<std::size_t>(output.numel()), "reduce_scatter");
  const ReduceOp op = options.op;
  const bool scratch = options.input_is_scratch;
  return enqueue(wake, describe("reduce_scatter", input, op), options.timeout,
                 [this, input, output, op, scratch]() mutable {
                   run_reduce_scatter(input, output, op, scratch);
                 });
}

std::shared_ptr<MpiWork> MpiCommunicator::start_barrier(const BarrierOptions& options, Wake wake) {
  return enqueue(wake, "barrier", options.timeout,
                 [this] { LOCKSTEP_CHECK_MPI(MPI_Barrier(data_.get())); });
}

std::shared_ptr<Work> MpiCommunicator::allreduce_async(Tensor tensor,
                                                       const AllreduceOptions& options) {
  return start_allreduce({std::move(tensor)}, options, Wake::kNow);
}

std::shared_ptr<Work> MpiCommunicator::allreduce_coalesced_async(std::vector<Tensor> tensors,
                                                                 const AllreduceOptions& options) {
  check_coalesced(tensors, "allreduce_coalesced_async");
  return start_allreduce(std::move(tensors), options, Wake::kNow);
}

void MpiCommunicator::allreduce(Tensor& tensor, const AllreduceOptions& options) {
  complete(start_allreduce({tensor}, options, Wake::kLater));
}

std::shared_ptr<Work> MpiCommunicator::broadcast_async(Tensor tensor,
                                                       const BroadcastOptions& options) {
  return start_broadcast(std::move(tensor), options, Wake::kNow);
}

void MpiCommunicator::broadcast(Tensor& tensor, const BroadcastOptions& options) {
  complete(start_broadcast(tensor, options, Wake::kLater));
}

std::shared_ptr<Work> MpiCommunicator::allgather_async(Tensor input, Tensor output,
                                                       const AllgatherOptions& options) {
  return start_allgather(std::move(input), std::move(output), options, Wake::kNow);
}

void MpiCommunicator::allgather(const Tensor& input, Tensor& output,
                                const AllgatherOptions& options) {
  complete(start_allgather(input, output, options, Wake::kLater));
}

std::shared_ptr<Work> MpiCommunicator::reduce_scatter_async(Tensor input, Tensor output,
                                                            const ReduceScatterOptions& options) {
  return start_reduce_scatter(std::move(input), std::move(output), options, Wake::kNow);
}

void MpiCommunicator::reduce_scatter(const Tensor& input, Tensor& output,
                                     const ReduceScatterOptions& options) {
  complete(start_reduce_scatter(input, output, options, Wake::kLater));
}

std::shared_ptr<Work> MpiCommunicator::reduce_scatter_stream_async(
    std::vector<Tensor> tensors, const ReduceScatterOptions& options) {
  check_coalesced(tensors, "reduce_scatter_stream_async");
  for (const Tensor& tensor : tensors) check_host(tensor, "reduce_scatter_stream_async");
  std::size_t bytes = 0;
  for (const Tensor& tensor : tensors) bytes += tensor.nbytes();
  const ReduceOp op = options.op;
  std::string description =
      fmt::format("reduce_scatter ({} bytes in {} tensors, {}, {})", bytes, tensors.size(),
                  dtype_name(tensors.front().dtype()), reduce_op_name(op));
  return enqueue(Wake::kNow, std::move(description), options.timeout,
                 [this, tensors = std::move(tensors), op]() mutable {
                   run_reduce_scatter_stream(tensors, op);
                 });
}

std::shared_ptr<Work> MpiCommunicator::allgather_stream_async(std::vector<Tensor> tensors,
                                                              const AllgatherOptions& options) {
  check_coalesced(tensors, "allgather_stream_async");
  for (const Tensor& tensor : tensors) check_host(tensor, "allgather_stream_async");
  std::size_t bytes = 0;
  for (const Tensor& tensor : tensors) bytes += tensor.nbytes();
  std::string description = fmt::format("allgather ({} bytes in {} tensors, {})", bytes,
                                        tensors.size(), dtype_name(tensors.front().dtype()));
  return enqueue(Wake::kNow, std::move(description), options.timeout,
                 [this, tensors = std::move(tensors)]() mutable { run_allgather_stream(tensors); });
}

std::shared_ptr<Work> MpiCommunicator::barrier_async(const BarrierOptions& options) {
  return start_barrier(options, Wake::kNow);
}

void MpiCommunicator::barrier(const BarrierOptions& options) {
  complete(start_barrier(options, Wake::kLater));
}

std::vector<std::string> MpiCommunicator::exchange_metadata(const std::string& mine) {
  return allgather_strings(control_.get(), mine);
}

}  // namespace lockstep::detail
