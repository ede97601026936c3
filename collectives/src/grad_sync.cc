#include "lockstep/grad_sync.h"

#include <cmath>

#include <fmt/format.h>

#include "bucket_plan.h"
#include "device_element_ops.h"
#include "lockstep/build_config.h"
#include "lockstep/log.h"
#include "lockstep/trace.h"

namespace lockstep {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

GradSync::GradSync(Communicator& communicator, std::vector<Tensor> gradients,
                   const GradSyncOptions& options)
    : communicator_(communicator), options_(options) {
  device_ = detail::check_registration(communicator_, gradients, options_, "GradSync", "");
  for (Tensor& gradient : gradients) {
    slot_by_name_.emplace(gradient.name(), slots_.size());
    slots_.push_back(Slot{std::move(gradient)});
  }
  plan_buckets();
}

GradSync::~GradSync() { finish_in_flight(); }

void GradSync::plan_buckets() {
  std::vector<Tensor> gradients;
  for (const Slot& slot : slots_) gradients.push_back(slot.gradient);
  for (const detail::PlannedBucket& planned : detail::plan_buckets(gradients, options_)) {
    const DType own_dtype = slots_[planned.members.front()].gradient.dtype();
    const DType wire_dtype = detail::wire_dtype_for(own_dtype, options_.wire_dtype);
    Bucket bucket;
    std::size_t elements = 0;  // packed into the buffer
    for (const std::size_t index : planned.members) {
      Slot& slot = slots_[index];
      slot.bucket = buckets_.size();
      // Same dtypes and shapes on every rank, so the same choice everywhere.
      slot.in_place = wire_dtype == own_dtype && static_cast<double>(slot.gradient.nbytes()) >=
                                                     options_.in_place_min_mb * kMiB;
      if (!slot.in_place) {
        slot.offset = elements;
        elements += static_cast<std::size_t>(slot.gradient.numel());
      }
      bucket.slots.push_back(index);
    }
    bucket.buffer = Tensor::allocate(fmt::format("grad_sync/bucket{}", buckets_.size()), wire_dtype,
                                     {static_cast<std::int64_t>(elements)}, device_);
    bucket.waiting_for = bucket.slots.size();
    buckets_.push_back(std::move(bucket));
  }
}

void GradSync::ready(const Tensor& gradient) {
  const auto found = slot_by_name_.find(gradient.name());
  if (found == slot_by_name_.end()) {
    throw UsageError(fmt::format("GradSync::ready: '{}' was not registered", gradient.name()));
  }
  Slot& slot = slots_[found->second];
  if (gradient.data() != slot.gradient.data()) {
    throw UsageError(
        fmt::format("GradSync::ready: '{}' is not the tensor registered under that "
                    "name (different storage)",
                    gradient.name()));
  }
  if (slot.ready) {
    throw UsageError(
        fmt::format("GradSync::ready: '{}' was marked ready twice in one step; call "
                    "wait() before the next step",
                    gradient.name()));
  }
  try {
    slot.ready = true;
    Bucket& bucket = buckets_[slot.bucket];
    if (!slot.in_place) {
      const std::size_t wire_element = dtype_size(bucket.buffer.dtype());
      detail::convert_scaled_on(
          device_, slot.gradient.data(), slot.gradient.dtype(),
          static_cast<char*>(bucket.buffer.data()) + slot.offset * wire_element,
          bucket.buffer.dtype(), static_cast<std::size_t>(slot.gradient.numel()), 1.0);
    }
    if (bucket.first_ready_ns == 0 && trace::enabled()) bucket.first_ready_ns = trace::now_ns();
    if (--bucket.waiting_for == 0) launch_full_buckets();
  } catch (...) {
    abandon_step();
    throw;
  }
}

void GradSync::launch_full_buckets() {
  // Strictly in bucket order, so that every rank issues the same sequence
  // of all-reduces whatever order its gradients became ready in.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].waiting_for == 0) {
    Bucket& bucket = buckets_[next_launch_];
    // One all-reduce for the whole bucket: its in-place gradients and its
    // packed buffer travel as one stream, averaged by the backend piece by
    // piece while the data is still in cache. A buffer alone in its bucket
    // (a 16-bit wire dtype) is summed and averaged in float while unpacking
    // it in wait(), which rounds once instead of twice.
    std::vector<Tensor> tensors;
    for (std::size_t index : bucket.slots) {
      if (slots_[index].in_place) tensors.push_back(slots_[index].gradient);
    }
    bucket.buffer_averaged = !tensors.empty();
    if (bucket.buffer.numel() > 0) tensors.push_back(bucket.buffer);
    // On a GPU the bucket is summed and wait() divides it: NCCL's average
    // multiplies every rank's values by 1/n before adding, which rounds
    // differently from the host's sum divided by n.
    const bool backend_averages = bucket.buffer_averaged && device_.is_cpu();
    const AllreduceOptions options{.op = backend_averages ? ReduceOp::kAvg : ReduceOp::kSum,
                                   .timeout = options_.timeout};
    if (tensors.size() == 1) {
      bucket.works.push_back(communicator_.allreduce_async(std::move(tensors.front()), options));
    } else if (!tensors.empty()) {
      bucket.works.push_back(communicator_.allreduce_coalesced_async(std::move(tensors), options));
    }
    if (bucket.first_ready_ns != 0) bucket.launched_ns = trace::now_ns();
    ++next_launch_;
  }
}

void GradSync::wait() {
  for (const Slot& slot : slots_) {
    if (!slot.ready) {
      throw UsageError(
          fmt::format("GradSync::wait: '{}' was never marked ready in this step; "
                      "call ready() for every registered gradient first",
                      slot.gradient.name()));
    }
  }
  const int size = communicator_.size();
  const double inverse_size = 1.0 / size;
  const trace::Scope waiting("gradsync", "GradSync::wait");
  try {
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      Bucket& bucket = buckets_[b];
      const double scale = bucket.buffer_averaged ? 1.0 : inverse_size;
      for (const std::shared_ptr<Work>& work : bucket.works) work->wait();
      bucket.works.clear();
      trace_bucket(b);
      if (bucket.buffer_averaged && !device_.is_cpu() && size > 1) divide_summed(bucket);
      const std::size_t wire_element = dtype_size(bucket.buffer.dtype());
      for (std::size_t index : bucket.slots) {
        Slot& slot = slots_[index];
        if (slot.in_place) continue;
        detail::convert_scaled_on(
            device_, static_cast<const char*>(bucket.buffer.data()) + slot.offset * wire_element,
            bucket.buffer.dtype(), slot.gradient.data(), slot.gradient.dtype(),
            static_cast<std::size_t>(slot.gradient.numel()), scale);
      }
    }
  } catch (...) {
    abandon_step();
    throw;
  }
  start_step();
}

void GradSync::trace_bucket(std::size_t index) {
  Bucket& bucket = buckets_[index];
  if (bucket.launched_ns != 0) {
    // Ids: this object's address and the bucket, unique among the live
    // GradSyncs of the process.
    const std::uint64_t id = (reinterpret_cast<std::uintptr_t>(this) << 16) ^ index;
    trace::async_span("gradsync", fmt::format("bucket {} ready", index), id, bucket.first_ready_ns,
                      bucket.launched_ns);
    trace::async_span("gradsync", fmt::format("bucket {} all-reduce", index), id,
                      bucket.launched_ns, trace::now_ns());
  }
  bucket.first_ready_ns = 0;
  bucket.launched_ns = 0;
}

void GradSync::start_step() noexcept {
  for (Slot& slot : slots_) slot.ready = false;
  for (Bucket& bucket : buckets_) {
    bucket.works.clear();
    bucket.waiting_for = bucket.slots.size();
    bucket.first_ready_ns = 0;
    bucket.launched_ns = 0;
  }
  next_launch_ = 0;
}

void GradSync::abandon_step() noexcept {
  // Every bucket, finished or not, goes back to the start of a step; the
  // all-reduces still in flight are waited for, since they write buffers
  // and gradients that the next step reuses.
  finish_in_flight();
  start_step();
}

void GradSync::divide_summed(Bucket& bucket) {
  // What the host's backend does for an average: the finished sum divided
  // by the number of ranks, element by element.
  const int size = communicator_.size();
  for (std::size_t index : bucket.slots) {
    Slot& slot = slots_[index];
    if (!slot.in_place) continue;
    detail::divide_in_place_on(device_, slot.gradient.data(), slot.gradient.dtype(),
                               static_cast<std::size_t>(slot.gradient.numel()), size);
  }
  detail::divide_in_place_on(device_, bucket.buffer.data(), bucket.buffer.dtype(),
                             static_cast<std::size_t>(bucket.buffer.numel()), size);
}

void GradSync::finish_in_flight() noexcept {
  for (Bucket& bucket : buckets_) {
    for (const std::shared_ptr<Work>& work : bucket.works) {
      try {
        work->wait();
      } catch (const std::exception& error) {
        log::warn("GradSync: an all-reduce failed while shutting down: {}", error.what());
      }
    }
    bucket.works.clear();
  }
}

std::vector<std::vector<std::string>> GradSync::bucket_layout() const {
  std::vector<std::vector<std::string>> layout;
  for (const Bucket& bucket : buckets_) {
    auto& names = layout.emplace_back();
    for (std::size_t index : bucket.slots) names.push_back(slots_[index].gradient.name());
  }
  return layout;
}

}  // namespace lockstep
