// main() of the multi-rank gtest binaries: one lockstep::Runtime lives for
// the whole run, and only rank 0 prints gtest's report so that the output of
// n ranks does not interleave. Any rank's failure still fails the job: its
// exit status is the OR of all ranks' results.
#include <gtest/gtest.h>

#include "mpi_test.h"

namespace lockstep::testing {
namespace {
Runtime* g_runtime = nullptr;

// Ranks other than 0 print only their failures, each with the rank prefix.
class FailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      log::error("{}:{}: {}", result.file_name() != nullptr ? result.file_name() : "?",
                 result.line_number(), result.message());
    }
  }
};
}  // namespace
Runtime& runtime() { return *g_runtime; }
}  // namespace lockstep::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  lockstep::Runtime runtime(argc, argv);
  lockstep::testing::g_runtime = &runtime;
  if (runtime.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new lockstep::testing::FailurePrinter);
  }
  int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, runtime.comm());
  return any_failed;
}
