// Ring all-reduce over MPI point-to-point messages: a reduce-scatter and an
// all-gather around the ring of ranks; either half also runs alone. The bytes are cut into n blocks
// and each block into chunks; a chunk flows on to the next rank as soon as it is reduced, so that
// every rank copies, reduces and forwards at the same time. Each rank moves 2(n-1)/n of the bytes
// and reduces every chunk while it is in cache. Several tensors can travel as one stream (one
// collective for a whole GradSync bucket).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <mpi.h>

namespace lockstep::detail {

// `count` elements at `data`.
struct RingSpan {
  void* data = nullptr;
  std::size_t count = 0;
};

// Which steps of the ring run.
enum class RingPhases : std::uint8_t {
  kAllreduce,      // both: every rank ends with every block reduced
  kReduceScatter,  // rank r ends with block r reduced (the others hold partial sums)
  kAllgather,      // rank r starts with block r; every rank ends with all blocks
};

struct RingAllreduceOptions {
  RingPhases phases = RingPhases::kAllreduce;
  // Bytes per message at most; a chunk never crosses two spans.
  std::size_t chunk_bytes = std::size_t{256} << 10;
  // Receives posted ahead of the one being reduced (scratch: this many chunks).
  int window = 4;
  // Called once on every fully reduced chunk (before it is forwarded, when
  // it is; the average divides there); may be empty. Not called by
  // kAllgather.
  std::function<void(void* data, std::size_t count)> finish_chunk = {};
};

// Reduces the elements of `spans` (taken back to back, each element of
// `element_size` bytes) in place over `comm` with the commutative `op`,
// leaving the same bytes on every rank (kAllreduce; the other phases as
// they say). The elements are cut into n blocks of ceil(total / n) in rank
// order, the last ones shorter or empty, in every phase: an all-reduce and
// a reduce-scatter of the same elements add each one in the same order. Collective: every rank
// passes the same element counts, datatype, op and phases. `scratch` is reused between calls.
// Throws BackendError on an MPI failure.
void ring_allreduce(std::span<const RingSpan> spans, std::size_t element_size,
                    MPI_Datatype datatype, MPI_Op op, MPI_Comm comm,
                    const RingAllreduceOptions& options, std::vector<char>& scratch);

}  // namespace lockstep::detail
