// Restoring from the memory tier: which steps the nodes can put together
// (each node's own copies, and partner copies on other nodes of the files
// a node lost), and fetching the missing files before the restore reads
// them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <mpi.h>

#include "lockstep/file_env.h"
#include "memory_transfer.h"

namespace lockstep::checkpoint {

// How one step of the memory tier is restored at this world size: the
// files each node lacks and which rank sends each to which.
struct MemoryPlan {
  std::int64_t step = 0;
  int saved_ranks = 0;  // the world size that saved it
  struct Fetch {
    int from = 0;
    int to = 0;
    std::string name = {};  // of the file in the step's directory
  };
  std::vector<Fetch> fetches = {};
  // The saving ranks whose files come from another node (partner copies).
  std::vector<int> partner_copies = {};
  // Whether the restore reads every rank file on each node (one node, or
  // another world size) rather than each rank its own.
  bool every_file_on_each_node = false;
};

// Collective over `comm`. The steps that the ranks' node directories
// (`node_dir` on each rank's node, as `nodes` groups the ranks) can put
// together for a restore by `comm`'s ranks, newest first, the same on
// every rank. With the world that saved a step, spread over several nodes,
// each node needs its own ranks' files; otherwise (one node now, or
// another world size) every node needs every file. A step counts when
// each needed file, the metadata and the master file are on the node or
// on another one.
std::vector<MemoryPlan> plan_memory_restores(MPI_Comm comm, const NodeMap& nodes, FileEnv& env,
                                             const std::filesystem::path& node_dir);

// Collective over `comm`: carries out `plan`'s fetches into each node's
// `node_dir`/step-N (through a leftover-named directory, moved into place
// once every file arrived whole). Returns the first failure, the same on
// every rank, or an empty string.
std::string fetch_missing_files(MPI_Comm comm, const NodeMap& nodes, FileEnv& env,
                                const std::filesystem::path& node_dir, const MemoryPlan& plan);

// "ranks 2-3, 6" for {2, 3, 6}.
std::string rank_ranges(const std::vector<int>& ranks);

}  // namespace lockstep::checkpoint
