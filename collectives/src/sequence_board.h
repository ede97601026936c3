// SequenceBoard: every rank publishes the sequence number of the last
// collective it started in an MPI one-sided window, so that a rank whose
// collective hangs can read, without the cooperation of the others, which
// ranks never reached it.
#pragma once

#include <cstdint>
#include <vector>

#include <mpi.h>

namespace lockstep::detail {

class SequenceBoard {
 public:
  // Collective over `comm`, which must outlive the board and should carry
  // no other one-sided traffic.
  explicit SequenceBoard(MPI_Comm comm);
  // Owns an MPI window: not copyable (two owners would free it twice), not
  // movable (the watchdog thread holds a reference).
  SequenceBoard(const SequenceBoard&) = delete;
  SequenceBoard& operator=(const SequenceBoard&) = delete;
  // Collective (MPI_Win_free); never throws.
  ~SequenceBoard();

  // Records that this rank started collective `sequence`. Thread-safe.
  void publish(std::uint64_t sequence);
  // The last sequence number each rank published, in rank order.
  // Thread-safe; does not need the other ranks to call anything. Throws
  // BackendError when the network offers no one-sided MPI (no board).
  std::vector<std::uint64_t> read_all();

 private:
  MPI_Win window_ = MPI_WIN_NULL;
  int rank_ = 0;
  int size_ = 0;
};

}  // namespace lockstep::detail
