// MpiComm: owns one MPI communicator.
#pragma once

#include <mpi.h>

namespace lockstep {

class MpiComm {
 public:
  // An empty handle (MPI_COMM_NULL).
  MpiComm() = default;
  // Takes ownership of `comm`, which is freed on destruction. Predefined
  // communicators (MPI_COMM_WORLD, MPI_COMM_SELF) must be dup()ed instead.
  explicit MpiComm(MPI_Comm comm) : comm_(comm) {}
  // A duplicate of `comm`: same group, a separate context, so traffic on the
  // duplicate never matches messages sent on `comm`.
  static MpiComm dup(MPI_Comm comm);
  // MPI_Comm_split_type(MPI_COMM_TYPE_SHARED): the ranks sharing this node.
  static MpiComm split_shared(MPI_Comm comm);
  static MpiComm split(MPI_Comm comm, int color, int key);

  // Not copyable: two owners would free the communicator twice.
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  // Movable: the moved-from handle becomes MPI_COMM_NULL and frees nothing.
  MpiComm(MpiComm&& other) noexcept : comm_(other.comm_) { other.comm_ = MPI_COMM_NULL; }
  MpiComm& operator=(MpiComm&& other) noexcept;
  // Frees the communicator unless MPI is already finalized; never throws.
  ~MpiComm();

  MPI_Comm get() const { return comm_; }
  int rank() const;
  int size() const;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace lockstep
