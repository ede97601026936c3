// Splitting large copies over the cores a rank may use. A save blocks the
// caller while it copies the state into the staging buffer, and a restore
// copies the whole state out of the page cache; one core moves bytes at a
// fraction of what the memory can take.
#pragma once

#include <cstddef>
#include <functional>
#include <span>

#include <mpi.h>

namespace lockstep::checkpoint {

// The most threads a copy uses.
constexpr int kMaxCopyThreads = 8;
// A thread of its own pays off for copies of this many bytes or more.
constexpr std::size_t kMinCopyRun = 16U << 20;

// Collective: how many ranks of `comm` share this rank's node.
int ranks_on_node(MPI_Comm comm);

// Threads for this rank's copies: `requested` when positive, otherwise the
// cores this process may run on shared among the `ranks_on_node` ranks of
// its node; between 1 and kMaxCopyThreads.
int copy_threads(int requested, int ranks_on_node);

// Calls work(thread, item, begin, end) on byte ranges [begin, end) of items
// of `sizes` bytes so that the calls cover every byte exactly once. The
// bytes, in item order, are cut into `threads` runs of about equal length
// (never below `min_run` bytes each, cuts at multiples of 4 KiB inside an
// item); run k goes to thread k, run 0 to the caller's thread. When `whole`
// is true, runs are cut only between items. Rethrows the first exception
// of any thread once all have finished; when a thread cannot be started,
// its run is done on the caller's thread.
using CopyWork =
    std::function<void(int thread, std::size_t item, std::size_t begin, std::size_t end)>;
void split_over_threads(std::span<const std::size_t> sizes, int threads, std::size_t min_run,
                        bool whole, const CopyWork& work);

}  // namespace lockstep::checkpoint
