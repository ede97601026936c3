#include "reduce_ops.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "../src/half.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"

namespace lockstep::detail {

namespace {

struct Sum {
  float operator()(float a, float b) const { return a + b; }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};

// MPI calls this with `in` and `inout` holding `*count` 2-byte elements:
// inout[i] = combine(in[i], inout[i]), in float.
template <float (*ToFloat)(std::uint16_t), std::uint16_t (*FromFloat)(float), class Combine>
void reduce_half(void* in, void* inout, int* count, MPI_Datatype* /*datatype*/) {
  const auto* source = static_cast<const std::uint16_t*>(in);
  auto* target = static_cast<std::uint16_t*>(inout);
  const Combine combine;
  for (int i = 0; i < *count; ++i) {
    target[i] = FromFloat(combine(ToFloat(source[i]), ToFloat(target[i])));
  }
}

MPI_Op create_op(MPI_User_function* function) {
  MPI_Op op = MPI_OP_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Op_create(function, /*commute=*/1, &op));
  return op;
}

std::size_t op_index(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return 0;
    case ReduceOp::kMax:
      return 1;
    case ReduceOp::kMin:
      return 2;
  }
  return 0;
}

}  // namespace

MpiReduceOps::MpiReduceOps() {
  LOCKSTEP_CHECK_MPI(MPI_Type_contiguous(2, MPI_BYTE, &half_type_));
  LOCKSTEP_CHECK_MPI(MPI_Type_commit(&half_type_));
  half_ops_[0] = {create_op(reduce_half<f16_to_float, float_to_f16, Sum>),
                  create_op(reduce_half<f16_to_float, float_to_f16, Max>),
                  create_op(reduce_half<f16_to_float, float_to_f16, Min>)};
  half_ops_[1] = {create_op(reduce_half<bf16_to_float, float_to_bf16, Sum>),
                  create_op(reduce_half<bf16_to_float, float_to_bf16, Max>),
                  create_op(reduce_half<bf16_to_float, float_to_bf16, Min>)};
}

MpiReduceOps::~MpiReduceOps() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized != 0) return;
  for (auto& ops : half_ops_) {
    for (MPI_Op& op : ops) {
      if (op != MPI_OP_NULL) MPI_Op_free(&op);
    }
  }
  if (half_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&half_type_);
}

MPI_Datatype MpiReduceOps::datatype(DType dtype) const {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kU8:
      return MPI_UINT8_T;
    case DType::kF16:
    case DType::kBF16:
      return half_type_;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op MpiReduceOps::op(DType dtype, ReduceOp op) const {
  if (dtype == DType::kF16) return half_ops_[0][op_index(op)];
  if (dtype == DType::kBF16) return half_ops_[1][op_index(op)];
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

}  // namespace lockstep::detail
