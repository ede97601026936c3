// Read-only inspection of a checkpoint directory, for tools such as
// `lockstep ckpt`: which steps are there, what a step holds, and whether
// every checksum of a step still matches. Nothing here is collective or needs
// MPI to be initialised, and nothing writes to the directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lockstep/tensor.h"

namespace lockstep {

// One entry of a checkpoint directory: a committed step-<N> directory, or
// what an interrupted save or deletion left behind (step-<N>.tmp-*,
// step-<N>.deleted-*, step-<N>.replaced-*), which no reader ever loads.
struct CheckpointEntry {
  std::string name;                  // "step-100", "step-200.tmp-9f3c..."
  std::int64_t step = 0;             // the N of step-<N>
  bool committed = false;            // false: a leftover ("torn")
  std::uint64_t bytes = 0;           // all files below the entry
  double modified_unix_seconds = 0;  // newest modification below the entry
};

// The entries of `dir` that belong to checkpoints, ordered by step, and for
// one step the committed entry first. Throws UsageError when `dir` does not
// exist or is not a directory, and when it holds other entries but nothing
// that a Checkpointer writes (not a checkpoint directory). An empty
// directory gives an empty list.
std::vector<CheckpointEntry> list_checkpoint_entries(const std::filesystem::path& dir);

// One tensor of a checkpoint as its metadata describes it.
struct CheckpointTensorInfo {
  std::string path;  // dataset path, "model/fc1.weight"
  DType dtype = DType::kF32;
  Shape shape;
  std::uint64_t bytes = 0;
  int pieces = 0;        // slices in rank files (a sharded tensor's: the ranks' chunks)
  bool sharded = false;  // saved from chunks of sharded state
};

// What metadata.json of a committed step says.
struct CheckpointInfo {
  std::int64_t step = 0;
  int world_size = 0;  // ranks that saved it
  int format_version = 0;
  std::string library_version;
  std::string wall_time;  // UTC, ISO 8601
  double unix_time = 0;
  std::vector<CheckpointTensorInfo> tensors;  // in save order
  nlohmann::json values;                      // state name -> key/values
  std::vector<std::string> files;             // rank files, then checkpoint.h5
  std::uint64_t tensor_bytes = 0;             // sum over tensors
};

// Reads and checks metadata.json of `step_dir` (its own checksum and every
// field included; see docs/CHECKPOINTS.md). Throws IoError when it is
// missing or damaged, or when the step or the file is a symbolic link;
// UsageError when it is of a newer format version than this library reads.
CheckpointInfo read_checkpoint_info(const std::filesystem::path& step_dir);

// The outcome of verifying one step: empty `problems` means every check
// passed.
struct VerifyReport {
  std::int64_t step = 0;
  std::uint64_t bytes_checked = 0;
  int checks_passed = 0;              // files and pieces whose checksums matched
  std::vector<std::string> problems;  // one line per failed check, naming the file
  bool ok() const { return problems.empty(); }
};

// Checks everything a restore checks, and more, without loading anything
// into a State: the metadata's own checksum and fields (file names, links,
// ranges), the size and CRC-32C of every file, and the CRC-32C of every
// piece of every tensor as HDF5 reads it.
// Problems are collected, not thrown, so one report lists every damaged
// file. Throws only for a step directory that does not exist (UsageError).
VerifyReport verify_checkpoint(const std::filesystem::path& step_dir);

// "step-42", the directory name of a committed step.
std::string checkpoint_step_name(std::int64_t step);

}  // namespace lockstep
