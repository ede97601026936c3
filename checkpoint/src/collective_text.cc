#include "collective_text.h"

#include <limits>

#include "lockstep/error.h"
#include "lockstep/mpi_check.h"

namespace lockstep::checkpoint {

namespace {
int checked_int(std::size_t size) {
  if (size > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw UsageError("text to exchange between ranks is larger than 2 GiB");
  }
  return static_cast<int>(size);
}
}  // namespace

void broadcast_text(MPI_Comm comm, int root, std::string& text) {
  int size = checked_int(text.size());
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&size, 1, MPI_INT, root, comm));
  text.resize(static_cast<std::size_t>(size));
  LOCKSTEP_CHECK_MPI(MPI_Bcast(text.data(), size, MPI_CHAR, root, comm));
}

std::vector<std::string> gather_text(MPI_Comm comm, int root, const std::string& text) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  int size = checked_int(text.size());
  std::vector<int> sizes(rank == root ? static_cast<std::size_t>(ranks) : 0);
  LOCKSTEP_CHECK_MPI(MPI_Gather(&size, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm));
  std::vector<int> offsets(sizes.size());
  std::size_t total = 0;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    offsets[r] = checked_int(total);
    total += static_cast<std::size_t>(sizes[r]);
  }
  std::string joined(total, '\0');
  LOCKSTEP_CHECK_MPI(MPI_Gatherv(text.data(), size, MPI_CHAR, joined.data(), sizes.data(),
                                 offsets.data(), MPI_CHAR, root, comm));
  std::vector<std::string> texts;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    texts.push_back(
        joined.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(sizes[r])));
  }
  return texts;
}

std::string first_error(MPI_Comm comm, const std::string& error) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  const int mine = error.empty() ? ranks : rank;
  int first = ranks;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == ranks) return {};
  std::string message = error;
  broadcast_text(comm, first, message);
  return message;
}

}  // namespace lockstep::checkpoint
