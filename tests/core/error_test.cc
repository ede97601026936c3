#include <string>

#include <gtest/gtest.h>

#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"

namespace lockstep {
namespace {

TEST(Errors, HierarchyLetsCallersCatchByKind) {
  EXPECT_THROW(throw ConfigError("x"), UsageError);
  EXPECT_THROW(throw UsageError("x"), Error);
  EXPECT_THROW(throw IoError("x"), Error);
  EXPECT_THROW(throw TimeoutError("x"), Error);
  EXPECT_THROW(throw BackendError("MPI", 1, "x"), std::runtime_error);
}

#if LOCKSTEP_HAVE_CUDA
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

TEST(Errors, CudaMacroCarriesCudaMessage) {
  const auto body = [] { LOCKSTEP_CHECK_CUDA(cudaSetDevice(-1)); };
  const std::string message = backend_error(body, "CUDA");
  expect_contains(message, "cudaSetDevice(-1)");
  expect_contains(message, "cuda");  // cudaGetErrorName: cudaErrorInvalidDevice, ...NoDevice, ...
}
#endif

}  // namespace
}  // namespace lockstep
