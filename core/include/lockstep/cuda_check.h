// Checked calls into the CUDA runtime. Only available when lockstep was
// built with CUDA (LOCKSTEP_HAVE_CUDA is 1). The NCCL checks belong to the
// collectives layer: lockstep/nccl_check.h.
#pragma once

#include "lockstep/build_config.h"
#include "lockstep/error.h"

#if LOCKSTEP_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace lockstep::detail {
[[noreturn]] void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line);
}  // namespace lockstep::detail

#define LOCKSTEP_CHECK_CUDA(call)                                                    \
  do {                                                                               \
    const cudaError_t lockstep_rc_ = (call);                                         \
    if (lockstep_rc_ != cudaSuccess) {                                               \
      ::lockstep::detail::throw_cuda_error(lockstep_rc_, #call, __FILE__, __LINE__); \
    }                                                                                \
  } while (0)
#endif  // LOCKSTEP_HAVE_CUDA
