// Storage faults during a save: whatever fails, on whichever rank, every
// rank reports the failure, nothing of the failed step is committed, and
// after a restart the previous step loads and the debris is cleaned up.
#include <gtest/gtest.h>

#include "checkpoint_test_util.h"
#include "fault_injection_env.h"

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;

struct FaultCase {
  const char* name;
  Fault fault;
  bool on_last_rank;      // else on rank 0
  const char* path_part;  // which file or rename fails
  const char* expected;   // in the error every rank sees
};

const FaultCase kCases[] = {
    {"short-write", Fault::kShortWrite, true, "rank-", "short write"},
    {"enospc", Fault::kNoSpace, true, "rank-", "No space left on device"},
    {"eio", Fault::kIoError, true, "rank-", "Input/output error"},
    {"enospc-metadata", Fault::kNoSpace, false, "metadata.json", "No space left on device"},
    {"eio-master", Fault::kIoError, false, "checkpoint.h5", "Input/output error"},
    {"crash-before-rename", Fault::kCrashBeforeRename, false, "step-2", "simulated crash"},
};

void expect_previous_step_survives(const FaultCase& fault_case, bool async) {
  const MPI_Comm world = runtime().comm();
  const int rank = runtime().rank();
  const auto dir =
      fresh_dir(fmt::format("fault-{}-{}", fault_case.name, async ? "async" : "sync"), world);
  auto env = std::make_shared<FaultInjectionEnv>();
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world, {.dir = dir, .async = async, .env = env});
    model.fill_all(1);
    checkpointer.save(1, model.state());
    checkpointer.wait();

    const int victim = fault_case.on_last_rank ? runtime().world_size() - 1 : 0;
    if (rank == victim) env->arm(fault_case.fault, fault_case.path_part);
    model.fill_all(2);
    std::string error = "(no error)";
    try {
      checkpointer.save(2, model.state());
      checkpointer.wait();  // an asynchronous save's error surfaces here
    } catch (const IoError& failure) {
      error = failure.what();
    }
    EXPECT_NE(error.find(fault_case.expected), std::string::npos) << error;
    EXPECT_NE(error.find("step 2 was not committed"), std::string::npos) << error;
    EXPECT_EQ(checkpointer.committed_steps(), steps({1}));
    if (fault_case.fault == Fault::kCrashBeforeRename && rank == 0) {
      // The torn save is still on disk, invisible to readers.
      bool torn_present = false;
      for (const auto& entry : fs::directory_iterator(dir)) {
        torn_present |= entry.path().filename().string().starts_with("step-2.tmp-");
      }
      EXPECT_TRUE(torn_present);
    }
  }
  MPI_Barrier(world);

  // A restart: a new Checkpointer on the real file system.
  Checkpointer restarted(world, {.dir = dir});
  if (rank == 0) {
    EXPECT_EQ(directory_entries(dir), (std::vector<std::string>{"step-1"})) << "debris left behind";
  }
  model.fill_all(9);
  auto state = model.state();
  EXPECT_EQ(restarted.restore_latest(state), 1);
  EXPECT_EQ(model.mismatch(1), "");
  // The checkpointer works again after the fault.
  model.fill_all(3);
  restarted.save(3, model.state());
  restarted.wait();
  EXPECT_EQ(restarted.committed_steps(), steps({1, 3}));
}

TEST(CheckpointFaults, PreviousStepSurvivesEveryFaultSynchronously) {
  for (const auto& fault_case : kCases) {
    SCOPED_TRACE(fault_case.name);
    expect_previous_step_survives(fault_case, false);
  }
}

TEST(CheckpointFaults, PreviousStepSurvivesEveryFaultAsynchronously) {
  for (const auto& fault_case : kCases) {
    SCOPED_TRACE(fault_case.name);
    expect_previous_step_survives(fault_case, true);
  }
}

}  // namespace
}  // namespace lockstep::testing
