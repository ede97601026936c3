// The memory tier: every save's rank files also in a directory on each
// node's own memory (tmpfs such as /dev/shm), which outlives the processes
// but not the node. Each node holds the files of its own ranks, a partner
// copy of the files of the node before it, and the step's metadata; a
// step there counts only once every node committed it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <mpi.h>

#include "lockstep/file_env.h"
#include "memory_transfer.h"
#include "save_job.h"

namespace lockstep::checkpoint {

// The file in a checkpoint directory that holds the run's id, which its
// memory directories record: a memory step of another id is not this run's.
inline constexpr char kMemoryTierIdFile[] = ".memory-tier-id";

// The id of the run whose checkpoints are `checkpoint_dir`: read, or made
// and stored there when missing (a new or emptied directory).
std::string memory_tier_id(FileEnv& env, const std::filesystem::path& checkpoint_dir);

// A shared lock on a memory directory that the Checkpointer of a live run
// holds, so that no other run takes the directory for a stale one.
class MemoryTierLock {
 public:
  MemoryTierLock() = default;
  explicit MemoryTierLock(int fd) : fd_(fd) {}
  MemoryTierLock(const MemoryTierLock&) = delete;
  MemoryTierLock& operator=(const MemoryTierLock&) = delete;
  MemoryTierLock(MemoryTierLock&& other) noexcept;
  MemoryTierLock& operator=(MemoryTierLock&& other) noexcept;
  ~MemoryTierLock();

 private:
  int fd_ = -1;
};

// Creates `dir` when missing (mode 0700) and makes sure no other local user
// can put files there or swap it: `dir` must be a directory (not a link)
// owned by this user, writable by no one else, in a parent owned by this
// user or by root with the sticky bit (as /dev/shm). Records `owner` and
// `id` in it, locks it for this Checkpointer's life, and removes this
// user's memory directories beside it ("<uid>-*") that no live run holds
// and whose checkpoint directory no longer exists. Then prepares the
// node's directory `dir`/`node` (made by memory_node_name()): removes what
// crashed saves left there, and the steps of another run (another `owner`,
// the checkpoint directory on disk, or another `id`). Throws IoError saying
// what is wrong and what to do.
MemoryTierLock prepare_memory_dir(FileEnv& env, const std::filesystem::path& dir,
                                  const std::filesystem::path& owner, const std::string& id,
                                  const std::string& node);

// Bytes free to this user on the file system of `dir`; 0 when unknown.
std::uint64_t free_bytes(const std::filesystem::path& dir);

// Collective over `comm`. Writes this rank's file of `staged` into a
// temporary directory in `node_dir` (this rank's node's directory) and
// sends a copy of it to its partner on the next node (`nodes`), which
// writes it beside its own; rank 0 builds the metadata; the first rank of
// each node (`node_comm`) writes it and the master file there and commits
// the step with one rename, then keeps the newest `keep` steps of its
// node. Throws IoError, the same on every rank, when some file or partner
// copy did not arrive whole or some node did not commit (its copy is then
// removed, so the step is nowhere complete). Returns the bytes this rank
// wrote.
std::uint64_t write_and_commit_local(StagedSave& staged, MPI_Comm comm, MPI_Comm node_comm,
                                     const NodeMap& nodes, FileEnv& env,
                                     const std::filesystem::path& node_dir, int keep);

}  // namespace lockstep::checkpoint
