// Built only with CUDA: the error reporting of LOCKSTEP_CHECK_CUDA.
#include "lockstep/cuda_check.h"

namespace lockstep::detail {

void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  const int number = static_cast<int>(code);
  const std::string message = std::string(cudaGetErrorName(code)) + ": " + cudaGetErrorString(code);
  throw BackendError("CUDA", number,
                     format_call_failure("CUDA", number, message, call, file, line));
}

}  // namespace lockstep::detail
