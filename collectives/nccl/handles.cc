#include "handles.h"

#include <chrono>

#include "../src/poll_until.h"
#include "lockstep/cuda_check.h"
#include "lockstep/log.h"

namespace lockstep::detail {

namespace {
// How long teardown waits for ncclCommFinalize. By then the collectives have
// finished (the communicator's destructor waits for them), so finalizing
// takes milliseconds; one still running after this long waits for a peer
// that died or stopped answering, and the communicator is aborted instead.
constexpr auto kFinalizeTimeout = std::chrono::seconds(10);
}  // namespace

NcclCommHandle::~NcclCommHandle() {
  if (comm_ == nullptr || aborted_) return;
  // A non-blocking communicator answers ncclInProgress; finalize must reach
  // its end before the communicator can be destroyed.
  ncclResult_t result = ncclCommFinalize(comm_);
  const bool settled = poll_until(
      [&] {
        if (result != ncclInProgress) return true;
        ncclResult_t state = ncclSuccess;
        const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
        result = queried != ncclSuccess ? queried : state;
        return result != ncclInProgress;
      },
      {.timeout = kFinalizeTimeout});
  if (!settled) {
    log::warn(
        "ncclCommFinalize did not finish within {} s (a peer may have died or stopped "
        "answering); aborting the communicator instead",
        kFinalizeTimeout.count());
    abort();
    return;
  }
  if (result != ncclSuccess) {
    log::warn("ncclCommFinalize failed ({}); aborting the communicator instead",
              ncclGetErrorString(result));
    abort();
    return;
  }
  if (const ncclResult_t destroyed = ncclCommDestroy(comm_); destroyed != ncclSuccess) {
    log::warn("ncclCommDestroy failed: {}", ncclGetErrorString(destroyed));
  }
}

void NcclCommHandle::abort() noexcept {
  if (comm_ == nullptr || aborted_.exchange(true)) return;
  if (const ncclResult_t result = ncclCommAbort(comm_); result != ncclSuccess) {
    log::warn("ncclCommAbort failed: {}", ncclGetErrorString(result));
  }
}

CudaStreamHandle CudaStreamHandle::create() {
  cudaStream_t stream = nullptr;
  LOCKSTEP_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return CudaStreamHandle(stream);
}

CudaStreamHandle::~CudaStreamHandle() {
  if (stream_ == nullptr) return;
  if (const cudaError_t result = cudaStreamDestroy(stream_); result != cudaSuccess) {
    log::warn("cudaStreamDestroy failed: {}", cudaGetErrorString(result));
  }
}

CudaEventHandle CudaEventHandle::create() {
  cudaEvent_t event = nullptr;
  LOCKSTEP_CHECK_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return CudaEventHandle(event);
}

CudaEventHandle::~CudaEventHandle() {
  if (event_ == nullptr) return;
  if (const cudaError_t result = cudaEventDestroy(event_); result != cudaSuccess) {
    log::warn("cudaEventDestroy failed: {}", cudaGetErrorString(result));
  }
}

}  // namespace lockstep::detail
