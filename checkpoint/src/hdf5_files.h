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
#include "lockstep/file_env.h"
#include "metadata.h"

namespace lockstep::checkpoint {

// A rank's file: one 1-D dataset per piece it owns, named by the tensor's
// path, stored contiguously. Its bytes other than the tensor data (HDF5's
// superblock, object headers, attributes) depend only on which pieces the
// rank owns, so they are built once, in memory, and every save then writes
// them interleaved with the staged data: no image of the whole file is ever
// built, and the staging buffer is the only copy of the rank's share.
//
// Pieces of at least kAlignedDataThreshold bytes start at a multiple of
// kDataAlignment in the file, and every piece has a place in the staging
// buffer at the same offset modulo kDataAlignment as in the file: a writer
// with O_DIRECT then sends the staged bytes to the disk as they are, with no
// copy into an aligned buffer. The padding costs less than kDataAlignment
// per piece, in the file and in the staging buffer.
inline constexpr std::size_t kDataAlignment = kDirectIoAlignment;
inline constexpr std::size_t kAlignedDataThreshold = 64 * 1024;

struct RankFilePlan {
  struct Segment {
    std::uint64_t size = 0;
    bool data = false;       // tensor data, else HDF5's own bytes
    std::size_t offset = 0;  // HDF5's bytes: where they start in `header_bytes`
    std::size_t piece = 0;   // tensor data: the piece's index (tensor order)
  };
  std::vector<Segment> segments;  // in file order, covering the whole file
  std::vector<std::byte> header_bytes;
  std::uint64_t file_size = 0;
  // Where each piece (in tensor order) goes in the staging buffer, and the
  // buffer's size.
  std::vector<std::size_t> staged_offsets;
  std::size_t staged_size = 0;
  // Where each piece's data starts in the file (tensor order), recorded in
  // the metadata so that a restore need not parse the file to find it.
  std::vector<std::uint64_t> piece_offsets;
  // What the plan was built for: tensor path, dtype, piece begin and count.
  std::vector<std::string> key;
};

// The plan for a rank that owns `pieces[t]` of tensor t (zero or one each);
// the staged data holds their bytes in tensor order. Builds the
// file once in temporary memory (about the size of the data).
RankFilePlan plan_rank_file(const std::vector<TensorLayout>& layouts,
                            const std::vector<std::vector<Piece>>& pieces);
// The `key` a plan for these pieces has; equal keys give equal files.
std::vector<std::string> rank_file_key(const std::vector<TensorLayout>& layouts,
                                       const std::vector<std::vector<Piece>>& pieces);

// The file users open: one dataset per tensor with its global shape, a
// virtual dataset stitched from the rank files (a scalar or empty tensor is
// stored in place: virtual datasets cannot map those), and the metadata in
// attributes. Its datasets depend only on the tensors' layouts and pieces,
// and stitching hundreds of virtual datasets takes longer than writing the
// file, so they are built once per layout into a template (`image`), which
// every save copies and completes with the scalars' values and the
// attributes.
struct MasterFileTemplate {
  std::vector<std::byte> image;
  // What it was built for: tensor path, dtype, shape and pieces.
  std::vector<std::string> key;
};

// The template for the tensors of `metadata` (their checksums do not matter).
MasterFileTemplate plan_master_file(const Metadata& metadata);
// The `key` a template for these tensors has.
std::vector<std::string> master_file_key(const Metadata& metadata);

// The master file from a template of the same key; `scalars` holds the
// bytes of the scalar tensors back to back in tensor order.
std::vector<std::byte> build_master_file(const MasterFileTemplate& plan, const Metadata& metadata,
                                         std::span<const std::byte> scalars);

// Finds and reads the pieces of tensors stored in the rank file `path`.
// Throws CorruptCheckpoint when the file is not HDF5 or a dataset is missing
// or of another size or type.
class RankFileReader {
 public:
  explicit RankFileReader(const std::filesystem::path& path);
  ~RankFileReader();
  RankFileReader(const RankFileReader&) = delete;
  RankFileReader& operator=(const RankFileReader&) = delete;

  // Reads the piece of tensor `layout` into `out` (piece.count elements).
  void read(const TensorLayout& layout, const Piece& piece, std::span<std::byte> out);
  // Where the piece's bytes start in the file: its dataset must be stored
  // contiguously and unfiltered, as the checkpoint layer writes it, so that
  // a restore can read them with plain large reads, bypassing HDF5.
  std::uint64_t data_offset(const TensorLayout& layout, const Piece& piece);

 private:
  std::filesystem::path path_;
  long long file_ = -1;  // hid_t, kept out of this header's includes
};

}  // namespace lockstep::checkpoint
