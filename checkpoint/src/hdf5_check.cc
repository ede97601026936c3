// The error reporting of LOCKSTEP_CHECK_HDF5.
#include "hdf5_check.h"

#include <string>

namespace lockstep::detail {

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
