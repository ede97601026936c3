// GradSync: averages gradients across ranks while the backward pass is still
// running. Gradients are packed into buckets in reverse registration order
// (the order backward usually produces them); a bucket's all-reduce starts as
// soon as its last gradient is ready and every earlier bucket has started, so
// that every rank starts the same buckets in the same order whatever order
// its gradients arrive in.
//
// Gradients live either in host memory (the communicator is the mpi backend)
// or all on one GPU (the nccl backend). On a GPU, GradSync queues its copies,
// casts and divisions on the legacy default stream: ready() must come after
// the work that produced the gradient was queued there, and the averages
// that wait() leaves are ready for work queued there after it returns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lockstep/communicator.h"
#include "lockstep/tensor.h"
#include "lockstep/work.h"

namespace lockstep {

// The dtype gradients travel in. kNone keeps each gradient's own dtype;
// kBF16 and kF16 halve the bytes of f32 gradients (f64 ones too), and the
// sum is still accumulated in float.
enum class WireDType : std::uint8_t { kNone, kBF16, kF16 };

struct GradSyncOptions {
  // Size of every bucket but the first, in MiB.
  double bucket_mb = 25;
  // The first bucket holds the last layers' gradients, which backward
  // produces first; keeping it small starts communication early.
  double first_bucket_mb = 1;
  WireDType wire_dtype = WireDType::kNone;
  // Gradients of at least this many MiB that already have the wire dtype are
  // all-reduced in their own storage rather than copied into their bucket's
  // buffer and back: that saves two passes over their bytes and their copy
  // in memory. Smaller ones are packed, which saves a collective each.
  double in_place_min_mb = 0.25;
  // Per bucket all-reduce; zero means the communicator's default.
  CollectiveTimeout timeout{0};
};

class GradSync {
 public:
  // Registers `gradients` (named tensors of a floating dtype, all in host
  // memory or all on one GPU; the names must be unique) and checks that
  // every rank registered the same names, shapes and dtypes in the same
  // order. Collective over `communicator`, which must outlive this object
  // and reduce the gradients' memory (mpi for host, nccl for GPU
  // gradients). Throws UsageError naming the first differing parameter and
  // the ranks on each side when the ranks disagree (on every rank, within
  // the time of two small exchanges), or naming the gradient when one is
  // not usable: another device than the first gradient's, a GPU gradient
  // in a build without CUDA, a communicator for the other kind of memory.
  GradSync(Communicator& communicator, std::vector<Tensor> gradients,
           const GradSyncOptions& options = {});
  // Holds buffers that in-flight all-reduces write: neither copyable nor
  // movable.
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;
  // Waits for the all-reduces still in flight (their buffers die here);
  // never throws.
  ~GradSync();

  // The gradient named like `gradient` (the same storage as registered)
  // holds its final local value for this step; may start bucket
  // all-reduces. From here until wait() returns, GradSync owns the
  // gradient's storage (large gradients are reduced in place): neither read
  // nor write it. On a GPU, the work that produced the gradient must already
  // be queued on the legacy default stream (it need not have run). Throws
  // UsageError for an unknown gradient or one already marked in this step.
  // Call ready() and wait() from one thread. When starting an all-reduce
  // (or, on a GPU, packing) fails, the step is abandoned as in wait().
  void ready(const Tensor& gradient);

  // Finishes every bucket and leaves the average over all ranks in every
  // registered gradient, then starts a new step. Host gradients hold it when
  // wait() returns; on a GPU the last copies and divisions are still queued
  // on the legacy default stream, so work queued there (and a synchronous
  // cudaMemcpy) sees the averages, while another stream must first wait for
  // that one. The averages are the same bits as on the host for the same
  // sums: sum, then divide by the number of ranks. Throws UsageError naming
  // the first gradient that was not marked ready (the step stays open: mark
  // it ready and call wait() again), and rethrows a communication failure.
  // After a failure the whole step is abandoned: every all-reduce still in
  // flight is waited for, every bucket and gradient starts a new step (mark
  // them all ready again), and the gradients' values are unspecified.
  void wait();

  // The names in each bucket, in launch order (for tests and logs).
  std::vector<std::vector<std::string>> bucket_layout() const;

 private:
  struct Slot {
    Tensor gradient;
    std::size_t bucket = 0;
    bool in_place = false;   // all-reduced in its own storage, averaged there
    std::size_t offset = 0;  // packed: elements into the bucket's buffer
    bool ready = false;
  };
  struct Bucket {
    Tensor buffer;  // wire dtype, the packed gradients back to back; may be empty
    std::vector<std::size_t> slots;
    std::size_t waiting_for = 0;  // gradients not yet ready in this step
    // The buffer holds averages before unpacking (the backend averaged it
    // on the host; on a GPU, wait() divides the sum), else the sum, divided
    // while unpacking.
    bool buffer_averaged = false;
    std::vector<std::shared_ptr<Work>> works;  // in flight since launch
    // For the timeline (0 when it records nothing): when the bucket's first
    // gradient was ready in this step, and when it was launched.
    std::int64_t first_ready_ns = 0;
    std::int64_t launched_ns = 0;
  };

  void plan_buckets();
  void launch_full_buckets();
  // Records bucket `index`'s spans of this step in the timeline (when it
  // records), once its all-reduce is done.
  void trace_bucket(std::size_t index);
  // GPU buckets with in-place gradients: divides their sums by the size.
  void divide_summed(Bucket& bucket);
  void finish_in_flight() noexcept;
  // Every slot not ready, every bucket waiting for all its gradients.
  void start_step() noexcept;
  // After a failure part-way through a step: waits for what is in flight,
  // then starts a new step, so that no bucket is left half-way.
  void abandon_step() noexcept;

  Communicator& communicator_;
  GradSyncOptions options_;
  Device device_;            // of every gradient
  std::vector<Slot> slots_;  // registration order
  std::unordered_map<std::string, std::size_t> slot_by_name_;
  std::vector<Bucket> buckets_;  // launch order
  std::size_t next_launch_ = 0;  // first bucket not yet launched in this step
};

}  // namespace lockstep
