// ShardedGradSync: GradSync for sharded optimizer state (ZeRO stage 1). Each
// rank updates only its share of the parameters, and holds optimizer state
// for that share only.
//
// The gradients are cut into buckets as GradSync cuts them, but every
// bucket is reduce-scattered instead of all-reduced: the bucket's elements
// (its large gradients in their own storage, then the small ones packed)
// are cut into size() contiguous shares of ceil(elements / size()) (the
// last shares shorter, or empty when a bucket has fewer elements than there
// are ranks; nothing need divide evenly), and rank r receives the average of
// share r. Backward overlaps with the reduce-scatters as it does with
// GradSync's all-reduces. A step:
//
//   forward, backward calling ready(gradient) per gradient
//   wait()                  // averages of the owned elements in the gradients
//   optimizer on layout()   // update the owned elements of each parameter
//   gather_parameters()     // all-gathers start, one per bucket
//   wait_parameter(p) before the next forward reads p (or wait_parameters())
//
// The owned elements of each parameter are a contiguous run (layout()):
// every share lies in one bucket, and a parameter lies in one bucket.
// Parameters travel in their own dtype, gradients in the wire dtype
// (options.wire_dtype), so every rank ends a step with the same parameter
// bits. Host memory with the mpi backend, one GPU with nccl; on a GPU the
// packing and unpacking is queued on the legacy default stream, as
// GradSync's is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lockstep/communicator.h"
#include "lockstep/grad_sync.h"
#include "lockstep/shard.h"
#include "lockstep/tensor.h"
#include "lockstep/work.h"

namespace lockstep {

class ShardedGradSync {
 public:
  // `parameters` and `gradients` pair up by position: the same shape, dtype
  // and device each; gradient names must be unique (ready() finds them by
  // name), parameter names too. Checks the gradients as GradSync does
  // (large gradients are reduced, and their parameters gathered, in their
  // own storage, as options.in_place_min_mb says; on a backend without
  // stream shares, NCCL, every gradient is packed), and that every rank
  // registered the same. Collective over `communicator`, which must outlive
  // this object. Throws UsageError naming the first parameter that does not
  // fit.
  ShardedGradSync(Communicator& communicator, std::vector<Tensor> parameters,
                  std::vector<Tensor> gradients, const GradSyncOptions& options = {});
  ShardedGradSync(const ShardedGradSync&) = delete;
  ShardedGradSync& operator=(const ShardedGradSync&) = delete;
  // Waits for the collectives in flight; never throws.
  ~ShardedGradSync();

  // What this rank owns of each parameter (fixed at construction).
  const ShardLayout& layout() const { return layout_; }

  // As GradSync::ready(). A bucket whose parameters are still being
  // gathered from the previous step is finished first.
  void ready(const Tensor& gradient);

  // Finishes every reduce-scatter and leaves, in each gradient, the average
  // over all ranks of the elements this rank owns (layout()); its other
  // elements are unspecified. Throws as GradSync::wait() does; after a
  // failure the step is abandoned alike.
  void wait();

  // After the optimizer updated the owned elements of every parameter:
  // starts one all-gather per bucket, the first layers' buckets first, that
  // brings every rank the new values of every parameter. Until the
  // parameter's wait_parameter() (or wait_parameters()) returns, neither
  // read nor write it. Throws UsageError when called twice without the
  // waits in between.
  void gather_parameters();
  // Blocks until `parameter`'s bucket is gathered and copied into its
  // parameters (on a GPU: queued on the legacy default stream). Throws
  // UsageError for an unknown parameter; rethrows a communication failure.
  void wait_parameter(const Tensor& parameter);
  // The same for every parameter.
  void wait_parameters();

  // The gradient names in each bucket, in launch order.
  std::vector<std::vector<std::string>> bucket_layout() const;

 private:
  struct Slot {
    Tensor parameter;
    Tensor gradient;
    std::size_t bucket = 0;
    std::size_t offset = 0;  // elements into the bucket's stream
    bool in_place = false;   // reduced and gathered in its own storage
    std::size_t packed = 0;  // packed: elements into the bucket's buffers
    bool ready = false;
  };
  // A bucket's stream is its in-place gradients (or parameters) back to
  // back, then its packed buffer. On a backend without stream shares
  // nothing is in place and the packed buffer is padded to share * size()
  // elements, for reduce_scatter and allgather of equal blocks.
  struct Bucket {
    std::vector<std::size_t> slots;
    std::size_t elements = 0;  // of the stream
    std::size_t share = 0;     // ceil(elements / size)
    Tensor storage;            // the packed buffers' bytes
    Tensor gradients;          // packed gradients, in the wire dtype
    Tensor parameters;         // packed parameters, in their dtype
    Tensor averaged;           // padded: this rank's share of the summed gradients
    // The backend averages (host buckets with in-place gradients, as
    // GradSync's), else it sums and unpacking multiplies by 1 / size.
    bool backend_averages = false;
    std::vector<Tensor> gradient_stream;
    std::vector<Tensor> parameter_stream;
    std::size_t waiting_for = 0;
    std::shared_ptr<Work> reduce;  // in flight since launch
    std::shared_ptr<Work> gather;  // in flight since gather_parameters()
  };

  void plan();
  void launch_full_buckets();
  // Waits for the bucket's all-gather, if any, and copies its parameters out.
  void finish_gather(Bucket& bucket);
  void finish_in_flight() noexcept;
  void start_step() noexcept;
  void abandon_step() noexcept;

  Communicator& communicator_;
  GradSyncOptions options_;
  Device device_;
  bool padded_ = false;      // the backend has no stream shares
  std::vector<Slot> slots_;  // registration order
  std::unordered_map<std::string, std::size_t> slot_by_gradient_;
  std::unordered_map<std::string, std::size_t> slot_by_parameter_;
  std::vector<Bucket> buckets_;  // launch order
  std::size_t next_launch_ = 0;
  bool gathering_ = false;  // gather_parameters() started all-gathers not all waited for
  ShardLayout layout_;
};

}  // namespace lockstep
