// Storage faults during a save: whatever fails, on whichever rank, every
// rank reports the failure, nothing of the failed step is committed, and
// after a restart the previous step loads and the debris is cleaned up.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>

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

// What `action` throws on this rank: the exception's type and message.
struct Thrown {
  std::string type = "(nothing)";
  std::string message;
};

Thrown thrown_by(const std::function<void()>& action) {
  Thrown thrown;
  try {
    action();
  } catch (const UsageError& error) {
    thrown = {"UsageError", error.what()};
  } catch (const IoError& error) {
    thrown = {"IoError", error.what()};
  } catch (const std::exception& error) {
    thrown = {"other", error.what()};
  }
  return thrown;
}

// Where rank 0 works for all (the directory checks of the constructor, the
// listing of restore_latest), a failure that is not a lockstep::Error
// reaches every rank as an IoError instead of leaving them waiting.
TEST(CheckpointFaults, AFailureOfRankZeroReachesEveryRank) {
  const MPI_Comm world = runtime().comm();
  for (const auto fault : {Fault::kFilesystemError, Fault::kOutOfMemory}) {
    const bool filesystem = fault == Fault::kFilesystemError;
    SCOPED_TRACE(filesystem ? "filesystem_error" : "bad_alloc");
    const auto dir = fresh_dir(filesystem ? "rank0-filesystem" : "rank0-memory", world);
    const std::string expected = filesystem ? "injected failure" : "bad_alloc";
    auto env = std::make_shared<FaultInjectionEnv>();
    if (runtime().rank() == 0) env->arm(fault);
    const Thrown constructing =
        thrown_by([&] { Checkpointer checkpointer(world, {.dir = dir, .env = env}); });
    EXPECT_EQ(constructing.type, "IoError") << constructing.message;
    EXPECT_NE(constructing.message.find("rank 0: "), std::string::npos) << constructing.message;
    EXPECT_NE(constructing.message.find(expected), std::string::npos) << constructing.message;

    Checkpointer checkpointer(world, {.dir = dir, .env = env});
    TestModel model = large_model();
    auto state = model.state();
    if (runtime().rank() == 0) env->arm(fault, dir.filename().string());
    const Thrown listing = thrown_by([&] { checkpointer.restore_latest(state); });
    EXPECT_EQ(listing.type, "IoError") << listing.message;
    EXPECT_NE(listing.message.find(expected), std::string::npos) << listing.message;
    // Nothing is left armed: the next restore finds nothing to load.
    EXPECT_EQ(checkpointer.restore_latest(state), std::nullopt);
  }
}

// A save whose staging fails on one rank only (a bad name, another step,
// another state) fails on every rank with the same error, before any
// background writer starts; the Checkpointer then saves normally.
TEST(CheckpointFaults, AStagingFailureOfOneRankFailsTheSaveOnEveryRank) {
  const MPI_Comm world = runtime().comm();
  const bool odd_one = runtime().rank() == runtime().world_size() - 1;
  for (const bool async : {true, false}) {
    SCOPED_TRACE(async ? "async" : "sync");
    const auto dir = fresh_dir(async ? "staging-async" : "staging-sync", world);
    Checkpointer checkpointer(world, {.dir = dir, .async = async});
    TestModel model = large_model();
    model.fill_all(1);
    checkpointer.save(1, model.state());

    TestModel bad = large_model();
    bad.model.push_back(Tensor::allocate("../escape", DType::kF32, {2}));
    Thrown thrown = thrown_by([&] { checkpointer.save(2, (odd_one ? bad : model).state()); });
    EXPECT_EQ(thrown.type, "UsageError") << thrown.message;
    EXPECT_NE(thrown.message.find("../escape"), std::string::npos) << thrown.message;

    thrown = thrown_by([&] { checkpointer.save(odd_one ? -1 : 2, model.state()); });
    EXPECT_EQ(thrown.type, "UsageError") << thrown.message;
    EXPECT_NE(thrown.message.find("negative"), std::string::npos) << thrown.message;

    if (runtime().world_size() > 1) {
      // Valid on every rank, but not alike: another step, another shape.
      thrown = thrown_by([&] { checkpointer.save(odd_one ? 3 : 2, model.state()); });
      EXPECT_EQ(thrown.type, "UsageError") << thrown.message;
      EXPECT_NE(thrown.message.find("different steps or states"), std::string::npos)
          << thrown.message;
      TestModel other = large_model();
      other.model[0] = Tensor::allocate("weight", DType::kF32, {1 << 10});
      thrown = thrown_by([&] { checkpointer.save(2, (odd_one ? other : model).state()); });
      EXPECT_EQ(thrown.type, "UsageError") << thrown.message;
    }

    model.fill_all(4);
    checkpointer.save(4, model.state());
    checkpointer.wait();
    EXPECT_EQ(checkpointer.committed_steps(), steps({1, 4}));
    auto state = model.state();
    model.fill_all(9);
    EXPECT_EQ(checkpointer.restore_latest(state), 4);
    EXPECT_EQ(model.mismatch(4), "");
  }
}

// An asynchronous save that one rank cannot stage (no memory for its
// plan or staging buffer, as under RLIMIT_AS) returns on every rank without
// waiting for the slowest copy; every rank then throws the same IoError at
// its next call, nothing of the step is committed, and the Checkpointer
// saves normally afterwards.
TEST(CheckpointFaults, ACopyThatFailsOnOneRankFailsTheSaveOnEveryRankAtTheNextCall) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator cannot run under an address-space limit";
#else
  const MPI_Comm world = runtime().comm();
  const int odd_one = runtime().world_size() - 1;
  const auto dir = fresh_dir("staging-memory", world);
  Checkpointer checkpointer(world, {.dir = dir, .async = true});
  TestModel model = large_model();
  model.fill_all(1);
  checkpointer.save(1, model.state());
  checkpointer.wait();

  // A state whose plan and staging buffer grow beyond 32 MB at up to 4
  // ranks, which malloc takes from new address space (not from memory
  // that earlier tests freed).
  TestModel big = large_model();
  big.model.push_back(Tensor::allocate("embedding", DType::kF32, {1 << 26}));
  big.fill_all(2);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &old_limit), 0);
  if (runtime().rank() == odd_one) {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0;
    statm >> pages;
    ASSERT_GT(pages, 0U);
    rlimit tight = old_limit;
    tight.rlim_cur = pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) + (16U << 20);
    ASSERT_EQ(::setrlimit(RLIMIT_AS, &tight), 0);
  }
  const Thrown at_save = thrown_by([&] { checkpointer.save(2, big.state()); });
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &old_limit), 0);
  EXPECT_EQ(at_save.type, "(nothing)") << at_save.message;
  const Thrown at_wait = thrown_by([&] { checkpointer.wait(); });
  EXPECT_EQ(at_wait.type, "IoError") << at_wait.message;
  EXPECT_NE(at_wait.message.find("step 2 was not saved"), std::string::npos) << at_wait.message;
  EXPECT_NE(at_wait.message.find(fmt::format("rank {}", odd_one)), std::string::npos)
      << at_wait.message;
  EXPECT_EQ(checkpointer.committed_steps(), steps({1}));
  // Thrown once: the next save goes ahead.
  big.fill_all(3);
  checkpointer.save(3, big.state());
  checkpointer.wait();
  EXPECT_EQ(checkpointer.committed_steps(), steps({1, 3}));
  auto state = big.state();
  big.fill_all(9);
  EXPECT_EQ(checkpointer.restore_latest(state), 3);
  EXPECT_EQ(big.mismatch(3), "");
#endif
}

// A restore into a state that does not fit the checkpoint on one rank only
// fails on every rank (UsageError) instead of leaving the others waiting.
TEST(CheckpointFaults, AStateThatDoesNotFitOnOneRankFailsTheRestoreOnEveryRank) {
  const MPI_Comm world = runtime().comm();
  const bool odd_one = runtime().rank() == runtime().world_size() - 1;
  const auto dir = fresh_dir("restore-mismatch", world);
  Checkpointer checkpointer(world, {.dir = dir, .async = false});
  TestModel model = large_model();
  model.fill_all(1);
  checkpointer.save(1, model.state());
  TestModel other = large_model();
  other.model[1] = Tensor::allocate("bias", DType::kF32, {18});
  auto state = (odd_one ? other : model).state();
  const Thrown thrown = thrown_by([&] { checkpointer.restore_latest(state); });
  EXPECT_EQ(thrown.type, "UsageError") << thrown.message;
  EXPECT_NE(thrown.message.find("model/bias"), std::string::npos) << thrown.message;
  auto fitting = model.state();
  model.fill_all(2);
  EXPECT_EQ(checkpointer.restore_latest(fitting), 1);
  EXPECT_EQ(model.mismatch(1), "");
}

// Saving a step again moves the committed copy aside before the new one is
// renamed into place. A crash in between leaves no step-<N>: the next
// Checkpointer puts the moved copy back instead of deleting it.
TEST(CheckpointFaults, ACrashWhileAStepIsReplacedKeepsTheCommittedCopy) {
  const MPI_Comm world = runtime().comm();
  const auto dir = fresh_dir("crash-replacing", world);
  auto env = std::make_shared<FaultInjectionEnv>();
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world, {.dir = dir, .async = false, .env = env});
    model.fill_all(1);
    checkpointer.save(4, model.state());
    // Only the rename into step-4 itself, not the one to step-4.replaced-*.
    if (runtime().rank() == 0) {
      env->arm(Fault::kCrashBeforeRename, "step-4", FaultInjectionEnv::Match::kEndsWith);
    }
    model.fill_all(2);
    const Thrown thrown = thrown_by([&] { checkpointer.save(4, model.state()); });
    EXPECT_EQ(thrown.type, "IoError") << thrown.message;
    EXPECT_NE(thrown.message.find("simulated crash"), std::string::npos) << thrown.message;
    if (runtime().rank() == 0) {
      const auto entries = directory_entries(dir);
      EXPECT_EQ(std::count(entries.begin(), entries.end(), "step-4"), 0) << "no crash window";
      EXPECT_EQ(std::count_if(
                    entries.begin(), entries.end(),
                    [](const std::string& name) { return name.starts_with("step-4.replaced-"); }),
                1);
    }
  }
  MPI_Barrier(world);
  Checkpointer restarted(world, {.dir = dir});
  if (runtime().rank() == 0) {
    EXPECT_EQ(directory_entries(dir), (std::vector<std::string>{"step-4"}));
  }
  model.fill_all(9);
  auto state = model.state();
  EXPECT_EQ(restarted.restore_latest(state), 4);
  EXPECT_EQ(model.mismatch(1), "");
}

// The commit is the rename made durable by an fsync of the directory: when
// that fsync fails, the save fails on every rank, the new copy is taken out
// of sight again (the old copy of a step saved again is put back) and
// retention keeps what it would have dropped.
TEST(CheckpointFaults, AFailedDirectorySyncAfterTheRenameFailsTheSave) {
  const MPI_Comm world = runtime().comm();
  for (const bool async : {false, true}) {
    for (const bool again : {false, true}) {
      SCOPED_TRACE(fmt::format("{}, {}", async ? "async" : "sync",
                               again ? "the same step again" : "a new step"));
      const auto dir = fresh_dir(
          fmt::format("dir-sync-{}-{}", async ? "async" : "sync", again ? "again" : "new"), world);
      auto env = std::make_shared<FaultInjectionEnv>();
      TestModel model = large_model();
      {
        Checkpointer checkpointer(world, {.dir = dir, .keep_last = 1, .async = async, .env = env});
        model.fill_all(1);
        checkpointer.save(1, model.state());
        checkpointer.wait();
        // The checkpoint directory itself, not the step's temporary one.
        if (runtime().rank() == 0) {
          env->arm(Fault::kDirectorySyncError, dir.filename().string(),
                   FaultInjectionEnv::Match::kEndsWith);
        }
        model.fill_all(2);
        const Thrown thrown = thrown_by([&] {
          checkpointer.save(again ? 1 : 2, model.state());
          checkpointer.wait();
        });
        EXPECT_EQ(thrown.type, "IoError") << thrown.message;
        EXPECT_NE(thrown.message.find("was not committed"), std::string::npos) << thrown.message;
        EXPECT_NE(thrown.message.find("fsync of directory"), std::string::npos) << thrown.message;
        EXPECT_EQ(checkpointer.committed_steps(), steps({1}));
      }
      MPI_Barrier(world);
      Checkpointer restarted(world, {.dir = dir});
      if (runtime().rank() == 0) {
        EXPECT_EQ(directory_entries(dir), (std::vector<std::string>{"step-1"}));
      }
      model.fill_all(9);
      auto state = model.state();
      EXPECT_EQ(restarted.restore_latest(state), 1);
      EXPECT_EQ(model.mismatch(1), "");
    }
  }
}

}  // namespace
}  // namespace lockstep::testing
