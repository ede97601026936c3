// One RAII class per CUDA/NCCL handle the NCCL backend owns. Each releases
// its handle without throwing and logs when the release fails.
#pragma once

#include <atomic>

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace lockstep::detail {

// Owns an ncclComm_t.
class NcclCommHandle {
 public:
  NcclCommHandle() = default;
  explicit NcclCommHandle(ncclComm_t comm) : comm_(comm) {}
  // Not copyable: two owners would destroy the communicator twice.
  NcclCommHandle(const NcclCommHandle&) = delete;
  NcclCommHandle& operator=(const NcclCommHandle&) = delete;
  // Movable, so that it can be built in a helper and handed to its owner;
  // the moved-from handle is empty and releases nothing.
  NcclCommHandle(NcclCommHandle&& other) noexcept
      : comm_(other.comm_), aborted_(other.aborted_.load()) {
    other.comm_ = nullptr;
  }
  // Move-assignment is deleted: it would have to destroy the old
  // communicator, a collective call that must not hide inside an operator=.
  NcclCommHandle& operator=(NcclCommHandle&&) = delete;
  // Finalizes and destroys the communicator. Aborts it instead when
  // finalizing fails or has not finished after 10 s (a peer that died would
  // hold it for ever), and does nothing when abort() was called. Never
  // throws; logs what went wrong.
  ~NcclCommHandle();

  ncclComm_t get() const { return comm_; }
  // ncclCommAbort: stops kernels that wait for peers that never come.
  // Callable from any thread, once; the destructor then only forgets it.
  void abort() noexcept;

 private:
  ncclComm_t comm_ = nullptr;
  std::atomic<bool> aborted_{false};  // set by the watchdog thread
};

// Owns a cudaStream_t created with cudaStreamNonBlocking, so that it never
// synchronises with the legacy default stream behind the caller's back.
class CudaStreamHandle {
 public:
  // Creates a stream on the current device.
  static CudaStreamHandle create();
  CudaStreamHandle() = default;
  // Not copyable: two owners would destroy the stream twice.
  CudaStreamHandle(const CudaStreamHandle&) = delete;
  CudaStreamHandle& operator=(const CudaStreamHandle&) = delete;
  // Movable (a factory returns it); the moved-from handle is empty.
  CudaStreamHandle(CudaStreamHandle&& other) noexcept : stream_(other.stream_) {
    other.stream_ = nullptr;
  }
  // Move-assignment is deleted: no owner needs to replace its stream, and
  // destroying one with work queued deserves an explicit decision.
  CudaStreamHandle& operator=(CudaStreamHandle&&) = delete;
  ~CudaStreamHandle();

  cudaStream_t get() const { return stream_; }

 private:
  explicit CudaStreamHandle(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

// Owns a cudaEvent_t created without timing (cheaper to record and query).
class CudaEventHandle {
 public:
  static CudaEventHandle create();
  CudaEventHandle() = default;
  // Not copyable: two owners would destroy the event twice.
  CudaEventHandle(const CudaEventHandle&) = delete;
  CudaEventHandle& operator=(const CudaEventHandle&) = delete;
  // Movable: events are created per operation and moved into its Work; the
  // moved-from handle is empty.
  CudaEventHandle(CudaEventHandle&& other) noexcept : event_(other.event_) {
    other.event_ = nullptr;
  }
  // Move-assignment is deleted: no owner replaces its event.
  CudaEventHandle& operator=(CudaEventHandle&&) = delete;
  ~CudaEventHandle();

  cudaEvent_t get() const { return event_; }

 private:
  explicit CudaEventHandle(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

}  // namespace lockstep::detail
