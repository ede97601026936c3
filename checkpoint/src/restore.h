// Loading one checkpoint into a State, at any world size.
#pragma once

#include <cstdint>
#include <filesystem>

#include <mpi.h>

#include "lockstep/checkpointer.h"

namespace lockstep::checkpoint {

// How the ranks get the bytes that other ranks checked.
enum class Exchange {
  kAutomatic,  // kReadAgain when every rank is on one node, else kBroadcast
  kReadAgain,  // every rank reads every file again (from the page cache)
  kBroadcast,  // the readers broadcast what they checked
};

// Collective over `comm`. Each rank reads and checks the rank files of a
// contiguous share of the saving ranks (each byte is checked once in the
// job); only when every check passed do the ranks fill their tensors (see
// `Exchange`), so that every rank holds the full tensors. Throws, with the
// same message on every rank: CorruptCheckpoint when the checkpoint is
// damaged or incomplete (nothing of `state` is modified then), UsageError
// when it does not match `state` or is of a newer format. Up to `threads`
// threads fill the tensors from the page cache.
void restore_step(FileEnv& env, const std::filesystem::path& step_dir, std::int64_t step,
                  State& state, MPI_Comm comm, int threads = 1,
                  Exchange exchange = Exchange::kAutomatic);

}  // namespace lockstep::checkpoint
