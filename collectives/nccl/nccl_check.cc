// The error reporting of LOCKSTEP_CHECK_NCCL.
#include "lockstep/nccl_check.h"

#include <string>

namespace lockstep::detail {

void throw_nccl_error(ncclResult_t code, const char* call, const char* file, int line) {
  const int number = static_cast<int>(code);
  std::string message = ncclGetErrorString(code);
  // The last error of this thread often says which argument was wrong.
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  throw BackendError("NCCL", number,
                     format_call_failure("NCCL", number, message, call, file, line));
}

}  // namespace lockstep::detail
