// What GradSync and ShardedGradSync share: the checks of a registration and
// the cut of the gradients into buckets.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "lockstep/communicator.h"
#include "lockstep/grad_sync.h"
#include "lockstep/tensor.h"

namespace lockstep::detail {

// The dtype a gradient of `dtype` travels in.
DType wire_dtype_for(DType dtype, WireDType wire);

// Checks `options` and `gradients` (non-empty or not): one device for all,
// reduced by the communicator's backend, floating dtypes, unique names; then
// that every rank registered the same names, shapes and dtypes in the same
// order, with `extra` (one line, e.g. the mode) alike everywhere. `who`
// starts every message ("GradSync"). Collective over `communicator`.
// Returns the gradients' device (the CPU when there are none). Throws
// UsageError.
Device check_registration(Communicator& communicator, const std::vector<Tensor>& gradients,
                          const GradSyncOptions& options, std::string_view who,
                          std::string_view extra);

// The gradients of one bucket, by their index in `gradients`, in the order
// backward produces them (the reverse of registration).
struct PlannedBucket {
  std::vector<std::size_t> members;
};

// Walks `gradients` backwards, filling buckets of one dtype each up to
// options.first_bucket_mb (the first) or options.bucket_mb (the rest); every
// bucket holds at least one gradient, even an oversized one. Buckets come
// in launch order.
std::vector<PlannedBucket> plan_buckets(const std::vector<Tensor>& gradients,
                                        const GradSyncOptions& options);

}  // namespace lockstep::detail
