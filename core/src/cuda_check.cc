// Built only with CUDA: the error reporting of LOCKSTEP_CHECK_CUDA/NCCL.
#include "lockstep/cuda_check.h"

namespace lockstep::detail {

void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  const int number = static_cast<int>(code);
  const std::string message = std::string(cudaGetErrorName(code)) + ": " + cudaGetErrorString(code);
  throw BackendError("CUDA", number,
                     format_call_failure("CUDA", number, message, call, file, line));
}

#if LOCKSTEP_HAVE_NCCL
void throw_nccl_error(ncclResult_t code, const char* call, const char* file, int line) {
  const int number = static_cast<int>(code);
  std::string message = ncclGetErrorString(code);
  // The last error of this thread often says which argument was wrong.
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  throw BackendError("NCCL", number,
                     format_call_failure("NCCL", number, message, call, file, line));
}
#endif

}  // namespace lockstep::detail
