#include "lockstep/error.h"

#include <string>

#include <fmt/format.h>

#include "lockstep/hdf5_check.h"
#include "lockstep/mpi_check.h"

namespace lockstep::detail {

std::string format_call_failure(std::string_view library, int code,
                                std::string_view library_message, std::string_view call,
                                const char* file, int line) {
  return fmt::format("{}:{}: {} failed: {} ({} error {})", file, line, call, library_message,
                     library, code);
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  std::string message = "unknown MPI error";
  // MPI_Error_string may be called before MPI_Init and after MPI_Finalize.
  if (MPI_Error_string(code, text, &length) == MPI_SUCCESS)
    message.assign(text, static_cast<std::size_t>(length));
  throw BackendError("MPI", code, format_call_failure("MPI", code, message, call, file, line));
}

namespace {
// Collects the innermost-first descriptions of HDF5's error stack.
herr_t collect_hdf5_error(unsigned depth, const H5E_error2_t* entry, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (depth > 0) text->append("; ");
  text->append(entry->func_name != nullptr ? entry->func_name : "?");
  text->append(": ");
  text->append(entry->desc != nullptr ? entry->desc : "no description");
  return 0;
}
}  // namespace

void throw_hdf5_error(long long code, const char* call, const char* file, int line) {
  std::string message;
  const hid_t stack = H5Eget_current_stack();
  if (stack >= 0) {
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, collect_hdf5_error, &message);
    H5Eclose_stack(stack);
  }
  if (message.empty()) message = "no details on the HDF5 error stack";
  throw BackendError(
      "HDF5", static_cast<int>(code),
      format_call_failure("HDF5", static_cast<int>(code), message, call, file, line));
}

}  // namespace lockstep::detail
