// Launch shapes for element-wise CUDA kernels that loop with the grid's
// stride: a bounded number of blocks covers any count. For .cu files only.
#pragma once

#include <cstddef>

namespace lockstep::cuda_grid {

constexpr int kThreads = 256;
constexpr std::size_t kMaxBlocks = 4096;  // the stride loop covers the rest

// Blocks of kThreads threads for `count` items (at least one).
inline unsigned blocks_for(std::size_t count) {
  const std::size_t wanted = (count + kThreads - 1) / kThreads;
  if (wanted == 0) return 1;
  return static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
}

// This thread's first item, and the step to its next one.
__device__ inline std::size_t first_index() {
  return blockIdx.x * std::size_t{blockDim.x} + threadIdx.x;
}
__device__ inline std::size_t stride() { return std::size_t{gridDim.x} * blockDim.x; }

}  // namespace lockstep::cuda_grid
