// The error reporting of LOCKSTEP_CHECK_MPI.
#include "lockstep/mpi_check.h"

#include <string>

namespace lockstep::detail {

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  std::string message = "unknown MPI error";
  // MPI_Error_string may be called before MPI_Init and after MPI_Finalize.
  if (MPI_Error_string(code, text, &length) == MPI_SUCCESS)
    message.assign(text, static_cast<std::size_t>(length));
  throw BackendError("MPI", code, format_call_failure("MPI", code, message, call, file, line));
}

}  // namespace lockstep::detail
