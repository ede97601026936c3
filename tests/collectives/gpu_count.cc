// Prints how many GPUs the CUDA runtime lets this process use (0 without a
// driver or a device), for test scripts that skip without enough of them.
#include <cuda_runtime_api.h>

#include <cstdio>

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  std::printf("%d\n", count);
  return 0;
}
