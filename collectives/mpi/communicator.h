// MpiCommunicator: collectives on host tensors over MPI. One communication
// thread executes the collectives in the order they were issued, so that
// non-blocking operations progress while the caller computes, and so that
// every rank enters them in the same order. A blocking call made while that
// thread is idle runs on the caller's thread instead (lower latency); at
// most one collective runs at any time.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "../src/sequence_board.h"
#include "../src/watchdog.h"
#include "lockstep/communicator.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/mutex.h"
#include "reduce_ops.h"
#include "ring_allreduce.h"
#include "work.h"

namespace lockstep::detail {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over `comm`, which it duplicates.
  MpiCommunicator(MPI_Comm comm, const CommunicatorOptions& options);
  // Owns a thread that refers to it: neither copyable nor movable.
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  // Finishes the collectives already issued (the other ranks expect them),
  // then frees its communicators. Collective.
  ~MpiCommunicator() override;

  std::string_view backend_name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce(Tensor& tensor, const AllreduceOptions& options) override;
  std::shared_ptr<Work> allreduce_async(Tensor tensor, const AllreduceOptions& options) override;
  std::shared_ptr<Work> allreduce_coalesced_async(std::vector<Tensor> tensors,
                                                  const AllreduceOptions& options) override;
  void broadcast(Tensor& tensor, const BroadcastOptions& options) override;
  std::shared_ptr<Work> broadcast_async(Tensor tensor, const BroadcastOptions& options) override;
  void allgather(const Tensor& input, Tensor& output, const AllgatherOptions& options) override;
  std::shared_ptr<Work> allgather_async(Tensor input, Tensor output,
                                        const AllgatherOptions& options) override;
  void reduce_scatter(const Tensor& input, Tensor& output,
                      const ReduceScatterOptions& options) override;
  std::shared_ptr<Work> reduce_scatter_async(Tensor input, Tensor output,
                                             const ReduceScatterOptions& options) override;
  bool has_stream_shares() const override { return true; }
  std::shared_ptr<Work> reduce_scatter_stream_async(std::vector<Tensor> tensors,
                                                    const ReduceScatterOptions& options) override;
  std::shared_ptr<Work> allgather_stream_async(std::vector<Tensor> tensors,
                                               const AllgatherOptions& options) override;
  void barrier(const BarrierOptions& options) override;
  std::shared_ptr<Work> barrier_async(const BarrierOptions& options) override;
  std::vector<std::string> exchange_metadata(const std::string& mine) override;

 private:
  // Whether to wake the communication thread for a new collective. Blocking
  // calls do not: they try to run it on the caller's thread (complete()).
  enum class Wake : std::uint8_t { kNow, kLater };

  std::shared_ptr<MpiWork> enqueue(Wake wake, std::string description, CollectiveTimeout timeout,
                                   std::function<void()> body);
  // Finishes `work` for a blocking call: on the caller's thread when the
  // communication thread is idle and `work` is next, else by waiting.
  void complete(const std::shared_ptr<MpiWork>& work);
  // Publishes, guards and runs one collective, on whichever thread runs it.
  // Does not throw: the collective's error goes to its Work, and one that
  // cannot be guarded runs all the same (the other ranks are entering it).
  void execute(MpiWork& work);
  void communicate();  // the communication thread

  std::shared_ptr<MpiWork> start_allreduce(std::vector<Tensor> tensors,
                                           const AllreduceOptions& options, Wake wake);
  std::shared_ptr<MpiWork> start_broadcast(Tensor tensor, const BroadcastOptions& options,
                                           Wake wake);
  std::shared_ptr<MpiWork> start_allgather(Tensor input, Tensor output,
                                           const AllgatherOptions& options, Wake wake);
  std::shared_ptr<MpiWork> start_reduce_scatter(Tensor input, Tensor output,
                                                const ReduceScatterOptions& options, Wake wake);
  std::shared_ptr<MpiWork> start_barrier(const BarrierOptions& options, Wake wake);

  // One tensor, or several of one dtype as one stream.
  void run_allreduce(std::vector<Tensor>& tensors, ReduceOp op);
  void run_broadcast(Tensor& tensor, int root);
  void run_allgather(const Tensor& input, Tensor& output);
  void run_reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op, bool input_is_scratch);
  // One half of the ring all-reduce over `tensors` taken back to back, in
  // shares of ceil(elements / size) (the large reduce-scatters and
  // all-gathers, of streams and of equal blocks alike).
  void run_ring_half(std::vector<Tensor>& tensors, RingPhases phases, ReduceOp op);
  void run_reduce_scatter_stream(std::vector<Tensor>& tensors, ReduceOp op);
  void run_allgather_stream(std::vector<Tensor>& tensors);

  MpiComm data_;     // collectives only
  MpiComm control_;  // metadata exchange and the sequence board
  int rank_ = 0;
  int size_ = 1;
  CommunicatorOptions options_;
  MpiReduceOps reduce_ops_;
  SequenceBoard board_;
  std::vector<char> ring_scratch_;  // of the one running collective, on either thread
  // A reduce-scatter's copy of an input it may not overwrite, likewise.
  std::vector<char> input_copy_;
  Watchdog watchdog_;

  Mutex mutex_;
  CondVar queue_changed_;
  std::deque<std::shared_ptr<MpiWork>> queue_ LOCKSTEP_GUARDED_BY(mutex_);
  std::uint64_t issued_ LOCKSTEP_GUARDED_BY(mutex_) = 0;
  bool busy_ LOCKSTEP_GUARDED_BY(mutex_) = false;  // a collective runs, on either thread
  bool stopping_ LOCKSTEP_GUARDED_BY(mutex_) = false;
  std::thread communication_thread_;  // started at the end of the constructor
};

}  // namespace lockstep::detail
