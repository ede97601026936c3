// The HDF5 side of a checkpoint: builds the files in memory (HDF5's core
// driver) so that the bytes reach the disk through FileEnv, which tests can
// make fail, and reads pieces back.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "layout.h"
#include "metadata.h"

namespace lockstep::checkpoint {

// A rank's file: one 1-D dataset per piece it owns, named by the tensor's
// path. `pieces[t]` lists tensor t's pieces of this rank (zero or one);
// `data` holds their bytes back to back in tensor order. The file is built
// in `image_buffer` (grown when too small) and the returned bytes point into
// it: reusing one buffer for every save spares the page faults of fresh
// memory, which cost more than the copy itself.
std::span<const std::byte> build_rank_file(const std::vector<TensorLayout>& layouts,
                                           const std::vector<std::vector<Piece>>& pieces,
                                           std::span<const std::byte> data, Tensor& image_buffer);

// The file users open: one dataset per tensor with its global shape, a
// virtual dataset stitched from the rank files (a scalar or empty tensor is
// stored in place: virtual datasets cannot map those); `scalars` holds the
// bytes of the scalar tensors back to back in tensor order. The metadata
// goes into attributes.
std::vector<std::byte> build_master_file(const Metadata& metadata,
                                         std::span<const std::byte> scalars);

// Reads the piece of tensor `layout` stored in the already-open rank file
// `path` into `out` (piece.count elements). Throws CorruptCheckpoint when the
// dataset is missing or of another size or type.
class RankFileReader {
 public:
  explicit RankFileReader(const std::filesystem::path& path);
  ~RankFileReader();
  RankFileReader(const RankFileReader&) = delete;
  RankFileReader& operator=(const RankFileReader&) = delete;

  void read(const TensorLayout& layout, const Piece& piece, std::span<std::byte> out);

 private:
  std::filesystem::path path_;
  long long file_ = -1;  // hid_t, kept out of this header's includes
};

}  // namespace lockstep::checkpoint
