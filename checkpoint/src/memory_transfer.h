// The memory tier across nodes: which ranks share a node, which rank on
// another node keeps a partner copy of each rank's file, and moving files
// between ranks over MPI (partner copies at a save, missing copies at a
// restore).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <mpi.h>

#include "lockstep/file_env.h"

namespace lockstep::checkpoint {

// `requested` when it can name a directory (letters, digits, '.', '_', '-',
// not starting with '.', at most 64 characters); else "node-" and a hash
// of it, so that no node name can lead outside the memory directory.
std::string memory_node_name(const std::string& requested);

// The nodes of a communicator, ordered by their lowest rank.
struct NodeMap {
  std::vector<int> node_of;             // per rank
  std::vector<std::vector<int>> ranks;  // per node, ascending

  int nodes() const { return static_cast<int>(ranks.size()); }
  // The rank that keeps `rank`'s partner copy: on the next node (the first
  // after the last), the rank of the same place there (modulo that node's
  // ranks); -1 when there is one node only.
  int partner(int rank) const;
  // The ranks whose partner is `rank`, ascending.
  std::vector<int> partners_of(int rank) const;
};

// Collective over `comm`: the nodes, from every rank's node name.
NodeMap node_map(MPI_Comm comm, const std::string& node_name);

// One file moved from rank `from` (its file `source`) to rank `to` (into
// its file `target`, created or truncated). A sender that still holds the
// file's bytes in memory gives them as `contents` (in file order, alive
// and unchanged until move_files() returns) with their CRC-32C `crc32c`:
// they are sent from where they are, and `source` only names the file in
// messages.
struct FileTransfer {
  int from = 0;
  int to = 0;
  std::filesystem::path source = {};
  std::filesystem::path target = {};
  std::vector<std::span<const std::byte>> contents = {};
  std::uint32_t crc32c = 0;
};

// Point to point over `comm`: moves every transfer this rank takes part in
// (as sender or receiver), all at once, in parts of a few MiB; the sender
// and the receiver of each must pass it in the same order among the
// transfers between the two of them. Every byte is checked against the
// sender's CRC-32C of what it read (or of its `contents`, given with them).
// Returns what failed on this rank's side
// (a file that cannot be read or written, bytes that arrived damaged), or
// an empty string; never leaves a peer waiting. Adds the bytes written to
// `bytes_written`.
std::string move_files(MPI_Comm comm, FileEnv& env, const std::vector<FileTransfer>& transfers,
                       std::uint64_t& bytes_written);

}  // namespace lockstep::checkpoint
