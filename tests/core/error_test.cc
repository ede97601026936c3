#include <string>

#include <gtest/gtest.h>

#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/hdf5_check.h"

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

TEST(Errors, HierarchyLetsCallersCatchByKind) {
  EXPECT_THROW(throw ConfigError("x"), UsageError);
  EXPECT_THROW(throw UsageError("x"), Error);
  EXPECT_THROW(throw IoError("x"), Error);
  EXPECT_THROW(throw TimeoutError("x"), Error);
  EXPECT_THROW(throw BackendError("MPI", 1, "x"), std::runtime_error);
}

TEST(Errors, Hdf5MacroCarriesErrorStack) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // no automatic stack printing
  const auto body = [] {
    LOCKSTEP_CHECK_HDF5(H5Fopen("/nonexistent/dir/file.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
  };
  const std::string message = backend_error(body, "HDF5");
  expect_contains(message, "H5Fopen(\"/nonexistent/dir/file.h5\", H5F_ACC_RDONLY, H5P_DEFAULT)");
  expect_contains(message, "unable to open file");
  expect_contains(message, "error_test.cc:");
}

TEST(Errors, Hdf5MacroReturnsTheValue) {
  const hid_t space = LOCKSTEP_CHECK_HDF5(H5Screate(H5S_SCALAR));
  EXPECT_GE(space, 0);
  EXPECT_GE(LOCKSTEP_CHECK_HDF5(H5Sclose(space)), 0);
}

#if LOCKSTEP_HAVE_CUDA
TEST(Errors, CudaMacroCarriesCudaMessage) {
  const auto body = [] { LOCKSTEP_CHECK_CUDA(cudaSetDevice(-1)); };
  const std::string message = backend_error(body, "CUDA");
  expect_contains(message, "cudaSetDevice(-1)");
  expect_contains(message, "cuda");  // cudaGetErrorName: cudaErrorInvalidDevice, ...NoDevice, ...
}
#endif

#if LOCKSTEP_HAVE_NCCL
TEST(Errors, NcclMacroCarriesNcclMessage) {
  int count = 0;
  const auto body = [&] { LOCKSTEP_CHECK_NCCL(ncclCommCount(nullptr, &count)); };
  const std::string message = backend_error(body, "NCCL");
  expect_contains(message, "ncclCommCount(nullptr, &count)");
  expect_contains(message, "invalid argument");
}
#endif

}  // namespace
}  // namespace lockstep
