// Loading one checkpoint into a State, at any world size.
#pragma once

#include <cstdint>
#include <filesystem>

#include <mpi.h>

#include "lockstep/checkpointer.h"

namespace lockstep::checkpoint {

// How the ranks get the bytes that other ranks checked.
enum class Exchange {
  kAutomatic,  // kReadAll when every rank is on one node, else kBroadcast
  kReadAll,    // every rank reads every file (its owner's reads fill the page cache)
  kBroadcast,  // the readers broadcast what they checked
};

// Collective over `comm`. Each rank checks the rank files of a contiguous
// share of the saving ranks (each byte is checked once in the job) and
// every rank ends with the full tensors (see `Exchange`). Throws, with the
// same message on every rank: CorruptCheckpoint when the checkpoint is
// damaged or incomplete, UsageError when it does not match `state` or is of
// a newer format. A missing, truncated or malformed file is found before
// anything of `state` is written; with kReadAll a checksum mismatch or a
// failed read is found while the tensors are filled, and the exception
// says so (`CorruptCheckpoint::state_modified`). Up to `threads` threads
// read and check.
void restore_step(FileEnv& env, const std::filesystem::path& step_dir, std::int64_t step,
                  State& state, MPI_Comm comm, int threads = 1,
                  Exchange exchange = Exchange::kAutomatic);

}  // namespace lockstep::checkpoint
