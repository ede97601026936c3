// How a State maps onto a checkpoint: dataset paths, which rank writes which
// slice, and how a slice lands in a tensor's global shape.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lockstep/checkpointer.h"
#include "lockstep/error.h"
#include "lockstep/tensor.h"

namespace lockstep::checkpoint {

// A checkpoint that cannot be trusted (checksum, size, missing file, bad
// metadata). restore_latest() skips it; restore() reports it.
// `state_modified`: the failure came after some of its bytes were read into
// the caller's tensors.
class CorruptCheckpoint : public IoError {
 public:
  explicit CorruptCheckpoint(const std::string& what, bool state_modified = false)
      : IoError(what), state_modified_(state_modified) {}
  bool state_modified() const { return state_modified_; }

 private:
  bool state_modified_;
};

// Throws UsageError unless `name` is a safe relative path inside the
// checkpoint: non-empty components separated by '/', none "." or "..", no
// backslash or control character. `what` names it in the message.
void check_name(std::string_view name, std::string_view what);

struct TensorLayout {
  std::string path;  // "model/fc1.weight"
  DType dtype = DType::kF32;
  Shape shape;
  std::int64_t numel = 0;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel) * dtype_size(dtype); }
};

// One contiguous run of a tensor's flattened elements, stored in the file of
// one saving rank.
struct Piece {
  int file = 0;  // saving rank
  std::int64_t begin = 0;
  std::int64_t count = 0;
  std::uint32_t crc32c = 0;  // over the bytes of the run
  // Where the run's bytes start in the saving rank's file, so that a restore
  // finds them without parsing HDF5's headers; kUnknownOffset in
  // checkpoints that did not record it.
  std::uint64_t offset = kUnknownOffset;
  static constexpr std::uint64_t kUnknownOffset = ~std::uint64_t{0};
};

// Which elements of a global tensor this rank's tensor holds: all of them
// (replicated), or the chunk [begin, begin + count) (sharded).
struct LocalPart {
  bool sharded = false;
  std::int64_t begin = 0;
  std::int64_t count = 0;
};

// The tensors of a State in order, with their dataset paths (global shapes)
// and what this rank holds of each. Throws UsageError for unsafe or
// repeated names, and for a chunk outside its global tensor or of a scalar.
struct FlatState {
  std::vector<TensorLayout> layouts;
  std::vector<Tensor> tensors;
  std::vector<LocalPart> parts;
};
FlatState flatten(const State& state);

// Splits the concatenation of all tensors' bytes into `files` contiguous,
// nearly equal ranges, cut at element boundaries, so that every rank writes
// about 1/files of the bytes however the sizes of the tensors vary. Returns,
// per tensor, its non-empty pieces in file order.
std::vector<std::vector<Piece>> split_bytes(const std::vector<TensorLayout>& layouts, int files);

// The pieces of a save: the replicated tensors split as split_bytes() does,
// each sharded tensor t as the chunks ranks hold, where
// `chunks[r][k]` = {begin, count} of rank r's part of the k-th sharded
// tensor. Throws UsageError, naming the tensor and the ranks, when the
// chunks of a tensor overlap or leave a hole.
std::vector<std::vector<Piece>> plan_pieces(
    const FlatState& flat,
    const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>>& chunks, int files);

// A rectangular block of an N-dimensional array.
struct Box {
  std::vector<std::int64_t> start;
  std::vector<std::int64_t> count;
};
// The flattened (row-major) element range [begin, begin + count) of an array
// of `shape` as at most 2·ndim − 1 boxes, in flattened order. HDF5 virtual
// datasets can only map boxes.
std::vector<Box> flat_range_boxes(const Shape& shape, std::int64_t begin, std::int64_t count);

}  // namespace lockstep::checkpoint
