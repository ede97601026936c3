// NcclCommunicator: collectives on CUDA tensors over NCCL. The communicator
// is bootstrapped by broadcasting an ncclUniqueId over MPI and created
// non-blocking, so that a collective that hangs can be aborted
// (ncclCommAbort) instead of pinning the GPU forever. Operations run on a
// dedicated stream; a completion thread watches their events.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "../src/sequence_board.h"
#include "../src/watchdog.h"
#include "handles.h"
#include "lockstep/communicator.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/mutex.h"
#include "work.h"

namespace lockstep::detail {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `comm` (duplicated for the bootstrap and metadata).
  // Every rank passes its own GPU in `device`.
  NcclCommunicator(MPI_Comm comm, Device device, const CommunicatorOptions& options);
  // Owns a thread that refers to it: neither copyable nor movable.
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  // Waits for the collectives in flight, then releases NCCL. Collective.
  ~NcclCommunicator() override;

  std::string_view backend_name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce(Tensor& tensor, const AllreduceOptions& options) override;
  std::shared_ptr<Work> allreduce_async(Tensor tensor, const AllreduceOptions& options) override;
  void broadcast(Tensor& tensor, const BroadcastOptions& options) override;
  std::shared_ptr<Work> broadcast_async(Tensor tensor, const BroadcastOptions& options) override;
  void allgather(const Tensor& input, Tensor& output, const AllgatherOptions& options) override;
  std::shared_ptr<Work> allgather_async(Tensor input, Tensor output,
                                        const AllgatherOptions& options) override;
  void reduce_scatter(const Tensor& input, Tensor& output,
                      const ReduceScatterOptions& options) override;
  std::shared_ptr<Work> reduce_scatter_async(Tensor input, Tensor output,
                                             const ReduceScatterOptions& options) override;
  void barrier(const BarrierOptions& options) override;
  std::shared_ptr<Work> barrier_async(const BarrierOptions& options) override;
  std::vector<std::string> exchange_metadata(const std::string& mine) override;

 private:
  using Launch = std::function<ncclResult_t(ncclComm_t, cudaStream_t)>;
  std::shared_ptr<Work> launch(std::string description, CollectiveTimeout timeout,
                               std::vector<Tensor> keep_alive, const Launch& call);
  void watch_completions();  // the completion thread

  MpiComm control_;
  int rank_ = 0;
  int size_ = 1;
  Device device_;
  CommunicatorOptions options_;
  SequenceBoard board_;
  const std::shared_ptr<NcclCommHandle> comm_;  // shared with the Works in flight
  CudaStreamHandle stream_;
  Tensor barrier_scratch_;  // NCCL has no barrier: one all-reduced float
  Watchdog watchdog_;

  // Held by the issuing thread from taking a sequence number to the end of
  // its enqueue (which may wait), never by the completion thread.
  Mutex issue_mutex_;
  std::uint64_t issued_ LOCKSTEP_GUARDED_BY(issue_mutex_) = 0;

  Mutex mutex_;
  CondVar in_flight_changed_;
  std::deque<std::shared_ptr<NcclWork>> in_flight_ LOCKSTEP_GUARDED_BY(mutex_);
  bool stopping_ LOCKSTEP_GUARDED_BY(mutex_) = false;
  std::thread completion_thread_;  // last: starts once the rest exists
};

}  // namespace lockstep::detail
