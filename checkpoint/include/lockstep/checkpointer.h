// Checkpointer: saves and restores the training state as HDF5 checkpoints in
// <dir>/step-<N>/. Each rank writes about 1/N of the bytes; a step becomes
// visible by one atomic rename after every rank's data is durable; every
// slice carries a CRC-32C that is checked on load; saves can run in a
// background thread. See docs/CHECKPOINTS.md for the format and guarantees.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <mpi.h>

#include <nlohmann/json.hpp>

#include "lockstep/file_env.h"
#include "lockstep/mpi_comm.h"
#include "lockstep/runtime.h"
#include "lockstep/shard.h"
#include "lockstep/tensor.h"

namespace lockstep {

namespace checkpoint {
struct RankFilePlan;
struct MasterFileTemplate;
class MemoryTierLock;
struct NodeMap;
struct MemoryPlan;
enum class Exchange;
}  // namespace checkpoint

// Small user values saved beside the tensors: data-loader position, RNG
// state, counters. Must be a JSON object.
using KeyValues = nlohmann::json;

// What a checkpoint contains: named groups of tensors ("model", "optim") and
// named key/value objects ("data"). A State refers to the caller's tensors
// and values; it owns no data. Every rank passes a State of the same names,
// global shapes and dtypes. A group holds either replicated tensors (every
// rank the whole tensor) or sharded ones (each rank its chunk of each
// global tensor, as ShardedGradSync's ShardLayout::chunks() gives them).
class State {
 public:
  struct Item {
    // A group of replicated tensors, saved as datasets "<name>/<tensor
    // name>". The Tensor handles share storage with the caller's tensors, so
    // a restore fills the caller's memory.
    Item(std::string name, std::vector<Tensor> tensors);
    // A group of sharded tensors: this rank's chunk of each. A save writes
    // each rank's chunks, which must tile every global tensor (no overlap,
    // no hole, at most one chunk per rank and tensor; empty chunks are
    // fine); the checkpoint holds the global tensors, which restore at any
    // world size into chunks or whole tensors. A chunk's elements must
    // lie in the global tensor; a scalar cannot be sharded.
    Item(std::string name, std::vector<ShardChunk> chunks);
    // Key/values that the caller keeps alive; a restore assigns into them.
    Item(std::string name, KeyValues& values);

    std::string name;
    std::vector<Tensor> tensors;
    std::vector<ShardChunk> chunks;
    KeyValues* values = nullptr;
  };

  State() = default;
  State(std::initializer_list<Item> items) : items_(items) {}
  void add(Item item) { items_.push_back(std::move(item)); }
  const std::vector<Item>& items() const { return items_; }

 private:
  std::vector<Item> items_;
};

struct CheckpointOptions {
  // Where step-<N>/ directories go; created when missing.
  std::filesystem::path dir = {};
  // Keep the newest keep_last committed checkpoints (by step number); 0 keeps all.
  int keep_last = 3;
  // Also keep every checkpoint whose step is a multiple of keep_every; 0: none.
  std::int64_t keep_every = 0;
  // save() returns after copying the state to host memory; a background
  // thread writes it. When false, save() returns once the step is committed.
  bool async = true;
  // Threads that copy the state into the staging buffer on save() and out of
  // the page cache on a restore; 0: the cores this process may run on,
  // shared among the ranks of its node (at most 8).
  int copy_threads = 0;
  // File system; null means the real one, written with direct I/O where it
  // allows it (posix_file_env()). Tests pass one that injects faults.
  std::shared_ptr<FileEnv> env = nullptr;

  // The memory tier, off when empty: every save also goes to this directory
  // on each node's own memory (tmpfs, such as /dev/shm/...), which outlives
  // the processes but not the node. Each node keeps, in its subdirectory
  // `node`, its own ranks' files of the newest memory_keep steps and a
  // partner copy of the files of the node before it (the nodes in the
  // order of their lowest rank; with one node there are no partner
  // copies). A restore takes the newest step that the nodes can put
  // together from their own and their partners' copies, unless the disk
  // holds a newer one; a node that lost its copies fetches them from its
  // partner. It must not be shared between runs (checkpoint_options() adds
  // a subdirectory per checkpoint directory); the steps of another run
  // found there (another `dir`, or `dir` emptied and begun afresh) are
  // discarded. A state that does not fit memory_budget_bytes, or a
  // directory that cannot be used, leaves the memory tier off for this
  // Checkpointer with a warning: saves go to disk only.
  std::filesystem::path memory_dir = {};
  // This rank's node, as the memory tier tells nodes apart (ranks that
  // name the same node share its directory); empty: SLURMD_NODENAME under
  // Slurm, else the host name. A name that cannot be a directory's is
  // replaced by a hash of it.
  std::string node = {};
  int memory_keep = 2;
  // The most bytes of one node's memory tier (the kept steps and the one
  // being saved, its own ranks' files and the partner copies); 0: half of
  // what memory_dir's file system has free at the first save.
  std::uint64_t memory_budget_bytes = 0;
  // With the memory tier on, every disk_every-th save (the first included)
  // also goes to `dir`; the others are in memory only.
  int disk_every = 1;
};

// Options from the configuration (LOCKSTEP_CHECKPOINT_DIR, _KEEP,
// _KEEP_EVERY, _ASYNC, _THREADS, _DIRECT_IO); the directory defaults to
// <run_dir>/checkpoints.
CheckpointOptions checkpoint_options(const Runtime& runtime);

// What the last completed save cost.
struct SaveStats {
  std::int64_t step = -1;
  std::uint64_t bytes_written = 0;  // by this rank, data and HDF5 metadata
  double stall_seconds = 0;         // time save() blocked the caller
  double write_seconds = 0;         // background time from staging to commit
  bool in_memory = false;           // committed to the memory tier
  bool on_disk = false;             // committed to the checkpoint directory
  std::uint64_t disk_bytes = 0;     // of bytes_written, those to the checkpoint directory
};

class Checkpointer {
 public:
  // Collective over `runtime.comm()`. Creates options.dir, checks that it is
  // writable (IoError otherwise, on every rank, whatever rank 0 caught), and
  // removes what crashed saves left behind (step-<N>.tmp-* directories),
  // except that a committed step moved aside by an interrupted save of the
  // same step (step-<N>.replaced-*) becomes step-<N> again when that is
  // missing.
  Checkpointer(const Runtime& runtime, CheckpointOptions options);
  // The same over any communicator (a subset of ranks, a test's world).
  Checkpointer(MPI_Comm comm, CheckpointOptions options);

  // Not copyable or movable: a background save refers to this object.
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Waits for a save in flight. An error it had is logged, not thrown; call
  // wait() first to see it. Collective, like the save it waits for.
  ~Checkpointer();

  // Collective: every rank calls it with the same step and a State of the
  // same names, shapes and dtypes. First waits for the previous save and
  // throws its error, if it had one (IoError; nothing of it was committed).
  // Then copies this rank's share of the state to host memory (from GPU
  // memory through pinned buffers), and either returns (async) or writes and
  // commits before returning (sync; throws IoError when the step could not be
  // committed). Steps that retention drops are out of sight when the new one
  // is committed; their files are deleted in the background, and the next
  // call of this object waits for that. Throws UsageError for names that are
  // empty, hold "..", "." or control characters, or repeat, and for a step
  // below 0, and for key/values that are not JSON objects; such an error on
  // one rank fails the save on every rank, before anything is written, as
  // does a UsageError when the ranks passed different steps or states.
  // save() returns once this rank's copy is made, not the slowest rank's: a
  // rank that cannot make its copy (no memory, a device error) fails the
  // save on every rank, with nothing written, and every rank throws that
  // error ("step N was not saved: rank R: ...", an IoError unless it was a
  // UsageError) where it would a failed write's: at once when sync, else at
  // the next call. After it
  // returns the caller may modify the tensors.
  void save(std::int64_t step, const State& state);

  // save() that also goes to disk, whatever disk_every says: the final state
  // of a run, before discard_memory_tier().
  void save_to_disk(std::int64_t step, const State& state);

  // Collective, for the end of a run that succeeded: waits for the save in
  // flight and removes this run's memory tier on every node. Save the final
  // state to disk first (save_to_disk), or it is gone with the memory tier.
  void discard_memory_tier();

  // Collective. Blocks until the save in flight, if any, is committed (its
  // rename made durable by an fsync of the directory) or has failed; throws
  // the failure (IoError) once.
  void wait();

  // Collective. Restores the newest committed checkpoint that passes its
  // checks into `state` and returns its step (the number passed to save()),
  // or nullopt when there is none. A corrupt, truncated or incomplete
  // checkpoint is skipped with a warning naming what failed, and the next
  // older one is tried. Throws UsageError when a checkpoint does not match
  // `state` (a missing or extra tensor, another shape or dtype: the message
  // names the tensor and both shapes) or was written by a newer format.
  // A checksum failure can be found after some of the step's bytes were
  // read into `state` (ranks on one node fill while they check); when no
  // older step then loads, throws IoError instead of returning nullopt.
  std::optional<std::int64_t> restore_latest(State& state);

  // Collective. Restores step `step`; throws IoError when it is missing or
  // fails a check (saying whether `state` is partly overwritten),
  // UsageError as restore_latest does.
  void restore(std::int64_t step, State& state);

  // Committed steps in `dir`, oldest first, as this rank sees them.
  std::vector<std::int64_t> committed_steps() const;

  // Whether the last successful restore read the memory tier (else the disk).
  bool last_restore_from_memory() const { return restored_from_memory_; }

  // Whether saves go to the memory tier (configured, usable, and within its
  // budget so far).
  bool memory_tier_on() const { return memory_on_; }

  // Warnings of the last restore_latest(), one per checkpoint it skipped.
  const std::vector<std::string>& skipped_checkpoints() const { return skipped_; }

  // Costs of the last completed save (after wait() or the next save()).
  SaveStats last_save_stats() const { return last_stats_; }

  const CheckpointOptions& options() const { return options_; }

 private:
  class SaveJob;

  void finish_in_flight(bool rethrow);
  // Throws IoError if `step` could not be restored; returns false instead
  // for a checkpoint that is corrupt (with the reason in `why`, and
  // `modified` set when the state already holds some of its bytes).
  bool try_restore(const std::filesystem::path& dir, std::int64_t step, State& state,
                   std::string& why, bool& modified, checkpoint::Exchange exchange);
  bool try_restore(const std::filesystem::path& dir, std::int64_t step, State& state,
                   std::string& why, bool& modified);
  // Collective: the memory tier's steps that the nodes can put together,
  // newest first.
  std::vector<checkpoint::MemoryPlan> memory_plans();
  // Collective: fetches what `plan` says each node lacks, then restores
  // from the node directories; false with `why` as try_restore.
  bool try_restore_from_memory(const checkpoint::MemoryPlan& plan, State& state, std::string& why,
                               bool& modified);
  // "memory (own copies, DIR)", "memory (partner copy of ranks 2-3, DIR)".
  std::string memory_source(const checkpoint::MemoryPlan& plan) const;
  // Collective over `comm`: whether every rank staged the save of `step`
  // (`failure`: what this rank caught). When one did not, every rank keeps
  // the first failing rank's error for the next call, or throws it now when
  // saves are synchronous.
  bool agree_staged(MPI_Comm comm, std::exception_ptr failure, std::int64_t step);
  // Collective, at the first save with the memory tier configured: whether
  // this save's files fit every node's budget (else a warning, and the tier
  // stays off).
  bool memory_tier_fits(std::uint64_t rank_file_bytes);

  CheckpointOptions options_;
  MpiComm comm_;          // restore and the caller's thread
  MpiComm writer_comm_;   // the background writer's own collectives
  int copy_threads_ = 1;  // options_.copy_threads, resolved
  std::unique_ptr<SaveJob> in_flight_;
  // The failure of a save this rank could not stage, rethrown where the
  // other ranks rethrow it from their writers: at the next call.
  std::exception_ptr not_staged_;
  std::int64_t not_staged_step_ = -1;
  std::thread retention_;  // rank 0, after a synchronous save
  // Reused by every save (free whenever no save is in flight): fresh memory
  // for each save would cost more in page faults than the copies themselves.
  Tensor staging_;
  // HDF5's bytes of this rank's file, the same for every save of one layout.
  std::shared_ptr<const checkpoint::RankFilePlan> rank_file_;
  // Rank 0: the datasets of checkpoint.h5, the same for every save of one layout.
  std::shared_ptr<const checkpoint::MasterFileTemplate> master_file_;
  std::vector<std::string> skipped_;
  SaveStats last_stats_;
  MpiComm node_comm_;                           // the ranks of this node (memory tier)
  std::unique_ptr<checkpoint::NodeMap> nodes_;  // every rank's node (memory tier)
  std::filesystem::path node_dir_;              // this node's memory directory
  bool memory_usable_ = false;  // the memory directory passed its checks on every node
  bool memory_on_ = false;      // saves go to the memory tier
  std::unique_ptr<checkpoint::MemoryTierLock> memory_lock_;  // node leaders
  bool memory_checked_ = false;  // the budget was checked at a first save
  std::int64_t saves_ = 0;       // saves started, for disk_every
  bool force_disk_ = false;      // the next save goes to disk too
  bool restored_from_memory_ = false;
};

}  // namespace lockstep
