// The MPI backend's constructor, when an MPI call in it fails, throws
// lockstep's error; it must not end the process (a communication thread
// started before the failure would be destroyed joinable: std::terminate).
// MPI_Comm_set_errhandler is made to fail by a definition in this program,
// which the calls from lockstep's static libraries bind to instead of the
// MPI library's; it forwards to PMPI_Comm_set_errhandler otherwise.
#include <atomic>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <mpi.h>

#include "lockstep/communicator.h"

namespace {
std::atomic<bool> fail_set_errhandler{false};
}  // namespace

extern "C" int MPI_Comm_set_errhandler(MPI_Comm comm, MPI_Errhandler handler) {
  if (fail_set_errhandler) return MPI_ERR_OTHER;
  return PMPI_Comm_set_errhandler(comm, handler);
}

namespace lockstep {
namespace {

TEST(MpiCommunicator, ConstructorThatFailsThrowsInsteadOfTerminating) {
  fail_set_errhandler = true;
  try {
    auto comm = make_communicator(MPI_COMM_WORLD, Device::cpu(), CommunicatorOptions{});
    ADD_FAILURE() << "constructed although MPI_Comm_set_errhandler failed";
  } catch (const BackendError& error) {
    EXPECT_EQ(error.library(), "MPI");
    EXPECT_NE(std::string(error.what()).find("MPI_Comm_set_errhandler"), std::string::npos)
        << error.what();
  }
  fail_set_errhandler = false;
}

TEST(MpiCommunicator, ConstructsAndRunsOnceMpiAgrees) {
  auto comm = make_communicator(MPI_COMM_WORLD, Device::cpu(), CommunicatorOptions{});
  Tensor ones = Tensor::allocate("ones", DType::kF32, {4});
  for (int i = 0; i < 4; ++i) ones.data_as<float>()[i] = 1.0F;
  comm->allreduce(ones, {});
  EXPECT_EQ(ones.data_as<float>()[3], static_cast<float>(comm->size()));
}

}  // namespace
}  // namespace lockstep
