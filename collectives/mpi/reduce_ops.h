// MPI datatypes and reduction operators for lockstep dtypes. MPI has no
// 16-bit floating types, so f16 and bf16 travel as a 2-byte contiguous
// datatype and are reduced by user operators that accumulate in float.
#pragma once

#include <array>

#include <mpi.h>

#include "lockstep/communicator.h"
#include "lockstep/tensor.h"

namespace lockstep::detail {

class MpiReduceOps {
 public:
  // Creates the 2-byte datatype and the f16/bf16 operators. Needs MPI.
  MpiReduceOps();
  // Owns MPI handles: not copyable (they would be freed twice), not movable
  // (nothing needs to move it; communicators hold it by value).
  MpiReduceOps(const MpiReduceOps&) = delete;
  MpiReduceOps& operator=(const MpiReduceOps&) = delete;
  // Frees the handles unless MPI is already finalized; never throws.
  ~MpiReduceOps();

  // The datatype whose elements are one element of `dtype`.
  MPI_Datatype datatype(DType dtype) const;
  // The operator that reduces `dtype` with `op`; kAvg maps to the sum (the
  // caller divides afterwards).
  MPI_Op op(DType dtype, ReduceOp op) const;

 private:
  MPI_Datatype half_type_ = MPI_DATATYPE_NULL;
  // [f16, bf16] x [sum, max, min]
  std::array<std::array<MPI_Op, 3>, 2> half_ops_{};
};

}  // namespace lockstep::detail
