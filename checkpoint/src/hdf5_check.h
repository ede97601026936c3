// Checked calls into HDF5. HDF5 signals failure with a negative return value
// and leaves the details on its error stack; the macro turns both into a
// BackendError and clears the stack. Internal to the checkpoint layer, the
// only one that links HDF5.
#pragma once

#include <hdf5.h>

#include "lockstep/error.h"

namespace lockstep::detail {
[[noreturn]] void throw_hdf5_error(long long code, const char* call, const char* file, int line);
}  // namespace lockstep::detail

// Evaluates to the call's (non-negative) result: hid_t id = LOCKSTEP_CHECK_HDF5(H5Fopen(...));
#define LOCKSTEP_CHECK_HDF5(call)                                                                 \
  ([&]() {                                                                                        \
    auto lockstep_rc_ = (call);                                                                   \
    if (lockstep_rc_ < 0) {                                                                       \
      ::lockstep::detail::throw_hdf5_error(static_cast<long long>(lockstep_rc_), #call, __FILE__, \
                                           __LINE__);                                             \
    }                                                                                             \
    return lockstep_rc_;                                                                          \
  }())
