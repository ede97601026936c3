// LOCKSTEP_CHECK_NCCL (lockstep/nccl_check.h); needs NCCL, not a GPU.
#include <string>

#include <gtest/gtest.h>

#include "lockstep/nccl_check.h"

namespace lockstep {
namespace {

TEST(NcclCheck, CarriesCallAndNcclMessage) {
  int count = 0;
  try {
    LOCKSTEP_CHECK_NCCL(ncclCommCount(nullptr, &count));
    ADD_FAILURE() << "no BackendError thrown";
  } catch (const BackendError& error) {
    EXPECT_EQ(error.library(), "NCCL");
    EXPECT_NE(error.code(), 0);
    const std::string message = error.what();
    for (const std::string part : {"ncclCommCount(nullptr, &count)", "invalid argument"}) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  }
}

}  // namespace
}  // namespace lockstep
