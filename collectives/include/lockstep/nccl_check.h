// Checked calls into NCCL. Only available when lockstep was built with NCCL
// (LOCKSTEP_HAVE_NCCL is 1); the collectives layer is the one that links it.
#pragma once

#include "lockstep/build_config.h"
#include "lockstep/error.h"

#if LOCKSTEP_HAVE_NCCL
#include <nccl.h>

namespace lockstep::detail {
[[noreturn]] void throw_nccl_error(ncclResult_t code, const char* call, const char* file, int line);
}  // namespace lockstep::detail

// ncclInProgress is not a failure: non-blocking communicators return it while
// an operation is still being set up.
#define LOCKSTEP_CHECK_NCCL(call)                                                    \
  do {                                                                               \
    const ncclResult_t lockstep_rc_ = (call);                                        \
    if (lockstep_rc_ != ncclSuccess && lockstep_rc_ != ncclInProgress) {             \
      ::lockstep::detail::throw_nccl_error(lockstep_rc_, #call, __FILE__, __LINE__); \
    }                                                                                \
  } while (0)
#endif  // LOCKSTEP_HAVE_NCCL
