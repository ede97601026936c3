#include "collective_text.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <thread>

#include <fmt/format.h>

#include "layout.h"
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

// Polls with naps that grow from 20 us to 1 ms: these calls wait for other
// ranks' file writes (up to seconds) on the background writer's thread,
// which shares its core with training, and a blocking MPI call would poll
// the whole time. The nap is small next to the writes it waits for.
void wait_idly(std::span<MPI_Request> requests) {
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    LOCKSTEP_CHECK_MPI(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                                   MPI_STATUSES_IGNORE));
    if (done != 0) return;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(1000));
  }
}

void wait_idly(MPI_Request& request) { wait_idly(std::span(&request, 1)); }

void broadcast_text(MPI_Comm comm, int root, std::string& text) {
  int size = checked_int(text.size());
  MPI_Request request = MPI_REQUEST_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Ibcast(&size, 1, MPI_INT, root, comm, &request));
  wait_idly(request);
  text.resize(static_cast<std::size_t>(size));
  LOCKSTEP_CHECK_MPI(MPI_Ibcast(text.data(), size, MPI_CHAR, root, comm, &request));
  wait_idly(request);
}

std::vector<std::string> gather_text(MPI_Comm comm, int root, const std::string& text) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  int size = checked_int(text.size());
  std::vector<int> sizes(rank == root ? static_cast<std::size_t>(ranks) : 0);
  MPI_Request request = MPI_REQUEST_NULL;
  LOCKSTEP_CHECK_MPI(
      MPI_Igather(&size, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm, &request));
  wait_idly(request);
  std::vector<int> offsets(sizes.size());
  std::size_t total = 0;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    offsets[r] = checked_int(total);
    total += static_cast<std::size_t>(sizes[r]);
  }
  std::string joined(total, '\0');
  LOCKSTEP_CHECK_MPI(MPI_Igatherv(text.data(), size, MPI_CHAR, joined.data(), sizes.data(),
                                  offsets.data(), MPI_CHAR, root, comm, &request));
  wait_idly(request);
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
  MPI_Request request = MPI_REQUEST_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm, &request));
  wait_idly(request);
  if (first == ranks) return {};
  std::string message = error;
  broadcast_text(comm, first, message);
  return message;
}

bool agree_or_throw(MPI_Comm comm, std::exception_ptr failure, std::uint64_t fingerprint) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  // The first failing rank, and the smallest and (complemented) largest
  // fingerprint, in one reduction.
  std::uint64_t values[3] = {
      failure ? static_cast<std::uint64_t>(rank) : static_cast<std::uint64_t>(ranks), fingerprint,
      ~fingerprint};
  MPI_Request request = MPI_REQUEST_NULL;
  LOCKSTEP_CHECK_MPI(
      MPI_Iallreduce(MPI_IN_PLACE, values, 3, MPI_UINT64_T, MPI_MIN, comm, &request));
  wait_idly(request);
  if (values[0] == static_cast<std::uint64_t>(ranks)) return values[1] == ~values[2];
  const int first = static_cast<int>(values[0]);
  // The failing rank sends its message, led by one character for its type.
  std::string message;
  if (rank == first) {
    char kind = 'i';
    try {
      std::rethrow_exception(failure);
    } catch (const UsageError& error) {
      kind = 'u';
      message = error.what();
    } catch (const CorruptCheckpoint& error) {
      kind = 'c';
      message = error.what();
    } catch (const std::exception& error) {
      message = error.what();
    } catch (...) {
      message = "an exception that is not a std::exception";
    }
    message = fmt::format("{}rank {}: {}", kind, rank, message);
  }
  broadcast_text(comm, first, message);
  if (message.empty()) throw IoError(fmt::format("rank {} failed", first));
  if (message.front() == 'u') throw UsageError(message.substr(1));
  if (message.front() == 'c') throw CorruptCheckpoint(message.substr(1));
  throw IoError(message.substr(1));
}

}  // namespace lockstep::checkpoint
