// The memory tier: every save in node-local memory, every K-th also on
// disk; a restore takes the newest step every rank holds in memory unless
// the disk has a newer one; a damaged or missing memory copy falls back;
// a state over budget, or a directory another user could tamper with,
// leaves the tier off and the saves on disk.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lockstep/checkpointer.h>

#include "checkpoint_test_util.h"
#include "crc32c.h"
#include "memory_transfer.h"
#include "mpi_test.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::large_model;
using testing::runtime;
using testing::TestModel;

MPI_Comm world() { return runtime().comm(); }
int rank() { return runtime().rank(); }

// A memory directory on /dev/shm for one test, empty, the same on every
// rank (named after rank 0's process).
fs::path memory_dir(const std::string& name) {
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, world());
  const fs::path dir = fs::path("/dev/shm") / fmt::format("lockstep-test-{}", pid) / name;
  if (rank() == 0) fs::remove_all(dir);
  MPI_Barrier(world());
  return dir;
}

struct MemoryTierTest : ::testing::Test {
  ~MemoryTierTest() override {
    MPI_Barrier(world());
    int pid = static_cast<int>(::getpid());
    MPI_Bcast(&pid, 1, MPI_INT, 0, world());
    if (rank() == 0) fs::remove_all(fs::path("/dev/shm") / fmt::format("lockstep-test-{}", pid));
  }
};

// Saves steps first..last with the values of seed == step.
void save_steps(Checkpointer& checkpointer, TestModel& model, int first, int last) {
  for (int step = first; step <= last; ++step) {
    model.fill_all(static_cast<std::uint64_t>(step));
    checkpointer.save(step, model.state());
  }
  checkpointer.wait();
}

std::vector<std::int64_t> committed(const fs::path& dir) {
  std::vector<std::int64_t> steps;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos) {
      steps.push_back(std::stoll(name.substr(5)));
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

// Flips one bit in the middle of the largest piece of rank file `file` of
// `step_dir`, found through its metadata.
void flip_in_largest_piece(const fs::path& step_dir, int file) {
  const auto metadata = nlohmann::json::parse(std::ifstream(step_dir / "metadata.json"));
  std::int64_t offset = -1;
  std::int64_t largest = 0;
  for (const auto& tensor : metadata.at("tensors")) {
    for (const auto& piece : tensor.at("pieces")) {
      if (piece.at("file") == file && piece.at("count").get<std::int64_t>() > largest) {
        largest = piece.at("count").get<std::int64_t>();
        offset = piece.at("offset").get<std::int64_t>();
      }
    }
  }
  ASSERT_GE(offset, 0);
  std::fstream data(step_dir / fmt::format("rank-{:05d}.h5", file),
                    std::ios::in | std::ios::out | std::ios::binary);
  data.seekg(offset + largest / 2);
  const char byte = static_cast<char>(data.get());
  data.seekp(offset + largest / 2);
  data.put(static_cast<char>(byte ^ 0x04));
}

// The node every rank names, unless a test makes several.
constexpr char kNode[] = "host";

CheckpointOptions tiered(const fs::path& disk, const fs::path& memory, int disk_every,
                         const std::string& node = kNode) {
  return {.dir = disk,
          .keep_last = 0,
          .async = true,
          .memory_dir = memory,
          .node = node,
          .memory_keep = 2,
          .disk_every = disk_every};
}

TEST_F(MemoryTierTest, EverySaveInMemoryEveryKthOnDiskAndTheNewestRestoresFromMemory) {
  const fs::path disk = fresh_dir("memory-tier", world());
  const fs::path memory = memory_dir("tier");
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 3));
    ASSERT_TRUE(checkpointer.memory_tier_on());
    save_steps(checkpointer, model, 1, 7);
    EXPECT_TRUE(checkpointer.last_save_stats().in_memory);
    EXPECT_TRUE(checkpointer.last_save_stats().on_disk);  // the 7th save: 7 = 1 + 2 * 3
  }
  if (rank() == 0) {
    EXPECT_EQ(committed(memory / kNode), (std::vector<std::int64_t>{6, 7})) << "the newest two";
    EXPECT_EQ(committed(disk), (std::vector<std::int64_t>{1, 4, 7})) << "every third save";
    EXPECT_EQ(fs::status(memory).permissions() & fs::perms::all, fs::perms::owner_all);
  }
  MPI_Barrier(world());
  TestModel restored = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 3));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(7));
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(7), "");
  // A step in memory only.
  checkpointer.restore(6, state);
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(6), "");
}

TEST_F(MemoryTierTest, DamagedOrMissingMemoryCopiesFallBack) {
  const fs::path disk = fresh_dir("memory-fallback", world());
  const fs::path memory = memory_dir("fallback");
  TestModel model = large_model();
  {
    // Disk: step 1 only (every 100th save).
    Checkpointer checkpointer(world(), tiered(disk, memory, 100));
    save_steps(checkpointer, model, 1, 5);
  }
  const int last = runtime().world_size() - 1;
  if (rank() == 0) flip_in_largest_piece(memory / kNode / "step-5", last);
  MPI_Barrier(world());
  TestModel restored = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 100));
    auto state = restored.state();
    ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(4));
    EXPECT_TRUE(checkpointer.last_restore_from_memory());
    EXPECT_EQ(restored.mismatch(4), "");
    ASSERT_EQ(checkpointer.skipped_checkpoints().size(), 1U);
    EXPECT_NE(checkpointer.skipped_checkpoints()[0].find("memory tier"), std::string::npos);
    EXPECT_NE(checkpointer.skipped_checkpoints()[0].find("checksum mismatch"), std::string::npos)
        << checkpointer.skipped_checkpoints()[0];
  }
  // A node lost with its memory: one rank's files gone from every step.
  if (rank() == 0) {
    for (const auto step : committed(memory / kNode)) {
      fs::remove(memory / kNode / fmt::format("step-{}", step) /
                 fmt::format("rank-{:05d}.h5", last));
    }
  }
  MPI_Barrier(world());
  Checkpointer checkpointer(world(), tiered(disk, memory, 100));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(1));
  EXPECT_FALSE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(1), "");
}

TEST_F(MemoryTierTest, OverBudgetSavesGoToDiskOnly) {
  const fs::path disk = fresh_dir("memory-budget", world());
  const fs::path memory = memory_dir("budget");
  TestModel model = large_model();
  CheckpointOptions options = tiered(disk, memory, 3);
  options.memory_budget_bytes = 4096;
  Checkpointer checkpointer(world(), options);
  save_steps(checkpointer, model, 1, 3);
  EXPECT_FALSE(checkpointer.memory_tier_on());
  EXPECT_FALSE(checkpointer.last_save_stats().in_memory);
  EXPECT_TRUE(checkpointer.last_save_stats().on_disk);
  if (rank() == 0) {
    EXPECT_TRUE(committed(memory / kNode).empty());
    EXPECT_EQ(committed(disk), (std::vector<std::int64_t>{1, 2, 3}));
  }
}

// The memory tier straight in /dev/shm (root's, sticky, open to all) is
// accepted, whoever runs it.
TEST_F(MemoryTierTest, ADirectoryInDevShmItselfIsAccepted) {
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, world());
  const fs::path memory = fs::path("/dev/shm") / fmt::format("lockstep-test-direct-{}", pid);
  const fs::path disk = fresh_dir("memory-direct", world());
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 2));
    EXPECT_TRUE(checkpointer.memory_tier_on());
    TestModel model = large_model();
    save_steps(checkpointer, model, 1, 2);
    EXPECT_TRUE(checkpointer.last_save_stats().in_memory);
  }
  MPI_Barrier(world());
  if (rank() == 0) fs::remove_all(memory);
}

// A checkpoint directory emptied to begin afresh gets a new run id: the
// memory copies of the old run are discarded, not resumed.
TEST_F(MemoryTierTest, AFreshStartIgnoresTheOldRunsMemory) {
  const fs::path disk = fresh_dir("memory-fresh", world());
  const fs::path memory = memory_dir("fresh");
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 100));
    save_steps(checkpointer, model, 1, 3);
  }
  if (rank() == 0) fs::remove_all(disk);
  MPI_Barrier(world());
  Checkpointer checkpointer(world(), tiered(disk, memory, 100));
  auto state = model.state();
  EXPECT_EQ(checkpointer.restore_latest(state), std::nullopt);
  if (rank() == 0) {
    EXPECT_TRUE(committed(memory / kNode).empty());
  }
}

// A newer step on disk that fails its checks does not hide an intact older
// step in memory.
TEST_F(MemoryTierTest, ADamagedNewerDiskStepFallsBackToMemory) {
  const fs::path disk = fresh_dir("memory-newer-disk", world());
  const fs::path memory = memory_dir("newer-disk");
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 100));
    save_steps(checkpointer, model, 1, 7);  // disk: step 1; memory: 6 and 7
    model.fill_all(8);
    checkpointer.save_to_disk(8, model.state());
    checkpointer.wait();
  }
  if (rank() == 0) {
    flip_in_largest_piece(disk / "step-8", 0);
    fs::remove_all(memory / kNode / "step-8");  // as if the node lost it
  }
  MPI_Barrier(world());
  Checkpointer checkpointer(world(), tiered(disk, memory, 100));
  TestModel restored = large_model();
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(7));
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(7), "");
}

// A run's memory directory records the run's checkpoint directory; a later
// Checkpointer removes this user's memory directories whose run is gone,
// and a run that ends removes its own.
TEST_F(MemoryTierTest, FinishedAndVanishedRunsLeaveNothingInMemory) {
  const fs::path base = memory_dir("runs");
  const fs::path disk = fresh_dir("memory-runs", world());
  const std::string uid = std::to_string(::geteuid());
  if (rank() == 0) {
    fs::create_directories(base / (uid + "-gone"));
    std::ofstream(base / (uid + "-gone") / ".owner") << (disk / "no-such-run").string() << "\nid\n";
    fs::create_directories(base / (uid + "-alive"));
    std::ofstream(base / (uid + "-alive") / ".owner") << disk.string() << "\nid\n";
  }
  MPI_Barrier(world());
  Checkpointer checkpointer(world(), tiered(disk, base / (uid + "-mine"), 2));
  ASSERT_TRUE(checkpointer.memory_tier_on());
  if (rank() == 0) {
    EXPECT_FALSE(fs::exists(base / (uid + "-gone"))) << "its run's checkpoints are gone";
    EXPECT_TRUE(fs::exists(base / (uid + "-alive")));
  }
  TestModel model = large_model();
  save_steps(checkpointer, model, 1, 2);  // step 2 in memory only
  EXPECT_FALSE(checkpointer.last_save_stats().on_disk);
  model.fill_all(3);
  checkpointer.save_to_disk(3, model.state());
  checkpointer.wait();
  EXPECT_TRUE(checkpointer.last_save_stats().on_disk);
  checkpointer.discard_memory_tier();
  EXPECT_FALSE(checkpointer.memory_tier_on());
  if (rank() == 0) {
    EXPECT_FALSE(fs::exists(base / (uid + "-mine")));
    EXPECT_EQ(committed(disk), (std::vector<std::int64_t>{1, 3}));
  }
}

// Directories another local user could write into, or that are not this
// user's: the tier stays off, every save goes to disk.
TEST_F(MemoryTierTest, DirectoriesOthersCouldTamperWithAreRefused) {
  const fs::path base = memory_dir("hostile");
  if (rank() == 0) {
    fs::create_directories(base / "open");
    fs::permissions(base / "open", fs::perms::all);  // 0777, no sticky bit
    fs::create_directories(base / "elsewhere");
    fs::create_directory_symlink(base / "elsewhere", base / "link");
    if (::geteuid() == 0) {  // a directory of another user: only root can make one
      fs::create_directories(base / "theirs");
      ASSERT_EQ(::chown((base / "theirs").c_str(), 65534, 65534), 0);  // nobody
    }
  }
  MPI_Barrier(world());
  // A step with valid checksums, as another user could plant it.
  {
    const fs::path planted_disk = fresh_dir("memory-planted", world());
    Checkpointer planter(world(), tiered(planted_disk, base / "good", 100));
    TestModel model = large_model();
    save_steps(planter, model, 9, 9);
  }
  std::vector<fs::path> refused = {base / "open" / "tier", base / "link"};
  if (::geteuid() == 0) refused.push_back(base / "theirs");
  for (const fs::path& memory : refused) {
    if (rank() == 0) {
      fs::create_directories(memory / kNode / "step-9");
      fs::copy(base / "good" / kNode / "step-9", memory / kNode / "step-9",
               fs::copy_options::recursive);
    }
    MPI_Barrier(world());
    const fs::path disk = fresh_dir("memory-hostile", world());
    {
      Checkpointer checkpointer(world(), tiered(disk, memory, 3));
      EXPECT_FALSE(checkpointer.memory_tier_on()) << memory;
      TestModel model = large_model();
      save_steps(checkpointer, model, 1, 2);
      EXPECT_TRUE(checkpointer.last_save_stats().on_disk) << memory;
      // Nothing is removed through a refused directory either.
      checkpointer.discard_memory_tier();
      if (rank() == 0) {
        EXPECT_EQ(committed(disk), (std::vector<std::int64_t>{1, 2})) << memory;
        EXPECT_TRUE(fs::exists(memory / kNode / "step-9")) << memory;
      }
    }
    Checkpointer checkpointer(world(), tiered(disk, memory, 3));
    TestModel restored = large_model();
    auto state = restored.state();
    EXPECT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(2))
        << "the planted step in " << memory << " was loaded";
    EXPECT_FALSE(checkpointer.last_restore_from_memory());
    MPI_Barrier(world());
  }
}

// Two "nodes" of two ranks each, as the memory tier tells them apart.
std::string two_nodes() { return rank() < 2 ? "n0" : "n1"; }

// The rank files in `step_dir`, by rank.
std::vector<int> rank_files(const fs::path& step_dir) {
  std::vector<int> ranks;
  for (int r = 0; r < runtime().world_size(); ++r) {
    if (fs::exists(step_dir / fmt::format("rank-{:05d}.h5", r))) ranks.push_back(r);
  }
  return ranks;
}

// Saves steps 1..5 as two nodes (memory: steps 4 and 5; disk: every
// `disk_every`-th save) and waits until every node leader is done.
void save_five_on_two_nodes(const fs::path& disk, const fs::path& memory, int disk_every = 100) {
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, disk_every, two_nodes()));
    save_steps(checkpointer, model, 1, 5);
  }
  MPI_Barrier(world());
}

// Each node keeps its own ranks' files and a partner copy of the other
// node's; a node lost with its memory gets its ranks' files back from the
// partner copies, and the restore is exact.
TEST_F(MemoryTierTest, PartnerCopiesBringBackALostNode) {
  ASSERT_EQ(runtime().world_size(), 4);
  const fs::path disk = fresh_dir("memory-partner", world());
  const fs::path memory = memory_dir("partner");
  TestModel model = large_model();
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 100, two_nodes()));
    save_steps(checkpointer, model, 1, 5);  // disk: step 1; memory: 4 and 5
    EXPECT_TRUE(checkpointer.last_save_stats().in_memory);
  }
  MPI_Barrier(world());  // every node leader is done with retention
  if (rank() == 0) {
    for (const char* node : {"n0", "n1"}) {
      EXPECT_EQ(committed(memory / node), (std::vector<std::int64_t>{4, 5})) << node;
      EXPECT_EQ(rank_files(memory / node / "step-5"), (std::vector<int>{0, 1, 2, 3}))
          << node << " holds its own files and the other node's";
    }
    fs::remove_all(memory / "n1");  // the node and its memory are gone
  }
  MPI_Barrier(world());
  TestModel restored = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 100, two_nodes()));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(5));
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(5), "");
  if (rank() == 0) {
    EXPECT_EQ(rank_files(memory / "n1" / "step-5"), (std::vector<int>{2, 3}))
        << "the lost node's files are back on it";
  }
}

// A partner copy that is damaged is never loaded: the restore falls back to
// an older step whose copies pass their checks.
TEST_F(MemoryTierTest, ADamagedPartnerCopyIsSkipped) {
  const fs::path disk = fresh_dir("memory-partner-damaged", world());
  const fs::path memory = memory_dir("partner-damaged");
  save_five_on_two_nodes(disk, memory);
  if (rank() == 0) {
    fs::remove_all(memory / "n1");
    flip_in_largest_piece(memory / "n0" / "step-5", 3);  // the partner copy of rank 3
  }
  MPI_Barrier(world());
  TestModel restored = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 100, two_nodes()));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(4));
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(4), "");
  ASSERT_EQ(checkpointer.skipped_checkpoints().size(), 1U);
  EXPECT_NE(checkpointer.skipped_checkpoints()[0].find("checksum mismatch"), std::string::npos)
      << checkpointer.skipped_checkpoints()[0];
}

// A truncated or linked own copy does not hide the partner copy on the
// other node: the node fetches it in its place.
TEST_F(MemoryTierTest, ATruncatedOrLinkedOwnCopyIsReplacedByThePartnerCopy) {
  const fs::path disk = fresh_dir("memory-partner-truncated", world());
  const fs::path memory = memory_dir("partner-truncated");
  save_five_on_two_nodes(disk, memory);
  if (rank() == 0) {
    fs::resize_file(memory / "n1" / "step-5" / "rank-00002.h5", 100);
    // A link in place of an own copy, to a file of the right size and
    // bytes, is not taken for the copy either.
    const fs::path own = memory / "n1" / "step-5" / "rank-00003.h5";
    fs::rename(own, memory / "elsewhere.h5");
    fs::create_symlink(memory / "elsewhere.h5", own);
  }
  MPI_Barrier(world());
  TestModel restored = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 100, two_nodes()));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(5));
  EXPECT_TRUE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(5), "");
  EXPECT_TRUE(checkpointer.skipped_checkpoints().empty());
}

// After a restore of an older step, the memory tier's newer steps are of
// an abandoned future: the next save removes them, rather than retention
// (which keeps the highest numbers) removing the new save.
TEST_F(MemoryTierTest, ASaveAfterGoingBackDropsTheAbandonedSteps) {
  const fs::path disk = fresh_dir("memory-rollback", world());
  const fs::path memory = memory_dir("rollback");
  TestModel model = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 1));
  save_steps(checkpointer, model, 1, 5);  // memory: 4 and 5
  auto state = model.state();
  checkpointer.restore(2, state);
  EXPECT_EQ(model.mismatch(2), "");
  save_steps(checkpointer, model, 3, 3);
  MPI_Barrier(world());
  if (rank() == 0) {
    EXPECT_EQ(committed(memory / kNode), (std::vector<std::int64_t>{3}));
  }
}

// Both copies of a rank's file gone (two nodes lost at once): the memory
// tier cannot put the step together, and the disk's step is restored.
TEST_F(MemoryTierTest, BothCopiesLostFallsBackToDisk) {
  const fs::path disk = fresh_dir("memory-partner-both", world());
  const fs::path memory = memory_dir("partner-both");
  save_five_on_two_nodes(disk, memory, 3);  // disk: steps 1 and 4
  if (rank() == 0) {
    fs::remove_all(memory / "n1");
    for (const auto step : committed(memory / "n0")) {
      fs::remove(memory / "n0" / fmt::format("step-{}", step) / "rank-00002.h5");
    }
  }
  MPI_Barrier(world());
  TestModel restored = large_model();
  Checkpointer checkpointer(world(), tiered(disk, memory, 3, two_nodes()));
  auto state = restored.state();
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(4));
  EXPECT_FALSE(checkpointer.last_restore_from_memory());
  EXPECT_EQ(restored.mismatch(4), "");
}

// Saved by 4 ranks on two nodes, restored by the 2 ranks of one of them
// (the other node left out): that node holds every file, its own and the
// partner copies, and the restore reads them from memory.
TEST_F(MemoryTierTest, ASmallerWorldOnOneNodeRestoresFromMemory) {
  const fs::path disk = fresh_dir("memory-partner-smaller", world());
  const fs::path memory = memory_dir("partner-smaller");
  save_five_on_two_nodes(disk, memory);
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(world(), rank() < 2 ? 0 : 1, rank(), &half);
  if (rank() < 2) {
    TestModel restored = large_model();
    Checkpointer checkpointer(half, tiered(disk, memory, 100, "n0"));
    auto state = restored.state();
    ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(5));
    EXPECT_TRUE(checkpointer.last_restore_from_memory());
    EXPECT_EQ(restored.mismatch(5), "");
  }
  MPI_Comm_free(&half);
}

// Saved by 4 ranks on two nodes, restored by 3 ranks on the same two nodes
// (one rank fewer on the second), which lost its partner copies: at another
// world size each node needs every file, and gets the missing ones from
// the other node.
TEST_F(MemoryTierTest, AnotherWorldSizeAcrossNodesFetchesEveryFile) {
  const fs::path disk = fresh_dir("memory-partner-resize", world());
  const fs::path memory = memory_dir("partner-resize");
  save_five_on_two_nodes(disk, memory);
  if (rank() == 0) {
    for (const char* name : {"rank-00000.h5", "rank-00001.h5"}) {
      fs::remove(memory / "n1" / "step-5" / name);
    }
  }
  MPI_Barrier(world());
  MPI_Comm three = MPI_COMM_NULL;
  MPI_Comm_split(world(), rank() < 3 ? 0 : 1, rank(), &three);
  if (rank() < 3) {
    TestModel restored = large_model();
    Checkpointer checkpointer(three, tiered(disk, memory, 100, two_nodes()));
    auto state = restored.state();
    ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(5));
    EXPECT_TRUE(checkpointer.last_restore_from_memory());
    EXPECT_EQ(restored.mismatch(5), "");
    MPI_Barrier(three);
    if (rank() == 0) {
      EXPECT_EQ(rank_files(memory / "n1" / "step-5"), (std::vector<int>{0, 1, 2, 3}));
    }
  }
  MPI_Comm_free(&three);
}

// A node name that could lead out of the memory directory is replaced.
TEST_F(MemoryTierTest, ANodeNameCannotLeadOutOfTheMemoryDirectory) {
  const fs::path disk = fresh_dir("memory-node-name", world());
  const fs::path memory = memory_dir("node-name") / "tier";
  {
    Checkpointer checkpointer(world(), tiered(disk, memory, 100, "../escaped"));
    ASSERT_TRUE(checkpointer.memory_tier_on());
    TestModel model = large_model();
    save_steps(checkpointer, model, 1, 1);
    EXPECT_TRUE(checkpointer.last_save_stats().in_memory);
  }
  MPI_Barrier(world());
  if (rank() == 0) {
    EXPECT_FALSE(fs::exists(memory.parent_path() / "escaped"));
    int nodes = 0;
    for (const auto& entry : fs::directory_iterator(memory)) {
      if (entry.path().filename().string().front() == '.') continue;
      ++nodes;
      EXPECT_EQ(entry.path().filename().string().rfind("node-", 0), 0U) << entry.path();
      EXPECT_EQ(committed(entry.path()), (std::vector<std::int64_t>{1}));
    }
    EXPECT_EQ(nodes, 1);
  }
}

// A file sent from the bytes a rank holds (as a partner copy is, from the
// staged save) arrives whole, whatever the segments' sizes: parts inside
// one segment go from where they are, parts across several are gathered.
// A CRC-32C that does not match the bytes fails the transfer on the
// receiver's side and leaves no file there.
TEST_F(MemoryTierTest, FilesSentFromMemoryArriveWholeOrNotAtAll) {
  const fs::path dir = memory_dir("transfer");
  if (rank() == 0) fs::create_directories(dir);
  MPI_Barrier(world());
  constexpr std::size_t kMiB = 1U << 20;
  // Empty segments, one byte, one across the 8 MiB part boundary, one that
  // holds a whole part.
  const std::vector<std::size_t> sizes = {3, 0, 9 * kMiB + 5, 0, 17 * kMiB + 11, 1};
  std::vector<std::vector<std::byte>> held;
  std::vector<std::span<const std::byte>> contents;
  std::vector<std::byte> whole;
  std::uint32_t value = 12345;
  for (const std::size_t size : sizes) {
    auto& segment = held.emplace_back(size);
    for (auto& byte : segment) {
      value = value * 1103515245U + 12345U;
      byte = static_cast<std::byte>(value >> 16);
    }
    contents.emplace_back(segment);
    whole.insert(whole.end(), segment.begin(), segment.end());
  }
  const std::uint32_t crc = checkpoint::crc32c(whole);
  auto env = posix_file_env();
  for (const bool damaged : {false, true}) {
    const fs::path target = dir / (damaged ? "damaged.bin" : "copy.bin");
    std::vector<checkpoint::FileTransfer> transfers = {{.from = 0,
                                                        .to = 1,
                                                        .source = "held",
                                                        .target = target,
                                                        .contents = contents,
                                                        .crc32c = damaged ? crc ^ 1U : crc}};
    std::uint64_t written = 0;
    const std::string error = checkpoint::move_files(world(), *env, transfers, written);
    if (rank() != 1) {
      EXPECT_EQ(error, "");
      continue;
    }
    if (damaged) {
      EXPECT_NE(error.find("arrived damaged"), std::string::npos) << error;
      EXPECT_FALSE(fs::exists(target));
      continue;
    }
    EXPECT_EQ(error, "");
    EXPECT_EQ(written, whole.size());
    std::ifstream in(target, std::ios::binary);
    const std::vector<char> arrived((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    // No ASSERT: rank 0 waits for this rank in the next transfer.
    EXPECT_TRUE(arrived.size() == whole.size() &&
                std::memcmp(arrived.data(), whole.data(), whole.size()) == 0)
        << "the copy differs from the bytes sent";
  }
}

}  // namespace
}  // namespace lockstep
