// Sharded state: which part of a global tensor a rank holds. ShardedGradSync
// describes what each rank owns of every parameter (ShardLayout); the
// Checkpointer saves and restores chunks (ShardChunk) at any world size.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/tensor.h"

namespace lockstep {

// This rank's part of a global tensor: `local` holds the elements
// [begin, begin + local.numel()) of the row-major tensor of `global_shape`,
// in that order. The chunk is named like the global tensor (local.name()).
// A chunk may be empty (a rank that owns nothing of the tensor).
struct ShardChunk {
  Tensor local;
  Shape global_shape;
  std::int64_t begin = 0;
};

// What this rank owns of one parameter: a contiguous run of its flattened
// elements (possibly empty), and where that run starts in a buffer that
// holds everything the rank owns, parameter after parameter.
struct ShardSlice {
  std::string name;  // the parameter's
  Shape shape;       // the parameter's, whole
  DType dtype = DType::kF32;
  std::int64_t begin = 0;         // first owned element
  std::int64_t count = 0;         // owned elements; 0 when none
  std::int64_t local_offset = 0;  // in the owned-elements buffer; see kSliceAlignment
};

// What this rank owns of every parameter: an optimizer sizes its state to
// local_elements (Adam's m and v hold only this rank's elements) and saves
// it with chunks(). Each non-empty slice starts at a multiple of
// kSliceAlignment elements of the owned buffer (4 KiB of f32), so that a
// checkpoint writes a chunk from where it lies with direct I/O; the gaps,
// less than kSliceAlignment elements per parameter, are unused.
struct ShardLayout {
  static constexpr std::int64_t kSliceAlignment = 1024;

  int rank = 0;
  int size = 1;
  std::vector<ShardSlice> slices;  // one per parameter, in registration order
  std::int64_t local_elements = 0;

  // Adds `slice` (its local_offset ignored) after the last one: sets its
  // local_offset, aligned when it is not empty, and grows local_elements.
  void append(ShardSlice slice);
  // The slice of parameter `name`; throws UsageError for an unknown name.
  const ShardSlice& slice(std::string_view name) const;
  // `owned` (local_elements elements, dtype of the parameters, e.g. Adam's
  // m) as one chunk per parameter, named like the parameter, viewing
  // `owned`'s storage. Throws UsageError when `owned` has another size.
  std::vector<ShardChunk> chunks(const Tensor& owned) const;
};

}  // namespace lockstep
