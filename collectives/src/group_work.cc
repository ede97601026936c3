#include "group_work.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::detail {

GroupWork::GroupWork(std::vector<std::shared_ptr<Work>> works) : works_(std::move(works)) {}

bool GroupWork::test() {
  bool done = true;
  for (const std::shared_ptr<Work>& work : works_) done = work->test() && done;
  return done;
}

void GroupWork::wait(std::chrono::duration<double> timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (const std::shared_ptr<Work>& work : works_) {
    if (timeout.count() < 0) {
      work->wait(timeout);
      continue;
    }
    const std::chrono::duration<double> left = timeout - (Clock::now() - start);
    work->wait(std::max(left, std::chrono::duration<double>(0)));
  }
}

std::string GroupWork::describe() const {
  return fmt::format("{} collectives, #{} to #{}", works_.size(), works_.front()->sequence_number(),
                     works_.back()->sequence_number());
}

void check_coalesced(const std::vector<Tensor>& tensors, std::string_view operation) {
  if (tensors.empty()) throw UsageError(fmt::format("{}: the list of tensors is empty", operation));
  for (const Tensor& tensor : tensors) {
    if (tensor.dtype() != tensors.front().dtype()) {
      throw UsageError(fmt::format("{}: all tensors must have one dtype, found '{}' and '{}'",
                                   operation, tensors.front().describe(), tensor.describe()));
    }
  }
}

}  // namespace lockstep::detail
