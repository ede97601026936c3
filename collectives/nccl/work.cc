#include "work.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "lockstep/blocked_time.h"
#include "lockstep/cuda_check.h"
#include "lockstep/nccl_check.h"

namespace lockstep::detail {

NcclWork::NcclWork(std::uint64_t sequence, std::string description, CudaEventHandle done,
                   std::shared_ptr<NcclCommHandle> comm, std::vector<Tensor> keep_alive)
    : sequence_(sequence),
      description_(std::move(description)),
      done_(std::move(done)),
      comm_(std::move(comm)),
      keep_alive_(std::move(keep_alive)) {}

bool NcclWork::finished_on_device() const noexcept {
  return cudaEventQuery(done_.get()) == cudaSuccess;
}

bool NcclWork::test() {
  const cudaError_t state = cudaEventQuery(done_.get());
  if (state == cudaSuccess) return true;
  if (state != cudaErrorNotReady) LOCKSTEP_CHECK_CUDA(state);
  // A peer that failed shows up as an asynchronous error of the communicator.
  ncclResult_t comm_state = ncclSuccess;
  LOCKSTEP_CHECK_NCCL(ncclCommGetAsyncError(comm_->get(), &comm_state));
  LOCKSTEP_CHECK_NCCL(comm_state);
  return false;
}

void NcclWork::wait(std::chrono::duration<double> timeout) {
  const blocked_time::Scope blocked;
  const auto start = std::chrono::steady_clock::now();
  // Polling rather than cudaEventSynchronize: only polling can notice a
  // communicator error or give up after `timeout`.
  while (!test()) {
    if (timeout.count() >= 0 && std::chrono::steady_clock::now() - start > timeout) {
      throw TimeoutError(
          fmt::format("{} did not finish within {:.3g} s of waiting", describe(), timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

std::string NcclWork::describe() const { return fmt::format("{} #{}", description_, sequence_); }

}  // namespace lockstep::detail
