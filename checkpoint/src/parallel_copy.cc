#include "parallel_copy.h"

#include <sched.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <numeric>
#include <system_error>
#include <thread>
#include <vector>

#include "lockstep/mpi_check.h"

namespace lockstep::checkpoint {

namespace {

constexpr std::size_t kCutAlignment = 4096;

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
}

// One thread's share: from (item, offset) up to, not including, the next
// run's start.
struct Cut {
  std::size_t item = 0;
  std::size_t offset = 0;
};

}  // namespace

int ranks_on_node(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  LOCKSTEP_CHECK_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int size = 1;
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(node, &size));
  LOCKSTEP_CHECK_MPI(MPI_Comm_free(&node));
  return size;
}

int copy_threads(int requested, int ranks_on_node) {
  if (requested > 0) return std::min(requested, kMaxCopyThreads);
  return std::clamp(usable_cores() / std::max(1, ranks_on_node), 1, kMaxCopyThreads);
}

void split_over_threads(std::span<const std::size_t> sizes, int threads, std::size_t min_run,
                        bool whole, const CopyWork& work) {
  const std::size_t total = std::accumulate(sizes.begin(), sizes.end(), std::size_t{0});
  const auto runs = static_cast<std::size_t>(
      std::clamp<std::size_t>(total / std::max<std::size_t>(min_run, 1), 1,
                              static_cast<std::size_t>(std::max(1, threads))));

  // Where each run starts: the first byte at or after k * total / runs, moved
  // to a 4 KiB boundary of its item or, with `whole`, to the next item.
  std::vector<Cut> cuts(runs + 1, Cut{sizes.size(), 0});
  cuts[0] = {0, 0};
  std::size_t item = 0;
  std::size_t item_start = 0;  // of `item` in the whole
  for (std::size_t k = 1; k < runs; ++k) {
    const std::size_t target = k * total / runs;
    while (item < sizes.size() && item_start + sizes[item] <= target) item_start += sizes[item++];
    Cut cut{item, 0};
    if (item < sizes.size()) {
      const std::size_t inside = (target - item_start) / kCutAlignment * kCutAlignment;
      if (whole && inside > 0) {
        cut = {item + 1, 0};
      } else {
        cut.offset = inside;
      }
    }
    const Cut& previous = cuts[k - 1];
    if (cut.item < previous.item || (cut.item == previous.item && cut.offset < previous.offset)) {
      cut = previous;
    }
    cuts[k] = cut;
  }

  std::exception_ptr first_error;
  std::mutex error_mutex;
  const auto run = [&](std::size_t k) {
    try {
      const Cut from = cuts[k];
      const Cut to = cuts[k + 1];
      for (std::size_t i = from.item; i < sizes.size() && i <= to.item; ++i) {
        const std::size_t begin = i == from.item ? from.offset : 0;
        const std::size_t end = i == to.item ? to.offset : sizes[i];
        if (begin < end) work(static_cast<int>(k), i, begin, end);
      }
    } catch (...) {
      const std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  std::vector<std::size_t> not_started;
  for (std::size_t k = 1; k < runs; ++k) {
    try {
      helpers.emplace_back(run, k);
    } catch (const std::system_error&) {
      not_started.push_back(k);
    }
  }
  run(0);
  for (const auto k : not_started) run(k);
  for (auto& helper : helpers) helper.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace lockstep::checkpoint
