// Allgather of one string per rank over MPI: the host-side channel both
// backends offer for small metadata (Communicator::exchange_metadata).
#pragma once

#include <string>
#include <vector>

#include <mpi.h>

namespace lockstep::detail {

// Every rank's `mine`, in rank order. Collective over `comm`.
std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine);

}  // namespace lockstep::detail
