// Communicator: collective operations on Tensors among the ranks of a job.
// Backends: "mpi" (host memory, collectives/mpi/) and "nccl" (CUDA memory,
// collectives/nccl/). Every rank must issue the same collectives in the same
// order on a communicator; each one gets a sequence number, and a watchdog
// aborts the job when one does not finish within its timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <mpi.h>

#include "lockstep/tensor.h"
#include "lockstep/work.h"

namespace lockstep {

class Runtime;

enum class ReduceOp : std::uint8_t { kSum, kAvg, kMax, kMin };
// "sum", "avg", "max", "min"
std::string_view reduce_op_name(ReduceOp op);

// A zero timeout means the communicator's default (LOCKSTEP_COLLECTIVE_TIMEOUT).
using CollectiveTimeout = std::chrono::duration<double>;

struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;
  CollectiveTimeout timeout{0};
};

struct BroadcastOptions {
  int root = 0;
  CollectiveTimeout timeout{0};
};

struct AllgatherOptions {
  CollectiveTimeout timeout{0};
};

struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::kSum;
  CollectiveTimeout timeout{0};
  // The backend may use `input` as scratch space, leaving its contents
  // unspecified: the MPI backend then reduces large tensors in it instead of
  // in a copy.
  bool input_is_scratch = false;
};

struct BarrierOptions {
  CollectiveTimeout timeout{0};
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // "mpi" or "nccl".
  virtual std::string_view backend_name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: every rank's `tensor` ends up holding the element-wise
  // reduction of all ranks' tensors. Avg divides the sum by size() (integer
  // division for integer dtypes); f16 and bf16 accumulate in float. Every
  // rank must pass the same dtype and element count. Throws UsageError
  // ("backend X does not support Y") for a dtype or device the backend
  // cannot reduce, BackendError when the library fails.
  virtual void allreduce(Tensor& tensor, const AllreduceOptions& options = {}) = 0;
  // Starts the same operation and returns at once. The caller must keep no
  // other reference writing to `tensor` until the Work has finished; the
  // Work keeps the storage alive.
  virtual std::shared_ptr<Work> allreduce_async(Tensor tensor,
                                                const AllreduceOptions& options = {}) = 0;

  // Starts one all-reduce of several tensors of one dtype, as if they lay
  // back to back in one buffer; every rank passes the same dtype and
  // element counts in the same order. The MPI backend moves them as one
  // stream (one collective, one pipeline); the default issues
  // allreduce_async for each tensor. The returned Work finishes when all
  // have; its sequence number is the last one's. Throws UsageError for an
  // empty list or mixed dtypes.
  virtual std::shared_ptr<Work> allreduce_coalesced_async(std::vector<Tensor> tensors,
                                                          const AllreduceOptions& options = {});
  // Copies `tensor` of rank options.root into `tensor` of every other rank.
  virtual void broadcast(Tensor& tensor, const BroadcastOptions& options = {}) = 0;
  virtual std::shared_ptr<Work> broadcast_async(Tensor tensor,
                                                const BroadcastOptions& options = {}) = 0;

  // `output` (size() times the elements of `input`, same dtype) receives
  // every rank's `input`, in rank order. `input` may be block rank() of
  // `output` itself (in place); it must not overlap it otherwise.
  virtual void allgather(const Tensor& input, Tensor& output,
                         const AllgatherOptions& options = {}) = 0;
  virtual std::shared_ptr<Work> allgather_async(Tensor input, Tensor output,
                                                const AllgatherOptions& options = {}) = 0;

  // Reduces `input` (size() times the elements of `output`) across ranks and
  // leaves block rank() of the result in `output`.
  virtual void reduce_scatter(const Tensor& input, Tensor& output,
                              const ReduceScatterOptions& options = {}) = 0;
  virtual std::shared_ptr<Work> reduce_scatter_async(Tensor input, Tensor output,
                                                     const ReduceScatterOptions& options = {}) = 0;

  // Shares of a stream: `tensors` (one dtype, every rank the same element
  // counts in the same order) taken back to back as one stream of E
  // elements, cut into size() shares of ceil(E / size()) elements in rank
  // order (the last shares shorter, or empty). Nothing needs to divide
  // evenly and nothing is padded: ShardedGradSync reduces gradients and
  // gathers parameters in their own storage with these. Backends without
  // them (has_stream_shares() false) throw UsageError; use reduce_scatter
  // and allgather on a padded buffer there.
  virtual bool has_stream_shares() const { return false; }
  // Reduces the stream across ranks; share rank() of this rank's stream
  // then holds the result, and the rest of the stream is unspecified.
  virtual std::shared_ptr<Work> reduce_scatter_stream_async(
      std::vector<Tensor> tensors, const ReduceScatterOptions& options = {});
  // Every rank's share rank() of its stream lands in that share of every
  // rank's stream.
  virtual std::shared_ptr<Work> allgather_stream_async(std::vector<Tensor> tensors,
                                                       const AllgatherOptions& options = {});

  // Returns once every rank has entered the barrier.
  virtual void barrier(const BarrierOptions& options = {}) = 0;
  virtual std::shared_ptr<Work> barrier_async(const BarrierOptions& options = {}) = 0;

  // Host-memory exchange of small metadata that works on every backend
  // (GradSync checks registrations with it): returns every rank's `mine`, in
  // rank order. Collective and blocking; call it from the thread that issues
  // collectives. Not counted in the sequence of collectives.
  virtual std::vector<std::string> exchange_metadata(const std::string& mine) = 0;
};

// Defaults of a communicator, normally taken from the configuration.
struct CommunicatorOptions {
  // How long one collective may take before the watchdog aborts the job.
  CollectiveTimeout timeout{600};
  // The MPI backend splits broadcasts, and all-reduces too small for its
  // ring (under 1 MiB), into pieces of at most this many bytes (Open MPI's
  // large single messages are slow).
  std::size_t segment_bytes = std::size_t{4} << 20;
};

// CommunicatorOptions from the Runtime's configuration
// (LOCKSTEP_COLLECTIVE_TIMEOUT, LOCKSTEP_MPI_SEGMENT_MB).
CommunicatorOptions communicator_options(const Runtime& runtime);

// A communicator over the ranks of `comm` (which it duplicates, so user
// traffic on `comm` never interleaves with it) for tensors on `device`: the
// MPI backend for the CPU, NCCL for CUDA. Collective over `comm`. Throws
// UsageError when the backend for `device` was not built.
std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, Device device,
                                                const CommunicatorOptions& options = {});
// The same over the Runtime's communicator, device and configuration.
std::unique_ptr<Communicator> make_communicator(const Runtime& runtime);

}  // namespace lockstep
