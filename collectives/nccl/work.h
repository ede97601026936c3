// NcclWork: one collective enqueued on the NCCL backend's stream; finished
// when the event recorded after it has completed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "handles.h"
#include "lockstep/tensor.h"
#include "lockstep/work.h"

namespace lockstep::detail {

class NcclWork final : public Work {
 public:
  // `keep_alive` holds the tensors the kernels read and write until they
  // have finished; `comm` is queried for asynchronous errors.
  NcclWork(std::uint64_t sequence, std::string description, CudaEventHandle done,
           std::shared_ptr<NcclCommHandle> comm, std::vector<Tensor> keep_alive);

  bool test() override;
  void wait(std::chrono::duration<double> timeout) override;
  std::uint64_t sequence_number() const override { return sequence_; }
  std::string describe() const override;

  // Whether the device has passed the event; never throws (the completion
  // thread uses it).
  bool finished_on_device() const noexcept;

 private:
  const std::uint64_t sequence_;
  const std::string description_;
  CudaEventHandle done_;
  std::shared_ptr<NcclCommHandle> comm_;
  std::vector<Tensor> keep_alive_;
};

}  // namespace lockstep::detail
