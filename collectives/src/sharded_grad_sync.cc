#include "lockstep/sharded_grad_sync.h"

#include <algorithm>

#include <fmt/format.h>

#include "bucket_plan.h"
#include "device_element_ops.h"
#include "lockstep/log.h"

namespace lockstep {

namespace {

// The part of [begin, end) that lies in [low, high), as a possibly empty
// range.
struct Range {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const { return end - begin; }
};

Range intersect(std::size_t begin, std::size_t end, std::size_t low, std::size_t high) {
  const std::size_t first = std::max(begin, low);
  const std::size_t last = std::min(end, high);
  return first < last ? Range{first, last} : Range{first, first};
}

char* element_at(Tensor& tensor, std::size_t index) {
  return static_cast<char*>(tensor.data()) + index * dtype_size(tensor.dtype());
}

}  // namespace

ShardedGradSync::ShardedGradSync(Communicator& communicator, std::vector<Tensor> parameters,
                                 std::vector<Tensor> gradients, const GradSyncOptions& options)
    : communicator_(communicator), options_(options) {
  if (parameters.size() != gradients.size()) {
    throw UsageError(fmt::format(
        "ShardedGradSync: {} parameters but {} gradients; pass one gradient per parameter, in "
        "the same order",
        parameters.size(), gradients.size()));
  }
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const Tensor& parameter = parameters[i];
    const Tensor& gradient = gradients[i];
    if (parameter.shape() != gradient.shape() || parameter.dtype() != gradient.dtype() ||
        parameter.device() != gradient.device()) {
      throw UsageError(fmt::format(
          "ShardedGradSync: parameter '{}' and its gradient '{}' differ; each pair must have one "
          "shape, dtype and device",
          parameter.describe(), gradient.describe()));
    }
    if (!slot_by_parameter_.emplace(parameter.name(), i).second) {
      throw UsageError(
          fmt::format("ShardedGradSync: two parameters are named '{}'; names must be unique",
                      parameter.name()));
    }
  }
  device_ = detail::check_registration(communicator_, gradients, options_, "ShardedGradSync",
                                       "sharded (reduce-scatter and all-gather)");
  for (std::size_t i = 0; i < gradients.size(); ++i) {
    slot_by_gradient_.emplace(gradients[i].name(), i);
    slots_.push_back(Slot{std::move(parameters[i]), std::move(gradients[i])});
  }
  plan();
}

ShardedGradSync::~ShardedGradSync() { finish_in_flight(); }

void ShardedGradSync::plan() {
  const auto size = static_cast<std::size_t>(communicator_.size());
  const auto rank = static_cast<std::size_t>(communicator_.rank());
  padded_ = !communicator_.has_stream_shares();
  std::vector<Tensor> gradients;
  for (const Slot& slot : slots_) gradients.push_back(slot.gradient);
  for (const detail::PlannedBucket& planned : detail::plan_buckets(gradients, options_)) {
    const DType dtype = slots_[planned.members.front()].gradient.dtype();
    const DType wire = detail::wire_dtype_for(dtype, options_.wire_dtype);
    Bucket bucket;
    bucket.slots = planned.members;
    // The stream: in-place gradients first, then the packed buffer. The
    // same dtypes and shapes on every rank give the same choice everywhere.
    std::size_t packed = 0;
    for (const std::size_t index : bucket.slots) {
      Slot& slot = slots_[index];
      slot.bucket = buckets_.size();
      slot.in_place =
          !padded_ && wire == dtype &&
          static_cast<double>(slot.gradient.nbytes()) >= options_.in_place_min_mb * 1024.0 * 1024.0;
      if (slot.in_place) {
        slot.offset = bucket.elements;
        bucket.elements += static_cast<std::size_t>(slot.gradient.numel());
        bucket.gradient_stream.push_back(slot.gradient);
        bucket.parameter_stream.push_back(slot.parameter);
      } else {
        slot.packed = packed;
        packed += static_cast<std::size_t>(slot.gradient.numel());
      }
    }
    for (const std::size_t index : bucket.slots) {
      Slot& slot = slots_[index];
      if (!slot.in_place) slot.offset = bucket.elements + slot.packed;
    }
    bucket.elements += packed;
    bucket.share = (bucket.elements + size - 1) / size;
    const std::size_t buffer = padded_ ? bucket.share * size : packed;
    const auto elements = static_cast<std::int64_t>(buffer);
    const std::string name = fmt::format("sharded_grad_sync/bucket{}", buckets_.size());
    bucket.storage = Tensor::allocate(
        name, DType::kU8,
        {elements * static_cast<std::int64_t>(std::max(dtype_size(wire), dtype_size(dtype)))},
        device_);
    bucket.gradients = bucket.storage.view(name + "/gradients", 0, wire, {elements});
    bucket.parameters = bucket.storage.view(name + "/parameters", 0, dtype, {elements});
    if (padded_) {
      bucket.averaged = Tensor::allocate(name + "/share", wire,
                                         {static_cast<std::int64_t>(bucket.share)}, device_);
    } else if (packed > 0) {
      bucket.gradient_stream.push_back(bucket.gradients);
      bucket.parameter_stream.push_back(bucket.parameters);
    }
    // GradSync's rule, so that the averages are its bits: a host bucket
    // with gradients in place is averaged by the backend, chunk by chunk
    // while in cache.
    bucket.backend_averages = device_.is_cpu() && packed < bucket.elements;
    bucket.waiting_for = bucket.slots.size();
    buckets_.push_back(std::move(bucket));
  }
  // What this rank owns: its share of each bucket's stream, cut at the
  // parameters' boundaries.
  layout_.rank = static_cast<int>(rank);
  layout_.size = static_cast<int>(size);
  for (const Slot& slot : slots_) {
    const Bucket& bucket = buckets_[slot.bucket];
    const auto numel = static_cast<std::size_t>(slot.gradient.numel());
    const Range owned = intersect(slot.offset, slot.offset + numel, rank * bucket.share,
                                  std::min((rank + 1) * bucket.share, bucket.elements));
    const auto count = static_cast<std::int64_t>(owned.size());
    layout_.append({.name = slot.parameter.name(),
                    .shape = slot.parameter.shape(),
                    .dtype = slot.parameter.dtype(),
                    .begin = count > 0 ? static_cast<std::int64_t>(owned.begin - slot.offset) : 0,
                    .count = count});
  }
}

void ShardedGradSync::ready(const Tensor& gradient) {
  const auto found = slot_by_gradient_.find(gradient.name());
  if (found == slot_by_gradient_.end()) {
    throw UsageError(
        fmt::format("ShardedGradSync::ready: '{}' was not registered", gradient.name()));
  }
  Slot& slot = slots_[found->second];
  if (gradient.data() != slot.gradient.data()) {
    throw UsageError(fmt::format(
        "ShardedGradSync::ready: '{}' is not the tensor registered under that name (different "
        "storage)",
        gradient.name()));
  }
  if (slot.ready) {
    throw UsageError(fmt::format(
        "ShardedGradSync::ready: '{}' was marked ready twice in one step; call wait() before the "
        "next step",
        gradient.name()));
  }
  try {
    Bucket& bucket = buckets_[slot.bucket];
    // The bucket's storage still holds parameters on their way in.
    finish_gather(bucket);
    slot.ready = true;
    if (!slot.in_place) {
      detail::convert_scaled_on(device_, slot.gradient.data(), slot.gradient.dtype(),
                                element_at(bucket.gradients, slot.packed), bucket.gradients.dtype(),
                                static_cast<std::size_t>(slot.gradient.numel()), 1.0);
    }
    if (--bucket.waiting_for == 0) launch_full_buckets();
  } catch (...) {
    abandon_step();
    throw;
  }
}

void ShardedGradSync::launch_full_buckets() {
  // In bucket order on every rank, whatever order the gradients came in.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].waiting_for == 0) {
    Bucket& bucket = buckets_[next_launch_];
    const ReduceScatterOptions reduce{
        .op = bucket.backend_averages ? ReduceOp::kAvg : ReduceOp::kSum,
        .timeout = options_.timeout,
        .input_is_scratch = true};
    if (bucket.share > 0 && padded_) {
      bucket.reduce = communicator_.reduce_scatter_async(bucket.gradients, bucket.averaged, reduce);
    } else if (bucket.share > 0) {
      bucket.reduce = communicator_.reduce_scatter_stream_async(bucket.gradient_stream, reduce);
    }
    ++next_launch_;
  }
}

void ShardedGradSync::wait() {
  for (const Slot& slot : slots_) {
    if (!slot.ready) {
      throw UsageError(fmt::format(
          "ShardedGradSync::wait: '{}' was never marked ready in this step; call ready() for "
          "every registered gradient first",
          slot.gradient.name()));
    }
  }
  const double scale = 1.0 / communicator_.size();
  try {
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      Bucket& bucket = buckets_[b];
      if (bucket.reduce) bucket.reduce->wait();
      bucket.reduce.reset();
    }
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& slot = slots_[i];
      const ShardSlice& owned = layout_.slices[i];
      if (owned.count == 0) continue;
      Bucket& bucket = buckets_[slot.bucket];
      const auto begin = static_cast<std::size_t>(owned.begin);
      const auto count = static_cast<std::size_t>(owned.count);
      char* target = element_at(slot.gradient, begin);
      if (slot.in_place) {
        if (!bucket.backend_averages) {
          detail::divide_in_place_on(device_, target, slot.gradient.dtype(), count,
                                     communicator_.size());
        }
        continue;
      }
      // Unpacking multiplies a sum by 1 / ranks, as GradSync's does.
      const char* source =
          padded_ ? element_at(
                        bucket.averaged,
                        slot.offset + begin - static_cast<std::size_t>(layout_.rank) * bucket.share)
                  : element_at(bucket.gradients, slot.packed + begin);
      detail::convert_scaled_on(device_, source, bucket.gradients.dtype(), target,
                                slot.gradient.dtype(), count,
                                bucket.backend_averages ? 1.0 : scale);
    }
  } catch (...) {
    abandon_step();
    throw;
  }
  start_step();
}

void ShardedGradSync::gather_parameters() {
  if (gathering_) {
    throw UsageError(
        "ShardedGradSync::gather_parameters: the parameters of the previous call are still on "
        "their way; call wait_parameters() (or the next step's ready()) first");
  }
  const auto rank = static_cast<std::size_t>(layout_.rank);
  try {
    // The owned elements into their places in each bucket: rank r's share
    // of a bucket is block r of the all-gather.
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const ShardSlice& owned = layout_.slices[i];
      Slot& slot = slots_[i];
      if (owned.count == 0 || slot.in_place) continue;
      Bucket& bucket = buckets_[slot.bucket];
      detail::convert_scaled_on(
          device_, element_at(slot.parameter, static_cast<std::size_t>(owned.begin)),
          slot.parameter.dtype(),
          element_at(bucket.parameters, slot.packed + static_cast<std::size_t>(owned.begin)),
          bucket.parameters.dtype(), static_cast<std::size_t>(owned.count), 1.0);
    }
    gathering_ = true;
    // The first layers' parameters are the last bucket's: the next forward
    // needs them first.
    for (auto bucket = buckets_.rbegin(); bucket != buckets_.rend(); ++bucket) {
      if (bucket->share == 0) continue;
      if (!padded_) {
        bucket->gather =
            communicator_.allgather_stream_async(bucket->parameter_stream, {options_.timeout});
        continue;
      }
      const std::size_t bytes = bucket->share * dtype_size(bucket->parameters.dtype());
      Tensor mine = bucket->parameters.view(bucket->parameters.name() + "/mine", rank * bytes,
                                            bucket->parameters.dtype(),
                                            {static_cast<std::int64_t>(bucket->share)});
      bucket->gather =
          communicator_.allgather_async(std::move(mine), bucket->parameters, {options_.timeout});
    }
  } catch (...) {
    abandon_step();
    throw;
  }
}

void ShardedGradSync::finish_gather(Bucket& bucket) {
  if (!bucket.gather) return;
  const std::shared_ptr<Work> work = std::move(bucket.gather);
  bucket.gather.reset();
  work->wait();
  for (const std::size_t index : bucket.slots) {
    Slot& slot = slots_[index];
    if (slot.in_place) continue;  // gathered where it lives
    detail::convert_scaled_on(device_, element_at(bucket.parameters, slot.packed),
                              bucket.parameters.dtype(), slot.parameter.data(),
                              slot.parameter.dtype(),
                              static_cast<std::size_t>(slot.parameter.numel()), 1.0);
  }
  gathering_ = std::any_of(buckets_.begin(), buckets_.end(),
                           [](const Bucket& other) { return other.gather != nullptr; });
}

void ShardedGradSync::wait_parameter(const Tensor& parameter) {
  const auto found = slot_by_parameter_.find(parameter.name());
  if (found == slot_by_parameter_.end() ||
      slots_[found->second].parameter.data() != parameter.data()) {
    throw UsageError(fmt::format(
        "ShardedGradSync::wait_parameter: '{}' is not a registered parameter", parameter.name()));
  }
  try {
    finish_gather(buckets_[slots_[found->second].bucket]);
  } catch (...) {
    abandon_step();
    throw;
  }
}

void ShardedGradSync::wait_parameters() {
  try {
    // In the order they were started.
    for (auto bucket = buckets_.rbegin(); bucket != buckets_.rend(); ++bucket) {
      finish_gather(*bucket);
    }
  } catch (...) {
    abandon_step();
    throw;
  }
}

void ShardedGradSync::start_step() noexcept {
  for (Slot& slot : slots_) slot.ready = false;
  for (Bucket& bucket : buckets_) {
    bucket.reduce.reset();
    bucket.waiting_for = bucket.slots.size();
  }
  next_launch_ = 0;
}

void ShardedGradSync::abandon_step() noexcept {
  finish_in_flight();
  start_step();
}

void ShardedGradSync::finish_in_flight() noexcept {
  for (Bucket& bucket : buckets_) {
    for (std::shared_ptr<Work>* work : {&bucket.reduce, &bucket.gather}) {
      if (!*work) continue;
      try {
        (*work)->wait();
      } catch (const std::exception& error) {
        log::warn("ShardedGradSync: a collective failed while shutting down: {}", error.what());
      }
      work->reset();
    }
  }
  gathering_ = false;
}

std::vector<std::vector<std::string>> ShardedGradSync::bucket_layout() const {
  std::vector<std::vector<std::string>> layout;
  for (const Bucket& bucket : buckets_) {
    auto& names = layout.emplace_back();
    for (const std::size_t index : bucket.slots) names.push_back(slots_[index].gradient.name());
  }
  return layout;
}

}  // namespace lockstep
