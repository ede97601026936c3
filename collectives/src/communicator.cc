#include "lockstep/communicator.h"

#include <cmath>

#include "../mpi/communicator.h"
#include "group_work.h"
#include "lockstep/build_config.h"
#include "lockstep/knobs.h"
#include "lockstep/runtime.h"
#include "unsupported.h"
#if LOCKSTEP_HAVE_NCCL
#include "../nccl/communicator.h"
#endif

namespace lockstep {

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

std::shared_ptr<Work> Communicator::allreduce_coalesced_async(std::vector<Tensor> tensors,
                                                              const AllreduceOptions& options) {
  detail::check_coalesced(tensors, "allreduce_coalesced_async");
  std::vector<std::shared_ptr<Work>> works;
  works.reserve(tensors.size());
  for (Tensor& tensor : tensors) works.push_back(allreduce_async(std::move(tensor), options));
  return std::make_shared<detail::GroupWork>(std::move(works));
}

std::shared_ptr<Work> Communicator::reduce_scatter_stream_async(std::vector<Tensor> /*tensors*/,
                                                                const ReduceScatterOptions&) {
  detail::throw_unsupported(backend_name(),
                            "reduce_scatter_stream_async (use reduce_scatter_async on a buffer "
                            "padded to a multiple of the number of ranks)");
}

std::shared_ptr<Work> Communicator::allgather_stream_async(std::vector<Tensor> /*tensors*/,
                                                           const AllgatherOptions&) {
  detail::throw_unsupported(backend_name(),
                            "allgather_stream_async (use allgather_async on a buffer padded to a "
                            "multiple of the number of ranks)");
}

CommunicatorOptions communicator_options(const Runtime& runtime) {
  CommunicatorOptions options;
  options.timeout = CollectiveTimeout(runtime.config().get(knobs::collective_timeout));
  const double segment_mib = runtime.config().get(knobs::mpi_segment_mb);
  options.segment_bytes = static_cast<std::size_t>(std::llround(segment_mib * 1024 * 1024));
  return options;
}

std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, Device device,
                                                const CommunicatorOptions& options) {
  if (device.is_cpu()) return std::make_unique<detail::MpiCommunicator>(comm, options);
#if LOCKSTEP_HAVE_NCCL
  return std::make_unique<detail::NcclCommunicator>(comm, device, options);
#else
  detail::throw_unsupported("nccl", "this build: lockstep was built without NCCL, so tensors on " +
                                        device.str() + " cannot be communicated");
#endif
}

std::unique_ptr<Communicator> make_communicator(const Runtime& runtime) {
  return make_communicator(runtime.comm(), runtime.device(), communicator_options(runtime));
}

}  // namespace lockstep
