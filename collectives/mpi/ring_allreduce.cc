#include "ring_allreduce.h"

#include <algorithm>

#include "lockstep/mpi_check.h"

namespace lockstep::detail {

namespace {

// Elements in share `index` of `total` cut into `shares` shares of
// ceil(total / shares), the last ones shorter or empty.
std::size_t share_count(std::size_t total, std::size_t shares, std::size_t index) {
  const std::size_t share = (total + shares - 1) / shares;
  const std::size_t begin = std::min(total, index * share);
  return std::min(total - begin, share);
}

// Every message of a ring all-reduce carries this tag; MPI matches messages
// between two ranks in the order they were sent, which is the order both
// sides walk the chunks in.
constexpr int kTag = 0x52494e47;

struct Chunk {
  char* data = nullptr;
  std::size_t count = 0;
};

class Ring {
 public:
  Ring(std::span<const RingSpan> spans, std::size_t element_size, MPI_Datatype datatype, MPI_Op op,
       MPI_Comm comm, const RingAllreduceOptions& options, std::vector<char>& scratch)
      : element_size_(element_size),
        datatype_(datatype),
        op_(op),
        comm_(comm),
        options_(options),
        window_(static_cast<std::size_t>(std::max(options.window, 1))) {
    int rank = 0;
    int size = 1;
    LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
    LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &size));
    rank_ = static_cast<std::size_t>(rank);
    size_ = static_cast<std::size_t>(size);
    right_ = (rank + 1) % size;
    left_ = (rank + size - 1) % size;
    reduce_steps_ = size_ - 1;
    first_step_ = options.phases == RingPhases::kAllgather ? reduce_steps_ : 0;
    end_step_ = options.phases == RingPhases::kReduceScatter ? reduce_steps_ : 2 * reduce_steps_;
    cut_blocks(spans, std::max<std::size_t>(options.chunk_bytes / element_size, 1));
    // The block this rank sends first: its own partial sums, or for an
    // all-gather alone, the block it holds complete.
    first_send_ = options.phases == RingPhases::kAllgather ? (rank_ + 1) % size_ : rank_;

    // Receives: step by step, the chunks of that step's block.
    for (std::size_t step = first_step_; step < end_step_; ++step) {
      step_start_.push_back(receives_.size());
      receives_.resize(receives_.size() + blocks_[receive_block(step)].size(), MPI_REQUEST_NULL);
    }
    // Sends: the first block, then every chunk received in a step but the
    // last, in the order received.
    sends_.assign(blocks_[first_send_].size() + step_start_.back(), MPI_REQUEST_NULL);
    if (scratch.size() < window_ * slot_bytes_) scratch.resize(window_ * slot_bytes_);
    scratch_ = scratch.data();
  }

  void run() {
    for (std::size_t index = 0; index < blocks_[first_send_].size(); ++index) {
      post_send(index, blocks_[first_send_][index]);
    }
    const std::size_t messages = receives_.size();
    for (std::size_t message = 0; message < std::min(window_, messages); ++message) {
      post_receive(message);
    }
    std::size_t walk = 0;  // index into step_start_
    for (std::size_t message = 0; message < messages; ++message) {
      while (walk + 1 < step_start_.size() && message >= step_start_[walk + 1]) ++walk;
      const std::size_t step = first_step_ + walk;
      const Chunk chunk = blocks_[receive_block(step)][message - step_start_[walk]];
      LOCKSTEP_CHECK_MPI(MPI_Wait(&receives_[message], MPI_STATUS_IGNORE));
      if (step < reduce_steps_) {
        // Reduce-scatter: fold the left neighbour's partial result into ours.
        LOCKSTEP_CHECK_MPI(MPI_Reduce_local(slot(message), chunk.data,
                                            static_cast<int>(chunk.count), datatype_, op_));
        if (step + 1 == reduce_steps_ && options_.finish_chunk) {
          options_.finish_chunk(chunk.data, chunk.count);
        }
      }
      // What arrived in step s leaves for the right neighbour in step s + 1.
      if (step + 1 < end_step_) post_send(blocks_[first_send_].size() + message, chunk);
      if (message + window_ < messages) post_receive(message + window_);
    }
    LOCKSTEP_CHECK_MPI(
        MPI_Waitall(static_cast<int>(sends_.size()), sends_.data(), MPI_STATUSES_IGNORE));
  }

 private:
  // n blocks of nearly equal element counts over the spans taken back to
  // back; each block cut into chunks at span boundaries and every
  // `chunk_elements` elements.
  void cut_blocks(std::span<const RingSpan> spans, std::size_t chunk_elements) {
    std::size_t total = 0;
    for (const RingSpan& span : spans) total += span.count;
    blocks_.resize(size_);
    // Blocks in rank order: block r ends (or, for an all-gather alone,
    // starts) complete on rank r. Rank r completes ring block r + 1, so
    // ring block k is data block k - 1. The all-reduce cuts its blocks the
    // same way, so that its reduce-scatter half adds every element in the
    // order a reduce-scatter alone does: the same bits.
    constexpr std::size_t rotation = 1;
    std::size_t span_index = 0;
    std::size_t span_offset = 0;
    while (span_index < spans.size() && spans[span_index].count == 0) ++span_index;
    for (std::size_t data_block = 0; data_block < size_; ++data_block) {
      const std::size_t block = (data_block + rotation) % size_;
      std::size_t left = share_count(total, size_, data_block);
      while (left > 0) {
        const RingSpan& span = spans[span_index];
        const std::size_t count = std::min({left, chunk_elements, span.count - span_offset});
        blocks_[block].push_back(
            {static_cast<char*>(span.data) + span_offset * element_size_, count});
        slot_bytes_ = std::max(slot_bytes_, count * element_size_);
        left -= count;
        span_offset += count;
        while (span_index < spans.size() && span_offset == spans[span_index].count) {
          ++span_index;
          span_offset = 0;
        }
      }
      // An empty block still exchanges one empty message, so that both
      // sides of every step agree on the count.
      if (blocks_[block].empty()) blocks_[block].push_back({nullptr, 0});
    }
  }

  // Reduce-scatter steps 0..n-2, then all-gather steps n-1..2n-3: the block
  // this rank receives in `step` (it sends the one received a step before,
  // starting with its own).
  std::size_t receive_block(std::size_t step) const {
    return step < reduce_steps_ ? (rank_ + 2 * size_ - step - 1) % size_
                                : (rank_ + size_ - (step - reduce_steps_)) % size_;
  }
  char* slot(std::size_t message) const { return scratch_ + (message % window_) * slot_bytes_; }

  void post_send(std::size_t index, const Chunk& chunk) {
    LOCKSTEP_CHECK_MPI(MPI_Isend(chunk.data, static_cast<int>(chunk.count), datatype_, right_, kTag,
                                 comm_, &sends_[index]));
  }

  void post_receive(std::size_t message) {
    const auto walk =
        static_cast<std::size_t>(std::upper_bound(step_start_.begin(), step_start_.end(), message) -
                                 step_start_.begin() - 1);
    const std::size_t step = first_step_ + walk;
    const std::size_t index = message - step_start_[walk];
    const Chunk chunk = blocks_[receive_block(step)][index];
    char* target = slot(message);
    if (step >= reduce_steps_) {
      // All-gather: straight into place. After a reduce-scatter, this rank
      // sent the same chunk in its step s - (n - 1); that send must be over
      // before the final values overwrite it. (An all-gather alone never
      // sent it.)
      if (first_step_ == 0) {
        const std::size_t sent_in = step - reduce_steps_;
        const std::size_t send =
            sent_in == 0 ? index : blocks_[first_send_].size() + step_start_[sent_in - 1] + index;
        LOCKSTEP_CHECK_MPI(MPI_Wait(&sends_[send], MPI_STATUS_IGNORE));
      }
      target = chunk.data;
    }
    LOCKSTEP_CHECK_MPI(MPI_Irecv(target, static_cast<int>(chunk.count), datatype_, left_, kTag,
                                 comm_, &receives_[message]));
  }

  std::size_t element_size_;
  MPI_Datatype datatype_;
  MPI_Op op_;
  MPI_Comm comm_;
  const RingAllreduceOptions& options_;
  std::size_t window_;
  std::size_t rank_ = 0;
  std::size_t size_ = 1;
  int right_ = 0;
  int left_ = 0;
  std::size_t reduce_steps_ = 0;  // n - 1
  std::size_t first_step_ = 0;    // the steps [first_step_, end_step_) run
  std::size_t end_step_ = 0;
  std::size_t first_send_ = 0;  // the block sent before anything arrives
  std::vector<std::vector<Chunk>> blocks_;
  std::size_t slot_bytes_ = 0;           // the largest chunk
  char* scratch_ = nullptr;              // window_ slots
  std::vector<std::size_t> step_start_;  // first receive of each step that runs
  std::vector<MPI_Request> receives_;
  std::vector<MPI_Request> sends_;
};

}  // namespace

void ring_allreduce(std::span<const RingSpan> spans, std::size_t element_size,
                    MPI_Datatype datatype, MPI_Op op, MPI_Comm comm,
                    const RingAllreduceOptions& options, std::vector<char>& scratch) {
  int size = 1;
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &size));
  if (size == 1) {
    if (!options.finish_chunk || options.phases == RingPhases::kAllgather) return;
    for (const RingSpan& span : spans) {
      if (span.count > 0) options.finish_chunk(span.data, span.count);
    }
    return;
  }
  Ring(spans, element_size, datatype, op, comm, options, scratch).run();
}

}  // namespace lockstep::detail
