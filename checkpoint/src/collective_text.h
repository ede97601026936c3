// Small collectives that move text (error messages, JSON) between ranks,
// so that every rank reaches the same verdict with the same explanation.
// They wait for the other ranks with naps instead of polling, so that a
// background thread waiting here leaves its core to training.
#pragma once

#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include <mpi.h>

namespace lockstep::checkpoint {

// Waits for non-blocking MPI requests without holding a core.
void wait_idly(std::span<MPI_Request> requests);
void wait_idly(MPI_Request& request);

// `text` of rank `root` on every rank.
void broadcast_text(MPI_Comm comm, int root, std::string& text);
// Every rank's `text`, by rank, on `root`; empty elsewhere.
std::vector<std::string> gather_text(MPI_Comm comm, int root, const std::string& text);
// The message of the lowest rank whose `error` is not empty, on every rank;
// empty when no rank failed.
std::string first_error(MPI_Comm comm, const std::string& error);

// Makes a failure of some ranks the failure of all, so that no rank goes on
// into a collective that a failed rank never joins. `failure` is what this
// rank caught (null: nothing); `fingerprint` is what every rank must agree
// on (the step and the state's layout, say). When any rank failed, every
// rank throws the failure of the lowest failing rank, naming that rank: a
// UsageError stays a UsageError, a CorruptCheckpoint a CorruptCheckpoint
// (without `state_modified`), anything else (an IoError, a
// std::filesystem_error, std::bad_alloc) becomes an IoError. Otherwise
// returns whether every rank passed the same fingerprint. One small
// all-reduce, plus a broadcast of the message when a rank failed.
bool agree_or_throw(MPI_Comm comm, std::exception_ptr failure, std::uint64_t fingerprint = 0);

}  // namespace lockstep::checkpoint
