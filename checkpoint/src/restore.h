// Loading one checkpoint into a State, at any world size.
#pragma once

#include <cstdint>
#include <filesystem>

#include <mpi.h>

#include "lockstep/checkpointer.h"

namespace lockstep::checkpoint {

// Collective over `comm`. Each rank reads the rank files of a contiguous
// share of the saving ranks (only what it needs, each byte read once in the
// job), verifies every piece's checksum, and the ranks then broadcast the
// pieces so that every rank holds the full tensors. Throws, with the same
// message on every rank: CorruptCheckpoint when the checkpoint is damaged or
// incomplete (nothing of `state` is modified then), UsageError when it does
// not match `state` or is of a newer format.
void restore_step(FileEnv& env, const std::filesystem::path& step_dir, std::int64_t step,
                  State& state, MPI_Comm comm);

}  // namespace lockstep::checkpoint
