#include "restore.h"

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

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

// Pieces must tile each tensor exactly, or reading them would write out of
// bounds; a checkpoint whose metadata says otherwise is corrupt.
void check_pieces(const Metadata& metadata, const fs::path& where) {
  for (const auto& record : metadata.tensors) {
    std::int64_t next = 0;
    for (const auto& piece : record.pieces) {
      if (piece.begin != next || piece.count <= 0 || piece.file < 0 ||
          piece.file >= metadata.world_size) {
        throw CorruptCheckpoint(fmt::format("{}: the pieces of tensor '{}' do not tile it",
                                            where.string(), record.layout.path));
      }
      next += piece.count;
    }
    if (next != record.layout.numel) {
      throw CorruptCheckpoint(fmt::format("{}: the pieces of tensor '{}' cover {} of {} elements",
                                          where.string(), record.layout.path, next,
                                          record.layout.numel));
    }
  }
}

void check_size(FileEnv& env, const fs::path& path, std::uint64_t expected) {
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

}  // namespace

void restore_step(FileEnv& env, const fs::path& step_dir, std::int64_t step, State& state,
                  MPI_Comm comm) {
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
      text = env.read_file(metadata_path);
    } catch (const std::exception& failure) {
      error = fmt::format("incomplete checkpoint: {}", failure.what());
    }
  }
  broadcast_text(comm, 0, error);
  if (!error.empty()) throw CorruptCheckpoint(error);
  broadcast_text(comm, 0, text);
  const Metadata metadata = parse_metadata(text, metadata_path.string());
  if (metadata.step != step) {
    throw CorruptCheckpoint(fmt::format("{} is of step {}, its directory of step {}",
                                        metadata_path.string(), metadata.step, step));
  }
  check_pieces(metadata, step_dir);
  FlatState flat = flatten(state);
  const auto records = match_state(flat, metadata, step_dir);
  for (const auto& item : state.items()) {
    if (item.values != nullptr && !metadata.values.contains(item.name)) {
      throw UsageError(fmt::format("key/values '{}' of the state are not in checkpoint {}",
                                   item.name, step_dir.string()));
    }
  }

  // Saving rank f's file is read by loading rank owner[f]; each loading rank
  // gets a contiguous run of files, so the work is split evenly whichever
  // world is larger.
  const int saved_ranks = metadata.world_size;
  std::vector<int> owner(static_cast<std::size_t>(saved_ranks));
  for (int j = 0; j < ranks; ++j) {
    const auto first = static_cast<std::int64_t>(j) * saved_ranks / ranks;
    const auto last = static_cast<std::int64_t>(j + 1) * saved_ranks / ranks;
    for (auto f = first; f < last; ++f) owner[static_cast<std::size_t>(f)] = j;
  }

  // Read and verify this rank's pieces into a buffer of its own, so that a
  // damaged checkpoint leaves the caller's tensors untouched.
  struct Loaded {
    std::size_t tensor;
    const Piece* piece;
    std::size_t offset;  // in `buffer`
  };
  std::vector<Loaded> loaded;
  std::size_t buffer_bytes = 0;
  for (std::size_t t = 0; t < records.size(); ++t) {
    for (const auto& piece : records[t]->pieces) {
      if (owner[static_cast<std::size_t>(piece.file)] != rank) continue;
      loaded.push_back({t, &piece, buffer_bytes});
      buffer_bytes += static_cast<std::size_t>(piece.count) * dtype_size(flat.layouts[t].dtype);
    }
  }
  const auto reading = std::chrono::steady_clock::now();
  // Allocated inside the try: a rank that cannot get the memory must still
  // join the verdict below, or the others would wait for it forever.
  std::optional<HostBuffer> buffer;
  int not_the_checkpoint = 0;
  try {
    buffer.emplace(buffer_bytes);
    if (rank == 0) check_size(env, step_dir / kMasterFile, metadata.master_file.size);
    for (int f = 0; f < saved_ranks; ++f) {
      if (owner[static_cast<std::size_t>(f)] != rank) continue;
      const auto& record = metadata.rank_files[static_cast<std::size_t>(f)];
      const fs::path path = step_dir / record.name;
      check_size(env, path, record.size);
      RankFileReader reader(path);
      for (const auto& entry : loaded) {
        if (entry.piece->file != f) continue;
        const auto& layout = flat.layouts[entry.tensor];
        const std::span<std::byte> out(
            buffer->data() + entry.offset,
            static_cast<std::size_t>(entry.piece->count) * dtype_size(layout.dtype));
        reader.read(layout, *entry.piece, out);
        if (crc32c(out) != entry.piece->crc32c) {
          throw CorruptCheckpoint(fmt::format(
              "{}: checksum mismatch in tensor '{}', elements [{}, {})", path.string(), layout.path,
              entry.piece->begin, entry.piece->begin + entry.piece->count));
        }
      }
    }
  } catch (const CorruptCheckpoint& failure) {
    error = failure.what();
  } catch (const std::exception& failure) {
    // Not the checkpoint's fault (memory, a library failure): falling back
    // to an older step would hide it, so every rank reports it instead.
    error = failure.what();
    not_the_checkpoint = 1;
  }
  const auto verified = std::chrono::steady_clock::now();
  error = first_error(comm, error);
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &not_the_checkpoint, 1, MPI_INT, MPI_MAX, comm));
  if (not_the_checkpoint != 0) {
    throw IoError(fmt::format("restoring {} failed: {}", step_dir.string(), error));
  }
  if (!error.empty()) throw CorruptCheckpoint(error);

  // Where each tensor's bytes land on this rank: the tensor itself, or a
  // host bounce buffer for a GPU tensor, copied to the device at the end.
  std::vector<std::byte*> targets(records.size());
  std::vector<Tensor> bounces(records.size());
  for (std::size_t t = 0; t < records.size(); ++t) {
    Tensor& tensor = flat.tensors[t];
    if (tensor.device().is_cpu()) {
      targets[t] = static_cast<std::byte*>(tensor.data());
      continue;
    }
    bounces[t] = Tensor::allocate("restore bounce", DType::kU8,
                                  {static_cast<std::int64_t>(tensor.nbytes())});
    targets[t] = static_cast<std::byte*>(bounces[t].data());
  }

  // Every piece goes from its reader to all ranks, in the reader's buffer
  // order, so that the root's bytes of a run of pieces are contiguous.
  // Large pieces travel straight into the tensors; runs of small ones travel
  // together through a batch buffer, because each broadcast costs a round
  // trip that, for hundreds of small tensors, outweighs their bytes.
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
      data = buffer->data() + first;
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
    std::size_t offset = 0;  // the same walk as `loaded` on the root
    for (std::size_t t = 0; t < records.size(); ++t) {
      const std::size_t element = dtype_size(flat.layouts[t].dtype);
      for (const auto& piece : records[t]->pieces) {
        if (owner[static_cast<std::size_t>(piece.file)] != root) continue;
        const std::size_t bytes = static_cast<std::size_t>(piece.count) * element;
        std::byte* destination = targets[t] + static_cast<std::size_t>(piece.begin) * element;
        if (bytes >= kSmallPiece) {
          flush();
          if (root == rank) std::memcpy(destination, buffer->data() + offset, bytes);
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
  for (std::size_t t = 0; t < records.size(); ++t) {
    Tensor& tensor = flat.tensors[t];
    if (tensor.device().is_cpu()) continue;
#if LOCKSTEP_HAVE_CUDA
    LOCKSTEP_CHECK_CUDA(
        cudaMemcpy(tensor.data(), bounces[t].data(), tensor.nbytes(), cudaMemcpyHostToDevice));
#else
    throw UsageError(fmt::format("tensor {} lives on {}, but lockstep was built without CUDA",
                                 tensor.name(), tensor.device().str()));
#endif
  }
  for (const auto& item : state.items()) {
    if (item.values != nullptr) *item.values = metadata.values.at(item.name);
  }
  log::debug("restore of step {}: read and verify {:.3f} s, exchange {:.3f} s", step,
             std::chrono::duration<double>(verified - reading).count(),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - verified).count());
}

}  // namespace lockstep::checkpoint
