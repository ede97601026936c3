// Checked calls into MPI: LOCKSTEP_CHECK_MPI(MPI_Allreduce(...)) throws a
// BackendError carrying file, line, the call text and MPI's error string.
#pragma once

#include <mpi.h>

#include "lockstep/error.h"

namespace lockstep::detail {
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);
}  // namespace lockstep::detail

#define LOCKSTEP_CHECK_MPI(call)                                                    \
  do {                                                                              \
    const int lockstep_rc_ = (call);                                                \
    if (lockstep_rc_ != MPI_SUCCESS) {                                              \
      ::lockstep::detail::throw_mpi_error(lockstep_rc_, #call, __FILE__, __LINE__); \
    }                                                                               \
  } while (0)
