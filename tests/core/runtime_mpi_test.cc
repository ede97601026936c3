// The runtime under mpiexec: topology agrees with MPI and the launcher's own
// view, and the checkpoint/stop decisions are identical on every rank even
// when only one rank received the signal.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mpi_test.h"

namespace lockstep {
namespace {

using lockstep::testing::runtime;

int env_int(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? -1 : std::atoi(value);
}

std::vector<int> allgather(int value) {
  std::vector<int> all(static_cast<std::size_t>(runtime().world_size()));
  MPI_Allgather(&value, 1, MPI_INT, all.data(), 1, MPI_INT, runtime().comm());
  return all;
}

TEST(Topology, WorldMatchesMpi) {
  int rank = -1;
  int size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(runtime().rank(), rank);
  EXPECT_EQ(runtime().world_size(), size);
}

TEST(Topology, LocalRanksMatchTheLauncher) {
  // mpiexec (Open MPI) tells each process its node-local rank and size.
  ASSERT_NE(env_int("OMPI_COMM_WORLD_LOCAL_RANK"), -1) << "not started by Open MPI's mpiexec";
  EXPECT_EQ(runtime().local_rank(), env_int("OMPI_COMM_WORLD_LOCAL_RANK"));
  EXPECT_EQ(runtime().local_size(), env_int("OMPI_COMM_WORLD_LOCAL_SIZE"));
}

TEST(Topology, NodesPartitionTheWorld) {
  const std::vector<int> node_of = allgather(runtime().node_index());
  const std::vector<int> local_of = allgather(runtime().local_rank());
  const std::vector<int> leaders = allgather(runtime().local_rank() == 0 ? 1 : 0);
  const int counted_nodes = static_cast<int>(std::count(leaders.begin(), leaders.end(), 1));
  EXPECT_EQ(runtime().node_count(), counted_nodes);
  EXPECT_GE(runtime().node_index(), 0);
  EXPECT_LT(runtime().node_index(), runtime().node_count());
  // Ranks on my node have distinct local ranks 0..local_size-1.
  std::vector<int> mine;
  for (std::size_t r = 0; r < node_of.size(); ++r) {
    if (node_of[r] == runtime().node_index()) mine.push_back(local_of[r]);
  }
  std::sort(mine.begin(), mine.end());
  ASSERT_EQ(static_cast<int>(mine.size()), runtime().local_size());
  for (int i = 0; i < runtime().local_size(); ++i) EXPECT_EQ(mine[static_cast<std::size_t>(i)], i);
}

TEST(Topology, HostnameDeviceAndRunDir) {
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  EXPECT_EQ(runtime().hostname(), host.data());
  EXPECT_TRUE(runtime().run_dir().is_absolute());
  EXPECT_TRUE(std::filesystem::is_directory(runtime().run_dir()));
  EXPECT_EQ(runtime().restart_count(), 0);
  if (runtime().device().is_cuda()) {
    EXPECT_EQ(runtime().device().index, runtime().local_rank());
  }
}

TEST(Topology, CommIsPrivateDuplicate) {
  int result = MPI_UNEQUAL;
  MPI_Comm_compare(runtime().comm(), MPI_COMM_WORLD, &result);
  EXPECT_EQ(result, MPI_CONGRUENT) << "same ranks, separate context";
}

// The rank that receives the signal: rank 2 when there is one.
int signalled_rank() { return std::min(2, runtime().world_size() - 1); }

TEST(Decision, CheckpointRequestOnOneRankReachesAll) {
  signals::reset();
  MPI_Barrier(runtime().comm());
  if (runtime().rank() == signalled_rank()) std::raise(SIGUSR1);
  const bool checkpoint = runtime().should_checkpoint(0);
  const bool stop = runtime().should_stop();
  for (const int answer : allgather(checkpoint ? 1 : 0)) EXPECT_EQ(answer, 1);
  for (const int answer : allgather(stop ? 1 : 0)) EXPECT_EQ(answer, 0);
  // The request is served once: the next step takes no checkpoint.
  const bool again = runtime().should_checkpoint(1);
  for (const int answer : allgather(again ? 1 : 0)) EXPECT_EQ(answer, 0);
  EXPECT_FALSE(runtime().should_stop());
}

TEST(Decision, StopRequestOnOneRankStopsAll) {
  signals::reset();
  MPI_Barrier(runtime().comm());
  if (runtime().rank() == signalled_rank()) std::raise(SIGTERM);
  // should_stop() alone takes its own decision.
  const bool stop = runtime().should_stop();
  for (const int answer : allgather(stop ? 1 : 0)) EXPECT_EQ(answer, 1);
  // A stop also asks for a last checkpoint, and stays requested.
  const Decision decision = runtime().decide(5);
  for (const int answer : allgather(decision.checkpoint && decision.stop ? 1 : 0)) {
    EXPECT_EQ(answer, 1);
  }
  signals::reset();
  MPI_Barrier(runtime().comm());
}

TEST(Decision, QuietRanksNeverCheckpointWithoutInterval) {
  signals::reset();
  for (std::int64_t step = 0; step < 20; ++step) {
    EXPECT_FALSE(runtime().should_checkpoint(step)) << step;
    EXPECT_FALSE(runtime().should_stop()) << step;
  }
}

}  // namespace
}  // namespace lockstep
