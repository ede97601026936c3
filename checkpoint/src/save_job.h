// One save, in two halves: staging (on the caller's thread, quick: a copy
// of this rank's share into host memory) and writing (possibly on the
// background thread: HDF5 files, fsync, agreement, rename, retention).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

#include <nlohmann/json.hpp>

#include "hdf5_files.h"
#include "layout.h"
#include "lockstep/checkpointer.h"
#include "metadata.h"

namespace lockstep::checkpoint {

struct StagedSave {
  std::int64_t step = 0;
  int rank = 0;
  int world_size = 1;
  std::vector<TensorLayout> layouts;
  std::vector<bool> sharded;                   // per tensor: saved from chunks
  std::vector<std::vector<Piece>> pieces;      // every rank's, per tensor
  std::vector<std::vector<Piece>> own_pieces;  // this rank's, per tensor
  Tensor staging;  // this rank's bytes, tensor order, placed by `rank_file`
  // The bytes of this rank's pieces, in tensor order: in `staging`, or, for a
  // synchronous save of tensors in host memory, in the tensors themselves
  // (which the caller cannot modify before the save returns).
  std::vector<std::span<const std::byte>> sources;
  std::vector<Tensor> tensors;  // keeps the tensors of `sources` alive
  // HDF5's bytes of this rank's file, kept between saves of the same layout.
  std::shared_ptr<const RankFilePlan> rank_file;
  // Rank 0: the master file's datasets, kept between saves of one layout.
  std::shared_ptr<const MasterFileTemplate> master_file;
  std::vector<std::byte> scalars;  // rank 0: the scalar tensors, for the master file
  nlohmann::json values = nlohmann::json::object();
  // Rank 0, after the commit: directories of steps taken out of sight, to
  // delete.
  std::vector<std::filesystem::path> retired;
};

// A hash of the step and of every tensor's path, dtype, global shape and
// whether it is sharded, which every rank of one save must have alike.
std::uint64_t save_fingerprint(std::int64_t step, const FlatState& flat);

// The pieces of a save of `flat`: collective over `comm` when a tensor is
// sharded (the ranks exchange their chunks), local otherwise. Throws
// UsageError, the same on every rank, when chunks overlap or leave holes.
std::vector<std::vector<Piece>> gather_pieces(const FlatState& flat, MPI_Comm comm);

// Copies this rank's pieces of `flat` (`pieces`, every rank's) into
// `staging` (grown when too small,
// page-locked when CUDA is usable), in up to `threads` threads for host
// tensors, and returns everything the writer needs.
// With `copy` false and every tensor in host memory, nothing is copied: the
// writer reads the tensors, which must not change until it is done.
// `rank_file` is the plan of the previous save, reused when the layout is
// the same (and built first otherwise, before the staging buffer grows, so
// that the two never take memory at once on a first save). The key/values
// come from `state` (JSON objects: save() checked them).
StagedSave stage(std::int64_t step, const State& state, FlatState flat,
                 std::vector<std::vector<Piece>> pieces, int rank, int world_size, bool copy,
                 int threads, Tensor staging, std::shared_ptr<const RankFilePlan> rank_file,
                 std::shared_ptr<const MasterFileTemplate> master_file);

// This rank's file of `plan`, in file order: HDF5's bytes from the plan and
// the staged pieces (`sources`, in tensor order), without copying any.
// Throws std::logic_error when the pieces do not match the plan.
std::vector<std::span<const std::byte>> rank_file_contents(
    const RankFilePlan& plan, const std::vector<std::span<const std::byte>>& sources);

// A new random name for a save's temporary directory (16 hex digits).
std::string random_token();

// Collective over `comm`: rank 0's random_token() on every rank. Throws
// IoError with rank 0's failure on every rank.
std::string shared_token(MPI_Comm comm);

// Writes `bytes` to `path` through `env` and makes them durable. A file
// system that acknowledges fewer bytes than it was given is caught by the
// size check, before anything is committed.
void write_durably(FileEnv& env, const std::filesystem::path& path,
                   std::span<const std::byte> bytes);

// Writes and fsyncs this rank's file of the staged save into `directory`
// and returns what rank 0 needs to know of it (its size, CRC-32C, each
// piece's checksum and offset), or {"error": message}; never throws.
nlohmann::json write_own_file(StagedSave& staged, FileEnv& env,
                              const std::filesystem::path& directory, std::uint64_t& bytes_written);

// Rank 0: the metadata of the staged save from every rank's
// write_own_file() outcome (in rank order), and the master file's bytes.
// Throws IoError joining the ranks' errors when one failed.
std::pair<Metadata, std::vector<std::byte>> build_metadata(
    StagedSave& staged, const std::vector<std::string>& outcomes);

// Collective over `comm`: writes the staged save into a temporary directory,
// makes it durable, and, when every rank succeeded, commits it with one
// rename; rank 0 then takes the steps retention drops out of sight (into
// `staged.retired`, to be deleted by remove_retired()). Throws IoError (the same message on every
// rank) when the step was not committed. Returns the bytes this rank wrote. On rank 0, builds
// `staged.master_file` first when it does not fit.
std::uint64_t write_and_commit(StagedSave& staged, MPI_Comm comm, FileEnv& env,
                               const CheckpointOptions& options);

// Rank 0, after `committed_step` was committed: deletes the steps that
// write_and_commit() retired, and what crashed saves left behind. Failures
// are logged, never thrown: the new step is committed either way.
void remove_retired(FileEnv& env, const CheckpointOptions& options,
                    const std::vector<std::filesystem::path>& retired,
                    std::int64_t committed_step) noexcept;

}  // namespace lockstep::checkpoint
