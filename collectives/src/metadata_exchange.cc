#include "metadata_exchange.h"

#include <climits>

#include "lockstep/error.h"
#include "lockstep/mpi_check.h"

namespace lockstep::detail {

std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine) {
  if (mine.size() > static_cast<std::size_t>(INT_MAX)) {
    throw UsageError("metadata of " + std::to_string(mine.size()) + " bytes is too large");
  }
  int size = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &size));
  const int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<std::size_t>(size));
  LOCKSTEP_CHECK_MPI(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm));
  std::vector<int> offsets(lengths.size(), 0);
  for (std::size_t i = 1; i < lengths.size(); ++i) offsets[i] = offsets[i - 1] + lengths[i - 1];
  std::string all(static_cast<std::size_t>(offsets.back() + lengths.back()), '\0');
  LOCKSTEP_CHECK_MPI(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(),
                                    offsets.data(), MPI_CHAR, comm));
  std::vector<std::string> result;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    result.push_back(
        all.substr(static_cast<std::size_t>(offsets[i]), static_cast<std::size_t>(lengths[i])));
  }
  return result;
}

}  // namespace lockstep::detail
