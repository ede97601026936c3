#include "handles.h"

#include "lockstep/cuda_check.h"
#include "lockstep/log.h"

namespace lockstep::detail {

NcclCommHandle::~NcclCommHandle() {
  if (comm_ == nullptr || aborted_) return;
  // Non-blocking communicators may answer ncclInProgress; finalize must be
  // driven to completion before the communicator can be destroyed.
  ncclResult_t result = ncclCommFinalize(comm_);
  while (result == ncclInProgress) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    result = state;
  }
  if (result != ncclSuccess) {
    log::warn("ncclCommFinalize failed ({}); aborting the communicator instead",
              ncclGetErrorString(result));
    ncclCommAbort(comm_);
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
