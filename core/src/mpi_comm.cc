#include "lockstep/mpi_comm.h"

#include "lockstep/log.h"
#include "lockstep/mpi_check.h"

namespace lockstep {

namespace {
bool mpi_alive() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized != 0 && finalized == 0;
}
}  // namespace

MpiComm MpiComm::dup(MPI_Comm comm) {
  MPI_Comm copy = MPI_COMM_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Comm_dup(comm, &copy));
  return MpiComm(copy);
}

MpiComm MpiComm::split_shared(MPI_Comm comm) {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  return MpiComm(node);
}

MpiComm MpiComm::split(MPI_Comm comm, int color, int key) {
  MPI_Comm part = MPI_COMM_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Comm_split(comm, color, key, &part));
  return MpiComm(part);
}

MpiComm& MpiComm::operator=(MpiComm&& other) noexcept {
  if (this != &other) {
    MpiComm doomed(comm_);  // frees the old communicator
    comm_ = other.comm_;
    other.comm_ = MPI_COMM_NULL;
  }
  return *this;
}

MpiComm::~MpiComm() {
  if (comm_ == MPI_COMM_NULL || !mpi_alive()) return;
  if (MPI_Comm_free(&comm_) != MPI_SUCCESS) log::warn("MPI_Comm_free failed; ignoring");
}

int MpiComm::rank() const {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm_, &rank));
  return rank;
}

int MpiComm::size() const {
  int size = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm_, &size));
  return size;
}

}  // namespace lockstep
