// Small collectives that move text (error messages, JSON) between ranks,
// so that every rank reaches the same verdict with the same explanation.
// They wait for the other ranks with naps instead of polling, so that a
// background thread waiting here leaves its core to training.
#pragma once

#include <string>
#include <vector>

#include <mpi.h>

namespace lockstep::checkpoint {

// `text` of rank `root` on every rank.
void broadcast_text(MPI_Comm comm, int root, std::string& text);
// Every rank's `text`, by rank, on `root`; empty elsewhere.
std::vector<std::string> gather_text(MPI_Comm comm, int root, const std::string& text);
// The message of the lowest rank whose `error` is not empty, on every rank;
// empty when no rank failed.
std::string first_error(MPI_Comm comm, const std::string& error);

}  // namespace lockstep::checkpoint
