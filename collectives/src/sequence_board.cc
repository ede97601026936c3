#include "sequence_board.h"

#include "lockstep/log.h"
#include "lockstep/mpi_check.h"

namespace lockstep::detail {

SequenceBoard::SequenceBoard(MPI_Comm comm) {
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank_));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &size_));
  std::uint64_t* slot = nullptr;
  // Open MPI has no one-sided component for MPI_THREAD_MULTIPLE over plain
  // TCP between nodes (osc/rdma needs RDMA, osc/pt2pt refuses threads). The
  // board is then absent: the watchdog still aborts a hung job, it just
  // cannot name the ranks that are behind.
  if (MPI_Win_allocate(sizeof(std::uint64_t), sizeof(std::uint64_t), MPI_INFO_NULL, comm, &slot,
                       &window_) != MPI_SUCCESS) {
    window_ = MPI_WIN_NULL;
    if (rank_ == 0) {
      log::warn(
          "no MPI one-sided communication on this network (MPI_Win_allocate failed): the "
          "collective watchdog cannot read the other ranks' progress itself; under `lockstep "
          "run` the launcher names the ranks behind a hang from their heartbeats");
    }
    return;
  }
  *slot = 0;
  LOCKSTEP_CHECK_MPI(MPI_Win_set_errhandler(window_, MPI_ERRORS_RETURN));
  // No rank may read a slot before its owner has zeroed it.
  LOCKSTEP_CHECK_MPI(MPI_Barrier(comm));
  // One passive-target epoch for the board's whole life: publish and read
  // then cost one atomic operation and a flush each.
  LOCKSTEP_CHECK_MPI(MPI_Win_lock_all(MPI_MODE_NOCHECK, window_));
}

SequenceBoard::~SequenceBoard() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized != 0 || window_ == MPI_WIN_NULL) return;
  if (MPI_Win_unlock_all(window_) != MPI_SUCCESS || MPI_Win_free(&window_) != MPI_SUCCESS) {
    log::warn("could not free the sequence window of a communicator");
  }
}

void SequenceBoard::publish(std::uint64_t sequence) {
  if (window_ == MPI_WIN_NULL) return;
  // An atomic replace, so that a concurrent read never sees a torn value.
  LOCKSTEP_CHECK_MPI(
      MPI_Accumulate(&sequence, 1, MPI_UINT64_T, rank_, 0, 1, MPI_UINT64_T, MPI_REPLACE, window_));
  LOCKSTEP_CHECK_MPI(MPI_Win_flush(rank_, window_));
}

std::vector<std::uint64_t> SequenceBoard::read_all() {
  if (window_ == MPI_WIN_NULL) {
    throw BackendError("MPI", 0, "no one-sided MPI window on this network");
  }
  std::vector<std::uint64_t> values(static_cast<std::size_t>(size_), 0);
  const std::uint64_t unused = 0;
  for (int rank = 0; rank < size_; ++rank) {
    LOCKSTEP_CHECK_MPI(MPI_Fetch_and_op(&unused, &values[static_cast<std::size_t>(rank)],
                                        MPI_UINT64_T, rank, 0, MPI_NO_OP, window_));
  }
  LOCKSTEP_CHECK_MPI(MPI_Win_flush_all(window_));
  return values;
}

}  // namespace lockstep::detail
