#include "lockstep/shard.h"

#include <fmt/format.h>

namespace lockstep {

void ShardLayout::append(ShardSlice slice) {
  if (slice.count > 0) {
    local_elements = (local_elements + kSliceAlignment - 1) / kSliceAlignment * kSliceAlignment;
  }
  slice.local_offset = local_elements;
  local_elements += slice.count;
  slices.push_back(std::move(slice));
}

const ShardSlice& ShardLayout::slice(std::string_view name) const {
  for (const ShardSlice& slice : slices) {
    if (slice.name == name) return slice;
  }
  throw UsageError(fmt::format("ShardLayout: no parameter is named '{}'", name));
}

std::vector<ShardChunk> ShardLayout::chunks(const Tensor& owned) const {
  if (owned.numel() != local_elements) {
    throw UsageError(fmt::format(
        "ShardLayout::chunks: '{}' holds {} elements, but this rank owns {}; size it to "
        "local_elements",
        owned.describe(), owned.numel(), local_elements));
  }
  std::vector<ShardChunk> result;
  const std::size_t element = dtype_size(owned.dtype());
  for (const ShardSlice& slice : slices) {
    result.push_back(
        {.local = owned.view(slice.name, static_cast<std::size_t>(slice.local_offset) * element,
                             owned.dtype(), {slice.count}),
         .global_shape = slice.shape,
         .begin = slice.begin});
  }
  return result;
}

}  // namespace lockstep
