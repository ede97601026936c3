// GroupWork: one Work handle over several collectives that finish
// independently (the default allreduce_coalesced_async).
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "lockstep/tensor.h"
#include "lockstep/work.h"

namespace lockstep::detail {

class GroupWork final : public Work {
 public:
  // `works` is not empty.
  explicit GroupWork(std::vector<std::shared_ptr<Work>> works);

  bool test() override;
  // The timeout applies to the group as a whole.
  void wait(std::chrono::duration<double> timeout) override;
  std::uint64_t sequence_number() const override { return works_.back()->sequence_number(); }
  std::string describe() const override;

 private:
  const std::vector<std::shared_ptr<Work>> works_;
};

// Throws UsageError unless `tensors` is a non-empty list of one dtype.
void check_coalesced(const std::vector<Tensor>& tensors, std::string_view operation);

}  // namespace lockstep::detail
