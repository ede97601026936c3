#include "restore.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include <fmt/format.h>

#include "collective_text.h"
#include "crc32c.h"
#include "hdf5_files.h"
#include "host_buffer.h"
#include "layout.h"
#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "metadata.h"
#include "parallel_copy.h"

namespace lockstep::checkpoint {

namespace {

namespace fs = std::filesystem;

// Broadcasts go in pieces of this size: MPI counts are ints, and Open MPI
// moves one very large message several times slower per byte than a series
// of medium ones (see LOCKSTEP_MPI_SEGMENT_MB).
constexpr std::size_t kBroadcastChunk = 8U << 20;

void broadcast_bytes(MPI_Comm comm, int root, std::byte* data, std::size_t bytes) {
  for (std::size_t offset = 0; offset < bytes; offset += kBroadcastChunk) {
    const auto count = static_cast<int>(std::min(kBroadcastChunk, bytes - offset));
    LOCKSTEP_CHECK_MPI(MPI_Bcast(data + offset, count, MPI_BYTE, root, comm));
  }
}

// The tensors of `state` must be exactly those of the checkpoint.
std::vector<const TensorRecord*> match_state(const FlatState& flat, const Metadata& metadata,
                                             const fs::path& step_dir) {
  std::map<std::string, const TensorRecord*, std::less<>> saved;
  for (const auto& record : metadata.tensors) saved[record.layout.path] = &record;
  std::vector<const TensorRecord*> matched;
  for (const auto& layout : flat.layouts) {
    const auto found = saved.find(layout.path);
    if (found == saved.end()) {
      throw UsageError(fmt::format("tensor '{}' ({}{}) of the state is not in checkpoint {}",
                                   layout.path, dtype_name(layout.dtype), shape_str(layout.shape),
                                   step_dir.string()));
    }
    const auto& stored = found->second->layout;
    if (stored.dtype != layout.dtype || stored.shape != layout.shape) {
      throw UsageError(fmt::format(
          "tensor '{}' does not match checkpoint {}: the state has {}{}, the checkpoint has {}{}",
          layout.path, step_dir.string(), dtype_name(layout.dtype), shape_str(layout.shape),
          dtype_name(stored.dtype), shape_str(stored.shape)));
    }
    matched.push_back(found->second);
    saved.erase(found);
  }
  if (!saved.empty()) {
    const auto& extra = saved.begin()->second->layout;
    throw UsageError(
        fmt::format("checkpoint {} holds tensor '{}' ({}{}) that the state lacks ({} such tensors)",
                    step_dir.string(), extra.path, dtype_name(extra.dtype), shape_str(extra.shape),
                    saved.size()));
  }
  return matched;
}

// The verdict of every rank on one stage of a restore, the same on all:
// IoError when a rank failed for a reason that is not the checkpoint's (so
// that no fallback hides it), CorruptCheckpoint when the checkpoint failed
// a check. `state_modified`: the caller's tensors already hold some bytes.
void agree(MPI_Comm comm, const fs::path& step_dir, const std::string& error,
           bool not_the_checkpoint, bool state_modified) {
  const std::string first = first_error(comm, error);
  int elsewhere = not_the_checkpoint ? 1 : 0;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &elsewhere, 1, MPI_INT, MPI_MAX, comm));
  if (elsewhere != 0) {
    throw IoError(fmt::format("restoring {} failed{}: {}", step_dir.string(),
                              state_modified ? ", and the state is partly overwritten" : "",
                              first));
  }
  if (!first.empty()) throw CorruptCheckpoint(first, state_modified);
}

// A file of the step: no symbolic link (the writer makes none, and one
// could lead outside the checkpoint) and of the size the metadata records.
void check_size(FileEnv& env, const fs::path& path, std::uint64_t expected) {
  if (env.is_symlink(path)) {
    throw CorruptCheckpoint(
        fmt::format("{} is a symbolic link; a checkpoint's files are never links", path.string()));
  }
  std::uint64_t size = 0;
  try {
    size = env.file_size(path);
  } catch (const IoError& error) {
    throw CorruptCheckpoint(fmt::format("{} is missing: {}", path.string(), error.what()));
  }
  if (size != expected) {
    throw CorruptCheckpoint(fmt::format("{} has {} bytes, the metadata says {} (truncated?)",
                                        path.string(), size, expected));
  }
}

// One piece of a tensor in one rank file.
struct PieceRead {
  std::size_t tensor = 0;
  const Piece* piece = nullptr;
  std::size_t bytes = 0;
  std::size_t buffer_offset = 0;  // in its reader's private buffer (across nodes)
  std::uint64_t file_offset = 0;  // of its data in the rank file
};

// Reads go in parts of this size: large enough for the disk to stream (the
// kernel reads ahead), small enough that a part is still in the CPU's cache
// when it is checksummed.
constexpr std::size_t kReadChunk = 1U << 20;

// Sorts the pieces of `file_reads` by where their data lies in the rank
// file and checks that they lie inside it without overlapping. With
// `recorded`, their file_offset already holds what the metadata says; for
// checkpoints that did not record it, HDF5 reads the file's headers (small
// reads all over the file, which on a cold cache took a quarter of a
// one-rank restore).
void locate_pieces(const fs::path& path, std::uint64_t file_size, const FlatState& flat,
                   bool recorded, std::vector<std::size_t>& file_reads,
                   std::vector<PieceRead>& reads) {
  if (!recorded) {
    RankFileReader reader(path);
    for (const auto index : file_reads) {
      auto& read = reads[index];
      read.file_offset = reader.data_offset(flat.layouts[read.tensor], *read.piece);
    }
  }
  std::sort(file_reads.begin(), file_reads.end(), [&](std::size_t a, std::size_t b) {
    return reads[a].file_offset < reads[b].file_offset;
  });
  std::uint64_t end = 0;
  for (const auto index : file_reads) {
    const auto& read = reads[index];
    if (read.file_offset < end || read.file_offset > file_size ||
        read.bytes > file_size - read.file_offset) {
      throw CorruptCheckpoint(
          fmt::format("{}: the data of tensor '{}' overlaps other data or "
                      "lies outside the file",
                      path.string(), flat.layouts[read.tensor].path));
    }
    end = read.file_offset + read.bytes;
  }
}

// The rank files one thread reads, each opened at its first use.
class OpenFiles {
 public:
  OpenFiles(FileEnv& env, const fs::path& step_dir, const Metadata& metadata)
      : env_(env), step_dir_(step_dir), metadata_(metadata) {}

  ReadableFile& get(int file) {
    auto& handle = files_[file];
    if (!handle) {
      handle = env_.new_readable_file(step_dir_ / name(file));
    }
    return *handle;
  }
  fs::path path(int file) const { return step_dir_ / name(file); }

 private:
  const std::string& name(int file) const {
    return metadata_.rank_files[static_cast<std::size_t>(file)].name;
  }

  FileEnv& env_;
  const fs::path& step_dir_;
  const Metadata& metadata_;
  std::map<int, std::unique_ptr<ReadableFile>> files_;
};

std::string checksum_mismatch(const fs::path& path, const PieceRead& read, const FlatState& flat) {
  return fmt::format("{}: checksum mismatch in tensor '{}', elements [{}, {})", path.string(),
                     flat.layouts[read.tensor].path, read.piece->begin,
                     read.piece->begin + read.piece->count);
}

// Reads one piece in parts of kReadChunk into `keep` + its buffer_offset and
// checks its CRC-32C. Every failure is the checkpoint's: CorruptCheckpoint.
void verify_piece(OpenFiles& files, const PieceRead& read, const FlatState& flat, std::byte* keep) {
  const int file = read.piece->file;
  std::uint32_t crc = 0;
  try {
    ReadableFile& handle = files.get(file);
    for (std::size_t done = 0; done < read.bytes;) {
      const std::size_t bytes = std::min(kReadChunk, read.bytes - done);
      std::byte* into = keep + read.buffer_offset + done;
      handle.read_at(read.file_offset + done, std::span(into, bytes));
      crc = crc32c(std::span<const std::byte>(into, bytes), crc);
      done += bytes;
    }
  } catch (const IoError& failure) {
    throw CorruptCheckpoint(failure.what());
  }
  if (crc != read.piece->crc32c) {
    throw CorruptCheckpoint(checksum_mismatch(files.path(file), read, flat));
  }
}

// Reads and checks the pieces `order` (by file, then offset) into `keep`, in
// up to `threads` threads, each piece whole on one thread.
void verify_pieces(FileEnv& env, const fs::path& step_dir, const Metadata& metadata,
                   const std::vector<std::size_t>& order, const std::vector<PieceRead>& reads,
                   const FlatState& flat, int threads, std::byte* keep) {
  std::vector<std::size_t> sizes;
  for (const auto index : order) sizes.push_back(reads[index].bytes);
  const auto slots = static_cast<std::size_t>(std::max(1, threads));
  std::vector<std::optional<OpenFiles>> files(slots);
  split_over_threads(sizes, threads, kMinCopyRun, true,
                     [&](int thread, std::size_t k, std::size_t, std::size_t) {
                       const auto slot = static_cast<std::size_t>(thread);
                       if (!files[slot]) files[slot].emplace(env, step_dir, metadata);
                       verify_piece(*files[slot], reads[order[k]], flat, keep);
                     });
}

// A part of one piece that one read fills.
struct ReadPart {
  std::size_t read = 0;   // in `reads`
  std::size_t begin = 0;  // bytes into the piece
  std::size_t end = 0;
};

// The CRC-32C of each of `reads` pieces from those of its parts, which lie
// in order in `parts`.
std::vector<std::uint32_t> chain_part_crcs(const std::vector<ReadPart>& parts,
                                           const std::vector<std::uint32_t>& part_crcs,
                                           std::size_t reads) {
  std::vector<std::uint32_t> crcs(reads, 0);
  for (std::size_t k = 0; k < parts.size(); ++k) {
    auto& crc = crcs[parts[k].read];
    crc = crc32c_combine(crc, part_crcs[k], parts[k].end - parts[k].begin);
  }
  return crcs;
}

// A rank that reads every file alone (one rank) reads in parts of this size
// with direct I/O where the files and tensors allow it: the disk writes into
// the tensors, with no copy through the page cache.
constexpr std::size_t kDirectReadChunk = 8U << 20;

// Direct reads are synchronous and nothing reads ahead of them: while a
// thread checksums the part it just read, it has no read in flight. This
// many threads keep the disk busy; they spend their time waiting for it,
// so their number is not that of the copy threads (the cores). On a 2-core
// VM with a virtio disk, 8 in flight read faster than 2 or 4; 16 were no
// faster.
constexpr int kDirectReadsInFlight = 8;

// On one node every rank walks all files in step, window by window of this
// many bytes of file offset, its own files first in each window: the owner
// of a file reads it from the disk, and the other ranks copy each window out
// of the page cache while the disk is busy with the next one.
constexpr std::uint64_t kFillWindow = 8U << 20;

// Reads one part of a piece into its place in `target` (the piece's
// tensor), with direct I/O when `direct`, and returns the bytes read.
std::span<const std::byte> read_part(OpenFiles& files, const PieceRead& read, const ReadPart& part,
                                     const FlatState& flat, std::byte* target, bool direct) {
  const std::size_t element = dtype_size(flat.layouts[read.tensor].dtype);
  const std::span bytes(target + static_cast<std::size_t>(read.piece->begin) * element + part.begin,
                        part.end - part.begin);
  ReadableFile& file = files.get(read.piece->file);
  if (direct) {
    file.read_direct_at(read.file_offset + part.begin, bytes);
  } else {
    file.read_at(read.file_offset + part.begin, bytes);
  }
  return bytes;
}

// Reads every piece of every rank file straight into `targets`, in parts of
// kReadChunk split over up to `threads` threads (with `direct`: parts of
// kDirectReadChunk through read_direct_at, kDirectReadsInFlight threads),
// and checks the CRC-32C of the pieces of this rank's files (`owner`) from
// the parts just read. Returns the first failure (a read error or a
// checksum mismatch), or an empty string; the tensors hold whatever was
// read.
std::string fill_and_check(FileEnv& env, const fs::path& step_dir, const Metadata& metadata,
                           const std::vector<PieceRead>& reads, const FlatState& flat,
                           const std::vector<std::byte*>& targets, const std::vector<int>& owner,
                           int rank, int threads, bool direct) {
  const auto files_count = static_cast<int>(owner.size());
  int first_own = rank % files_count;
  for (int f = 0; f < files_count; ++f) {
    if (owner[static_cast<std::size_t>(f)] == rank) {
      first_own = f;
      break;
    }
  }
  const std::size_t chunk = direct ? kDirectReadChunk : kReadChunk;
  const int workers = direct ? kDirectReadsInFlight : threads;
  std::vector<ReadPart> parts;
  for (std::size_t i = 0; i < reads.size(); ++i) {
    for (std::size_t begin = 0; begin < reads[i].bytes; begin += chunk) {
      parts.push_back({i, begin, std::min(begin + chunk, reads[i].bytes)});
    }
  }
  const auto key = [&](const ReadPart& part) {
    const auto& read = reads[part.read];
    const std::uint64_t offset = read.file_offset + part.begin;
    const int turn = (read.piece->file - first_own + files_count) % files_count;
    return std::tuple(offset / kFillWindow, turn, offset);
  };
  std::sort(parts.begin(), parts.end(),
            [&](const ReadPart& a, const ReadPart& b) { return key(a) < key(b); });

  std::vector<std::size_t> sizes;
  for (const auto& part : parts) sizes.push_back(part.end - part.begin);
  std::vector<std::uint32_t> part_crcs(parts.size(), 0);
  const auto slots = static_cast<std::size_t>(std::max(1, workers));
  std::vector<std::optional<OpenFiles>> files(slots);
  try {
    split_over_threads(sizes, workers, kMinCopyRun, true,
                       [&](int thread, std::size_t k, std::size_t, std::size_t) {
                         const auto slot = static_cast<std::size_t>(thread);
                         if (!files[slot]) files[slot].emplace(env, step_dir, metadata);
                         const auto& read = reads[parts[k].read];
                         const auto bytes = read_part(*files[slot], read, parts[k], flat,
                                                      targets[read.tensor], direct);
                         if (owner[static_cast<std::size_t>(read.piece->file)] == rank) {
                           part_crcs[k] = crc32c(bytes);
                         }
                       });
  } catch (const IoError& failure) {
    return failure.what();
  }
  const std::vector<std::uint32_t> crcs = chain_part_crcs(parts, part_crcs, reads.size());
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const auto& read = reads[i];
    if (owner[static_cast<std::size_t>(read.piece->file)] != rank) continue;
    if (crcs[i] != read.piece->crc32c) {
      return checksum_mismatch(
          step_dir / metadata.rank_files[static_cast<std::size_t>(read.piece->file)].name, read,
          flat);
    }
  }
  return {};
}

// Sends every piece from the rank that read it into the private `buffer` to
// all ranks' `targets`, in the reader's buffer order, so that the root's
// bytes of a run of pieces are contiguous. Large pieces travel straight
// into the tensors; runs of small ones travel together through a batch
// buffer, because each broadcast costs a round trip that, for hundreds of
// small tensors, outweighs their bytes.
void broadcast_pieces(MPI_Comm comm, int rank, int ranks, const std::vector<int>& owner,
                      const std::vector<const TensorRecord*>& records, const FlatState& flat,
                      std::byte* buffer, const std::vector<std::byte*>& targets) {
  struct Destination {
    std::byte* target;
    std::size_t bytes;
    std::size_t offset;  // in the root's read buffer
  };
  constexpr std::size_t kSmallPiece = 1U << 20;
  constexpr std::size_t kBatchBytes = 32U << 20;
  std::vector<std::byte> batch;
  std::vector<Destination> pending;
  int pending_root = -1;
  const auto flush = [&] {
    if (pending.empty()) return;
    const std::size_t first = pending.front().offset;
    const std::size_t bytes = pending.back().offset + pending.back().bytes - first;
    std::byte* data = nullptr;
    if (pending_root == rank) {
      data = buffer + first;
    } else {
      batch.resize(bytes);
      data = batch.data();
    }
    broadcast_bytes(comm, pending_root, data, bytes);
    for (const auto& piece : pending)
      std::memcpy(piece.target, data + piece.offset - first, piece.bytes);
    pending.clear();
  };
  for (int root = 0; root < ranks; ++root) {
    std::size_t offset = 0;  // the same walk as the root's buffer
    for (std::size_t t = 0; t < records.size(); ++t) {
      const std::size_t element = dtype_size(flat.layouts[t].dtype);
      for (const auto& piece : records[t]->pieces) {
        if (owner[static_cast<std::size_t>(piece.file)] != root) continue;
        const std::size_t bytes = static_cast<std::size_t>(piece.count) * element;
        std::byte* destination = targets[t] + static_cast<std::size_t>(piece.begin) * element;
        if (bytes >= kSmallPiece) {
          flush();
          if (root == rank) std::memcpy(destination, buffer + offset, bytes);
          broadcast_bytes(comm, root, destination, bytes);
        } else {
          const bool fits =
              pending.empty() || offset + bytes - pending.front().offset <= kBatchBytes;
          if (!fits) flush();
          pending_root = root;
          pending.push_back({destination, bytes, offset});
        }
        offset += bytes;
      }
    }
    flush();
  }
}

// Every tensor of the checkpoint must be covered by the ranks' parts of it
// (whole tensors, or chunks): a restore into chunks that leave elements to
// no rank would leave those elements of the optimizer state unset.
// Collective; throws UsageError, the same on every rank.
void check_coverage(MPI_Comm comm, const FlatState& flat,
                    const std::vector<const TensorRecord*>& records, const Metadata& metadata,
                    const fs::path& step_dir) {
  // Whether any rank holds chunks decides for all: a rank with whole
  // tensors only must still join the exchange of one that has chunks.
  int any_sharded = std::any_of(flat.parts.begin(), flat.parts.end(),
                                [](const LocalPart& part) { return part.sharded; })
                        ? 1
                        : 0;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &any_sharded, 1, MPI_INT, MPI_MAX, comm));
  if (any_sharded == 0) return;
  int ranks = 1;
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  // Indexed by the checkpoint's tensor order, which every rank shares.
  const std::size_t tensors = metadata.tensors.size();
  std::vector<std::int64_t> mine(2 * tensors, 0);
  for (std::size_t t = 0; t < records.size(); ++t) {
    const auto index = static_cast<std::size_t>(records[t] - metadata.tensors.data());
    mine[2 * index] = flat.parts[t].begin;
    mine[2 * index + 1] = flat.parts[t].count;
  }
  std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(ranks));
  LOCKSTEP_CHECK_MPI(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_INT64_T,
                                   all.data(), static_cast<int>(mine.size()), MPI_INT64_T, comm));
  for (std::size_t index = 0; index < tensors; ++index) {
    std::vector<std::pair<std::int64_t, std::int64_t>> parts;  // {begin, end}
    for (std::size_t r = 0; r < static_cast<std::size_t>(ranks); ++r) {
      const std::int64_t begin = all[r * mine.size() + 2 * index];
      const std::int64_t count = all[r * mine.size() + 2 * index + 1];
      if (count > 0) parts.emplace_back(begin, begin + count);
    }
    std::sort(parts.begin(), parts.end());
    std::int64_t covered = 0;
    const TensorLayout& layout = metadata.tensors[index].layout;
    for (const auto& [begin, end] : parts) {
      if (begin > covered) break;
      covered = std::max(covered, end);
    }
    if (covered < layout.numel) {
      std::int64_t hole_end = layout.numel;
      for (const auto& [begin, end] : parts) {
        if (begin > covered) {
          hole_end = begin;
          break;
        }
      }
      throw UsageError(fmt::format(
          "restoring {}: the ranks' chunks of tensor '{}' ({}{}) leave elements [{}, {}) to no "
          "rank; the chunks of a restore must cover every tensor",
          step_dir.string(), layout.path, dtype_name(layout.dtype), shape_str(layout.shape),
          covered, hole_end));
    }
  }
}

// One saved piece that overlaps a chunk of this rank, read whole (its
// checksum covers the whole piece): straight into the chunk when the piece
// lies inside it; else part by part through a small buffer of the reading
// thread, from which the bytes inside the chunk are copied.
struct ChunkRead {
  std::size_t tensor = 0;  // in the chunks' FlatState
  const Piece* piece = nullptr;
  std::uint64_t file_offset = 0;
  std::size_t bytes = 0;
  bool inside = true;
  // The piece's bytes [overlap_begin, overlap_end) belong to the chunk,
  // from `at` bytes into the chunk's memory on.
  std::size_t overlap_begin = 0;
  std::size_t overlap_end = 0;
  std::size_t at = 0;
  std::byte* target = nullptr;  // the chunk's memory + at, once the buffers exist
};

// Fills this rank's chunks of sharded tensors from every saved piece that
// overlaps them, in parts of kReadChunk split over up to `threads` threads,
// each part checksummed as it is read; a chunk on a GPU goes through one
// host buffer. Returns the first failure (CorruptCheckpoint's message), or
// an empty string; `modified` says whether a chunk already holds bytes of
// the checkpoint.
std::string fill_chunks(FileEnv& env, const fs::path& step_dir, const Metadata& metadata,
                        FlatState& flat, const std::vector<const TensorRecord*>& records,
                        int threads, bool& modified) {
  std::vector<ChunkRead> reads;
  std::size_t bounce_bytes = 0;
  std::vector<std::size_t> bounce_offsets(records.size(), 0);
  std::vector<bool> checked_file(metadata.rank_files.size(), false);
  std::map<int, std::unique_ptr<RankFileReader>> readers;  // for offsets not recorded
  try {
    for (std::size_t t = 0; t < records.size(); ++t) {
      const LocalPart& part = flat.parts[t];
      if (!part.sharded || part.count == 0) continue;
      const TensorLayout& layout = flat.layouts[t];
      const std::size_t element = dtype_size(layout.dtype);
      if (!flat.tensors[t].device().is_cpu()) {
        bounce_offsets[t] = bounce_bytes;
        bounce_bytes += flat.tensors[t].nbytes();
      }
      const std::int64_t end = part.begin + part.count;
      for (const Piece& piece : records[t]->pieces) {
        const std::int64_t first = std::max(part.begin, piece.begin);
        const std::int64_t last = std::min(end, piece.begin + piece.count);
        if (first >= last) continue;
        const auto& record = metadata.rank_files[static_cast<std::size_t>(piece.file)];
        const fs::path path = step_dir / record.name;
        if (!checked_file[static_cast<std::size_t>(piece.file)]) {
          check_size(env, path, record.size);
          checked_file[static_cast<std::size_t>(piece.file)] = true;
        }
        std::uint64_t offset = piece.offset;
        if (offset == Piece::kUnknownOffset) {
          auto& reader = readers[piece.file];
          if (!reader) reader = std::make_unique<RankFileReader>(path);
          offset = reader->data_offset(layout, piece);
        }
        const std::size_t bytes = static_cast<std::size_t>(piece.count) * element;
        if (offset > record.size || bytes > record.size - offset) {
          throw CorruptCheckpoint(fmt::format("{}: the data of tensor '{}' lies outside the file",
                                              path.string(), layout.path));
        }
        reads.push_back({.tensor = t,
                         .piece = &piece,
                         .file_offset = offset,
                         .bytes = bytes,
                         .inside = piece.begin >= part.begin && piece.begin + piece.count <= end,
                         .overlap_begin = static_cast<std::size_t>(first - piece.begin) * element,
                         .overlap_end = static_cast<std::size_t>(last - piece.begin) * element,
                         .at = static_cast<std::size_t>(first - part.begin) * element});
      }
    }
  } catch (const CorruptCheckpoint& failure) {
    return failure.what();
  }
  if (reads.empty()) return {};
  std::optional<HostBuffer> bounce;
  if (bounce_bytes > 0) bounce.emplace(bounce_bytes);
  const auto base = [&](std::size_t t) {
    Tensor& tensor = flat.tensors[t];
    return tensor.device().is_cpu() ? static_cast<std::byte*>(tensor.data())
                                    : bounce->data() + bounce_offsets[t];
  };
  for (ChunkRead& read : reads) read.target = base(read.tensor) + read.at;
  // Pieces in file order, cut into parts: the disk streams each file.
  std::sort(reads.begin(), reads.end(), [](const ChunkRead& a, const ChunkRead& b) {
    return std::tie(a.piece->file, a.file_offset) < std::tie(b.piece->file, b.file_offset);
  });
  std::vector<ReadPart> parts;
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < reads.size(); ++i) {
    for (std::size_t begin = 0; begin < reads[i].bytes; begin += kReadChunk) {
      const std::size_t end = std::min(begin + kReadChunk, reads[i].bytes);
      parts.push_back({i, begin, end});
      sizes.push_back(end - begin);
    }
  }
  // Whatever fails from here on, host chunks may hold some of the bytes.
  modified = modified || std::any_of(reads.begin(), reads.end(), [&](const ChunkRead& read) {
               return flat.tensors[read.tensor].device().is_cpu();
             });
  std::vector<std::uint32_t> part_crcs(parts.size(), 0);
  const auto slots = static_cast<std::size_t>(std::max(1, threads));
  std::vector<std::optional<OpenFiles>> files(slots);
  std::vector<std::vector<std::byte>> buffers(slots);  // for pieces beyond their chunk
  try {
    split_over_threads(sizes, threads, kMinCopyRun, true,
                       [&](int thread, std::size_t k, std::size_t, std::size_t) {
                         const auto slot = static_cast<std::size_t>(thread);
                         if (!files[slot]) files[slot].emplace(env, step_dir, metadata);
                         const ChunkRead& read = reads[parts[k].read];
                         const std::size_t begin = parts[k].begin;
                         const std::size_t end = parts[k].end;
                         ReadableFile& file = files[slot]->get(read.piece->file);
                         if (read.inside) {
                           const std::span into(read.target + (begin - read.overlap_begin),
                                                end - begin);
                           file.read_at(read.file_offset + begin, into);
                           part_crcs[k] = crc32c(std::span<const std::byte>(into));
                           return;
                         }
                         auto& buffer = buffers[slot];
                         buffer.resize(kReadChunk);
                         const std::span into(buffer.data(), end - begin);
                         file.read_at(read.file_offset + begin, into);
                         part_crcs[k] = crc32c(std::span<const std::byte>(into));
                         const std::size_t from = std::max(begin, read.overlap_begin);
                         const std::size_t to = std::min(end, read.overlap_end);
                         if (from < to) {
                           std::memcpy(read.target + (from - read.overlap_begin),
                                       buffer.data() + (from - begin), to - from);
                         }
                       });
  } catch (const IoError& failure) {
    return failure.what();
  }
  const std::vector<std::uint32_t> crcs = chain_part_crcs(parts, part_crcs, reads.size());
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const ChunkRead& read = reads[i];
    if (crcs[i] == read.piece->crc32c) continue;
    return fmt::format(
        "{}: checksum mismatch in tensor '{}', elements [{}, {})",
        (step_dir / metadata.rank_files[static_cast<std::size_t>(read.piece->file)].name).string(),
        flat.layouts[read.tensor].path, read.piece->begin, read.piece->begin + read.piece->count);
  }
  for (std::size_t t = 0; t < records.size(); ++t) {
    Tensor& tensor = flat.tensors[t];
    if (tensor.device().is_cpu() || !flat.parts[t].sharded || flat.parts[t].count == 0) continue;
#if LOCKSTEP_HAVE_CUDA
    LOCKSTEP_CHECK_CUDA(
        cudaMemcpy(tensor.data(), base(t), tensor.nbytes(), cudaMemcpyHostToDevice));
    modified = true;
#else
    throw UsageError(fmt::format("tensor {} lives on {}, but lockstep was built without CUDA",
                                 tensor.name(), tensor.device().str()));
#endif
  }
  return {};
}

}  // namespace

void restore_step(FileEnv& env, const fs::path& step_dir, std::int64_t step, State& state,
                  MPI_Comm comm, int threads, Exchange exchange) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));

  // Rank 0 reads the metadata for everyone.
  const fs::path metadata_path = step_dir / kMetadataFile;
  std::string text;
  std::string error;
  if (rank == 0) {
    try {
      text = read_metadata_text(env, step_dir);
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  }
  broadcast_text(comm, 0, error);
  if (!error.empty()) throw CorruptCheckpoint(error);
  broadcast_text(comm, 0, text);
  // Every rank parses the metadata (the same text: damage is found alike
  // everywhere) and matches its own state against it; a rank whose state
  // does not fit (another shape, a bad name) or that fails otherwise (no
  // memory) fails the restore on every rank, instead of leaving the others
  // waiting for it.
  Metadata metadata;
  FlatState flat;
  std::vector<const TensorRecord*> records;
  std::exception_ptr mismatch;
  try {
    metadata = parse_metadata(text, metadata_path.string());
    if (metadata.step != step) {
      throw CorruptCheckpoint(fmt::format("{} is of step {}, its directory of step {}",
                                          metadata_path.string(), metadata.step, step));
    }
    flat = flatten(state);
    records = match_state(flat, metadata, step_dir);
    for (const auto& item : state.items()) {
      if (item.values != nullptr && !metadata.values.contains(item.name)) {
        throw UsageError(fmt::format("key/values '{}' of the state are not in checkpoint {}",
                                     item.name, step_dir.string()));
      }
    }
  } catch (...) {
    mismatch = std::current_exception();
  }
  agree_or_throw(comm, mismatch);
  check_coverage(comm, flat, records, metadata, step_dir);

  // Whole tensors first, in the steps below; chunks of sharded tensors
  // after them, each rank reading only the pieces its chunks overlap.
  FlatState chunks;
  std::vector<const TensorRecord*> chunk_records;
  {
    FlatState whole;
    std::vector<const TensorRecord*> whole_records;
    for (std::size_t t = 0; t < records.size(); ++t) {
      FlatState& into = flat.parts[t].sharded ? chunks : whole;
      into.layouts.push_back(flat.layouts[t]);
      into.tensors.push_back(flat.tensors[t]);
      into.parts.push_back(flat.parts[t]);
      (flat.parts[t].sharded ? chunk_records : whole_records).push_back(records[t]);
    }
    flat = std::move(whole);
    records = std::move(whole_records);
  }

  // Saving rank f's file is verified by loading rank owner[f]; each loading
  // rank gets a contiguous run of files, so the work is split evenly
  // whichever world is larger.
  const int saved_ranks = metadata.world_size;
  std::vector<int> owner(static_cast<std::size_t>(saved_ranks));
  for (int j = 0; j < ranks; ++j) {
    const auto first = static_cast<std::int64_t>(j) * saved_ranks / ranks;
    const auto last = static_cast<std::int64_t>(j + 1) * saved_ranks / ranks;
    for (auto f = first; f < last; ++f) owner[static_cast<std::size_t>(f)] = j;
  }

  // Every piece, in tensor order, and the pieces of each rank file.
  std::vector<PieceRead> reads;
  std::vector<std::vector<std::size_t>> reads_of_file(static_cast<std::size_t>(saved_ranks));
  std::size_t buffer_bytes = 0;  // of this rank's pieces
  for (std::size_t t = 0; t < records.size(); ++t) {
    for (const auto& piece : records[t]->pieces) {
      const std::size_t bytes =
          static_cast<std::size_t>(piece.count) * dtype_size(flat.layouts[t].dtype);
      const bool own = owner[static_cast<std::size_t>(piece.file)] == rank;
      reads_of_file[static_cast<std::size_t>(piece.file)].push_back(reads.size());
      reads.push_back(
          {.tensor = t, .piece = &piece, .bytes = bytes, .buffer_offset = own ? buffer_bytes : 0});
      if (own) buffer_bytes += bytes;
    }
  }
  // Where each piece lies in its file, as the metadata records it (every
  // rank holds the same metadata, so all agree on `recorded`).
  const bool recorded = std::all_of(reads.begin(), reads.end(), [](const PieceRead& read) {
    return read.piece->offset != Piece::kUnknownOffset;
  });
  if (recorded) {
    for (auto& read : reads) read.file_offset = read.piece->offset;
  }

  // All ranks on one node share the page cache: each rank reads every file
  // straight into its tensors, checking the checksums of its own share as it
  // goes; the other ranks' reads of a file come from the page cache its owner
  // filled. Across nodes, the readers check their share into a private
  // buffer and broadcast it.
  const bool one_node = exchange == Exchange::kAutomatic ? ranks_on_node(comm) == ranks
                                                         : exchange == Exchange::kReadAll;

  // Check this rank's files: sizes, where each piece lies and, across
  // nodes, the checksums. Nothing is written into the tensors
  // before every rank has passed these checks, so a missing, truncated or
  // malformed file leaves them untouched.
  const auto checking = std::chrono::steady_clock::now();
  // Where each tensor's bytes land on this rank: the tensor itself, or for
  // a GPU tensor its place in one host bounce buffer, copied to the device
  // at the end. One uninitialised buffer of huge pages: a pinned, zeroed
  // allocation per tensor took longer than reading the checkpoint. Both
  // buffers are allocated inside the try: a rank that cannot get the memory
  // must still join the verdict below, or the others would wait for it
  // forever.
  std::vector<std::byte*> targets(records.size());
  std::optional<HostBuffer> bounce;
  std::optional<HostBuffer> buffer;
  bool not_the_checkpoint = false;
  try {
    if (!one_node) buffer.emplace(buffer_bytes);
    constexpr std::size_t kAlign = 64;
    std::vector<std::size_t> bounce_offsets(records.size(), 0);
    std::size_t bounce_bytes = 0;
    for (std::size_t t = 0; t < records.size(); ++t) {
      if (flat.tensors[t].device().is_cpu()) continue;
      bounce_offsets[t] = bounce_bytes;
      bounce_bytes += (flat.tensors[t].nbytes() + kAlign - 1) / kAlign * kAlign;
    }
    if (bounce_bytes > 0) bounce.emplace(bounce_bytes);
    for (std::size_t t = 0; t < records.size(); ++t) {
      Tensor& tensor = flat.tensors[t];
      targets[t] = tensor.device().is_cpu() ? static_cast<std::byte*>(tensor.data())
                                            : bounce->data() + bounce_offsets[t];
    }
    if (rank == 0) check_size(env, step_dir / kMasterFile, metadata.master_file.size);
    std::vector<std::size_t> order;  // this rank's pieces, by file and offset
    for (int f = 0; f < saved_ranks; ++f) {
      if (owner[static_cast<std::size_t>(f)] != rank) continue;
      const auto& record = metadata.rank_files[static_cast<std::size_t>(f)];
      const fs::path path = step_dir / record.name;
      check_size(env, path, record.size);
      auto& file_reads = reads_of_file[static_cast<std::size_t>(f)];
      std::unique_ptr<ReadableFile> file;
      try {
        file = env.new_readable_file(path);
      } catch (const IoError& failure) {
        throw CorruptCheckpoint(failure.what());
      }
      // Across nodes the check pass reads the whole file: reading it ahead
      // lets the disk stream while the pieces are checked (and serves the
      // small reads of HDF5's headers in checkpoints without recorded
      // offsets). On one node the ranks' fill reads the files in step
      // instead, and a read ahead of all of them would compete with it.
      if (!one_node) file->prefetch(0, record.size);
      locate_pieces(path, record.size, flat, recorded, file_reads, reads);
      order.insert(order.end(), file_reads.begin(), file_reads.end());
    }
    if (!one_node)
      verify_pieces(env, step_dir, metadata, order, reads, flat, threads, buffer->data());
  } catch (const CorruptCheckpoint& failure) {
    error = failure.what();
  } catch (const std::exception& failure) {
    // Not the checkpoint's fault (memory, a library failure): falling back
    // to an older step would hide it, so every rank reports it instead.
    error = failure.what();
    not_the_checkpoint = true;
  }
  agree(comm, step_dir, error, not_the_checkpoint, false);
  const auto checked = std::chrono::steady_clock::now();

  if (one_node) {
    // Recorded offsets are every rank's already (the owners checked those
    // of their files above); otherwise each comes from the rank that
    // located it.
    if (!recorded) {
      std::vector<std::uint64_t> offsets(reads.size(), 0);
      for (std::size_t i = 0; i < reads.size(); ++i) offsets[i] = reads[i].file_offset;
      LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, offsets.data(),
                                       static_cast<int>(offsets.size()), MPI_UINT64_T, MPI_MAX,
                                       comm));
      for (std::size_t i = 0; i < reads.size(); ++i) reads[i].file_offset = offsets[i];
    }
    error.clear();
    try {
      error = fill_and_check(env, step_dir, metadata, reads, flat, targets, owner, rank, threads,
                             ranks == 1);
    } catch (const std::exception& failure) {
      error = failure.what();
      not_the_checkpoint = true;
    }
    // A checksum that fails now fails the checkpoint as before, but the
    // host tensors already hold some of its bytes.
    const bool host_tensors = std::any_of(reads.begin(), reads.end(), [&](const PieceRead& read) {
      return flat.tensors[read.tensor].device().is_cpu();
    });
    agree(comm, step_dir, error, not_the_checkpoint, host_tensors);
  } else {
    broadcast_pieces(comm, rank, ranks, owner, records, flat, buffer ? buffer->data() : nullptr,
                     targets);
  }
  // GPU tensors get their bytes from the host buffer; a rank that fails
  // here fails the restore on every rank, so that none trains on alone.
  std::exception_ptr copy_failure;
  try {
    for (std::size_t t = 0; t < records.size(); ++t) {
      Tensor& tensor = flat.tensors[t];
      if (tensor.device().is_cpu()) continue;
#if LOCKSTEP_HAVE_CUDA
      LOCKSTEP_CHECK_CUDA(
          cudaMemcpy(tensor.data(), targets[t], tensor.nbytes(), cudaMemcpyHostToDevice));
#else
      throw UsageError(fmt::format("tensor {} lives on {}, but lockstep was built without CUDA",
                                   tensor.name(), tensor.device().str()));
#endif
    }
  } catch (...) {
    copy_failure = std::current_exception();
  }
  agree_or_throw(comm, copy_failure);

  const auto filled = std::chrono::steady_clock::now();
  {
    bool modified = false;
    error.clear();
    not_the_checkpoint = false;
    try {
      error = fill_chunks(env, step_dir, metadata, chunks, chunk_records, threads, modified);
    } catch (const std::exception& failure) {
      error = failure.what();
      not_the_checkpoint = true;
    }
    // The whole tensors already hold the checkpoint's bytes, if there are
    // any; a failure now leaves the state partly overwritten.
    int any_modified = modified || !records.empty() ? 1 : 0;
    LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &any_modified, 1, MPI_INT, MPI_MAX, comm));
    agree(comm, step_dir, error, not_the_checkpoint, any_modified != 0);
  }
  for (const auto& item : state.items()) {
    if (item.values != nullptr) *item.values = metadata.values.at(item.name);
  }
  log::debug("restore of step {}: checks {:.3f} s, {} {:.3f} s, chunks {:.3f} s", step,
             std::chrono::duration<double>(checked - checking).count(),
             one_node ? "fill and checksums" : "broadcast",
             std::chrono::duration<double>(filled - checked).count(),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - filled).count());
}

}  // namespace lockstep::checkpoint
