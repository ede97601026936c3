#include "bucket_plan.h"

#include <string>
#include <unordered_set>

#include <fmt/format.h>

#include "lockstep/build_config.h"
#include "registration_check.h"

namespace lockstep::detail {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

bool is_floating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kF16 ||
         dtype == DType::kBF16;
}

// The gradient's memory must be what the communicator reduces.
void check_device(const Communicator& communicator, const Tensor& first, const Tensor& gradient,
                  std::string_view who) {
  const Device device = first.device();
  if (gradient.device() != device) {
    throw UsageError(fmt::format(
        "{}: '{}' is in {} memory but '{}' is in {} memory; all gradients must be on one device",
        who, gradient.name(), gradient.device().str(), first.name(), device.str()));
  }
  if (device.is_cpu()) {
    if (communicator.backend_name() == "nccl") {
      throw UsageError(fmt::format(
          "{}: '{}' is in host memory but the communicator's backend is nccl, which reduces GPU "
          "memory; create the communicator for the CPU (the mpi backend)",
          who, gradient.name()));
    }
    return;
  }
#if LOCKSTEP_HAVE_CUDA
  if (communicator.backend_name() == "mpi") {
    throw UsageError(fmt::format(
        "{}: '{}' is in {} memory but the communicator's backend is mpi, which reduces host "
        "memory; create the communicator for the GPU (make_communicator(runtime) on a rank bound "
        "to a GPU gives the nccl backend)",
        who, gradient.name(), device.str()));
  }
#else
  throw UsageError(fmt::format(
      "{}: '{}' is in {} memory, but this lockstep was built without CUDA, so it packs host "
      "gradients only; rebuild with the CUDA toolkit (-DLOCKSTEP_CUDA=ON)",
      who, gradient.name(), device.str()));
#endif
}

}  // namespace

DType wire_dtype_for(DType dtype, WireDType wire) {
  const bool wide = dtype == DType::kF32 || dtype == DType::kF64;
  if (wide && wire == WireDType::kBF16) return DType::kBF16;
  if (wide && wire == WireDType::kF16) return DType::kF16;
  return dtype;
}

Device check_registration(Communicator& communicator, const std::vector<Tensor>& gradients,
                          const GradSyncOptions& options, std::string_view who,
                          std::string_view extra) {
  if (!(options.bucket_mb > 0) || !(options.first_bucket_mb > 0) ||
      !(options.in_place_min_mb >= 0)) {
    throw UsageError(fmt::format(
        "{}: bucket_mb ({}) and first_bucket_mb ({}) must be > 0, in_place_min_mb ({}) >= 0", who,
        options.bucket_mb, options.first_bucket_mb, options.in_place_min_mb));
  }
  std::unordered_set<std::string> names;
  std::vector<std::string> entries;
  if (!extra.empty()) entries.emplace_back(extra);
  for (const Tensor& gradient : gradients) {
    check_device(communicator, gradients.front(), gradient, who);
    if (!is_floating(gradient.dtype())) {
      throw UsageError(fmt::format("{}: '{}' has dtype {}; gradients must be f32, f64, f16 or bf16",
                                   who, gradient.name(), dtype_name(gradient.dtype())));
    }
    if (!names.insert(gradient.name()).second) {
      throw UsageError(fmt::format("{}: two gradients are named '{}'; names must be unique", who,
                                   gradient.name()));
    }
    entries.push_back(fmt::format("{} {}{}", gradient.name(), dtype_name(gradient.dtype()),
                                  shape_str(gradient.shape())));
  }
  check_same_on_every_rank(communicator, entries, std::string(who));
  return gradients.empty() ? Device::cpu() : gradients.front().device();
}

std::vector<PlannedBucket> plan_buckets(const std::vector<Tensor>& gradients,
                                        const GradSyncOptions& options) {
  std::vector<PlannedBucket> buckets;
  std::size_t index = gradients.size();
  while (index > 0) {
    const double limit_mb = buckets.empty() ? options.first_bucket_mb : options.bucket_mb;
    const auto limit = static_cast<std::size_t>(limit_mb * kMiB);
    const DType dtype = gradients[index - 1].dtype();
    PlannedBucket bucket;
    std::size_t bytes = 0;
    while (index > 0 && gradients[index - 1].dtype() == dtype &&
           (bucket.members.empty() || bytes + gradients[index - 1].nbytes() <= limit)) {
      bytes += gradients[index - 1].nbytes();
      bucket.members.push_back(index - 1);
      --index;
    }
    buckets.push_back(std::move(bucket));
  }
  return buckets;
}

}  // namespace lockstep::detail
