// LOCKSTEP_CHECK_MPI, in a binary of its own: it initialises MPI, whose
// allocations at exit the leak checker must not count against lockstep.
#include <string>

#include <gtest/gtest.h>

#include "lockstep/mpi_check.h"

namespace lockstep {
namespace {

// Runs `body`, expects a BackendError from `library`, and returns its text.
template <class Body>
std::string backend_error(Body body, const std::string& library) {
  try {
    body();
  } catch (const BackendError& error) {
    EXPECT_EQ(error.library(), library);
    EXPECT_NE(error.code(), 0);
    return error.what();
  }
  ADD_FAILURE() << "no BackendError thrown";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(Errors, MpiMacroCarriesCallFileLineAndMpiMessage) {
  MPI_Comm comm = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_dup(MPI_COMM_SELF, &comm), MPI_SUCCESS);
  ASSERT_EQ(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), MPI_SUCCESS);
  int value = 0;
  const int line = __LINE__ + 1;
  const auto body = [&] { LOCKSTEP_CHECK_MPI(MPI_Send(&value, 1, MPI_INT, 99, 0, comm)); };
  const std::string message = backend_error(body, "MPI");
  expect_contains(message, "MPI_Send(&value, 1, MPI_INT, 99, 0, comm)");
  expect_contains(message, "error_test.cc:" + std::to_string(line));
  expect_contains(message, "invalid rank");  // Open MPI's own words for MPI_ERR_RANK
  MPI_Comm_free(&comm);
}

TEST(Errors, MpiMacroPassesSuccessThrough) {
  int rank = -1;
  EXPECT_NO_THROW(LOCKSTEP_CHECK_MPI(MPI_Comm_rank(MPI_COMM_SELF, &rank)));
  EXPECT_EQ(rank, 0);
}

}  // namespace
}  // namespace lockstep
