#include "cuda_probe.h"

#include <cuda_runtime.h>

namespace lockstep::detail {

namespace {
__global__ void write_marker(int* out) { *out = 42; }
}  // namespace

std::string probe_current_device() {
  int* marker = nullptr;
  if (cudaError_t rc = cudaMalloc(&marker, sizeof(int)); rc != cudaSuccess) {
    return cudaGetErrorString(rc);
  }
  write_marker<<<1, 1>>>(marker);
  cudaError_t rc = cudaGetLastError();
  if (rc == cudaSuccess) rc = cudaDeviceSynchronize();
  int value = 0;
  if (rc == cudaSuccess) rc = cudaMemcpy(&value, marker, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(marker);
  if (rc != cudaSuccess) return cudaGetErrorString(rc);
  return value == 42 ? std::string() : std::string("the probe kernel wrote a wrong value");
}

}  // namespace lockstep::detail
