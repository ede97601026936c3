#include "save_job.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "collective_text.h"
#include "crc32c.h"
#include "directory.h"
#include "hdf5_files.h"
#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "lockstep/trace.h"
#include "metadata.h"
#include "parallel_copy.h"

namespace lockstep::checkpoint {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Large enough to stream at disk speed, small enough to stay in the CPU's
// cache between its checksum and a buffered write, and that a fault injected
// "after N bytes" can land inside a file.
constexpr std::size_t kWriteChunk = 4U << 20;

void copy_to_host(const Tensor& tensor, std::size_t offset, std::size_t bytes, std::byte* out) {
  const auto* source = static_cast<const std::byte*>(tensor.data()) + offset;
  if (tensor.device().is_cpu()) {
    std::memcpy(out, source, bytes);
    return;
  }
#if LOCKSTEP_HAVE_CUDA
  LOCKSTEP_CHECK_CUDA(cudaMemcpy(out, source, bytes, cudaMemcpyDeviceToHost));
#else
  throw UsageError(fmt::format("tensor {} lives on {}, but lockstep was built without CUDA",
                               tensor.name(), tensor.device().str()));
#endif
}

// Writes this rank's file: HDF5's bytes from the plan, interleaved with the
// staged data, then fsync and a size check. Each chunk is checksummed just
// before it is written (a direct write takes the staged bytes where they
// are; a buffered one copies them while they are still in the CPU's cache),
// so the CPU reads the data once; the whole file's CRC-32C is combined from the
// segments' without reading anything again. Returns the file's CRC-32C and
// fills `piece_crcs` with that of each piece, in the order of `sources`.
std::uint32_t write_rank_file(FileEnv& env, const fs::path& path, const RankFilePlan& plan,
                              const std::vector<std::span<const std::byte>>& sources,
                              std::vector<std::uint32_t>& piece_crcs) {
  piece_crcs.assign(sources.size(), 0);
  auto file = env.new_writable_file(path);
  std::uint32_t file_crc = 0;
  const auto contents = rank_file_contents(plan, sources);
  for (std::size_t s = 0; s < contents.size(); ++s) {
    const auto bytes = contents[s];
    std::uint32_t crc = 0;
    for (std::size_t offset = 0; offset < bytes.size(); offset += kWriteChunk) {
      const auto chunk = bytes.subspan(offset, std::min(kWriteChunk, bytes.size() - offset));
      crc = crc32c(chunk, crc);
      file->append(chunk);
    }
    file_crc = crc32c_combine(file_crc, crc, bytes.size());
    const auto& segment = plan.segments[s];
    if (segment.data) piece_crcs[segment.piece] = crc;
  }
  file->sync();
  file->close();
  const std::uint64_t size = env.file_size(path);
  if (size != plan.file_size) {
    throw IoError(fmt::format("short write: {} holds {} of {} bytes after fsync", path.string(),
                              size, plan.file_size));
  }
  return file_crc;
}

std::string utc_now(double* unix_seconds) {
  const auto now = std::chrono::system_clock::now();
  *unix_seconds = std::chrono::duration<double>(now.time_since_epoch()).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}Z",
                     fmt::gmtime(std::chrono::system_clock::to_time_t(now)));
}

double seconds_between(std::chrono::steady_clock::time_point start,
                       std::chrono::steady_clock::time_point end) {
  return std::chrono::duration<double>(end - start).count();
}

}  // namespace

std::vector<std::span<const std::byte>> rank_file_contents(
    const RankFilePlan& plan, const std::vector<std::span<const std::byte>>& sources) {
  std::vector<std::span<const std::byte>> contents;
  contents.reserve(plan.segments.size());
  for (const auto& segment : plan.segments) {
    if (!segment.data) {
      contents.push_back(
          std::span<const std::byte>(plan.header_bytes).subspan(segment.offset, segment.size));
    } else if (segment.piece < sources.size() && sources[segment.piece].size() == segment.size) {
      contents.push_back(sources[segment.piece]);
    } else {
      throw std::logic_error("the plan of a rank file does not match the staged pieces");
    }
  }
  return contents;
}

std::string random_token() {
  std::random_device device;
  const std::uint64_t value = (static_cast<std::uint64_t>(device()) << 32) | device();
  return fmt::format("{:016x}", value);
}

std::string shared_token(MPI_Comm comm) {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  std::string token;
  std::string error;
  if (rank == 0) {
    try {
      token = random_token();
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  }
  error = first_error(comm, error);
  if (!error.empty()) throw IoError(error);
  broadcast_text(comm, 0, token);
  return token;
}

void write_durably(FileEnv& env, const fs::path& path, std::span<const std::byte> bytes) {
  auto file = env.new_writable_file(path);
  for (std::size_t offset = 0; offset < bytes.size(); offset += kWriteChunk) {
    file->append(bytes.subspan(offset, std::min(kWriteChunk, bytes.size() - offset)));
  }
  file->sync();
  file->close();
  const std::uint64_t size = env.file_size(path);
  if (size != bytes.size()) {
    throw IoError(fmt::format("short write: {} holds {} of {} bytes after fsync", path.string(),
                              size, bytes.size()));
  }
}

std::uint64_t save_fingerprint(std::int64_t step, const FlatState& flat) {
  const std::vector<TensorLayout>& layouts = flat.layouts;
  // FNV-1a over the fields, each followed by a separator.
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  const auto add = [&](const void* data, std::size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < bytes; ++i) {
      hash ^= p[i];
      hash *= 0x100000001b3ULL;
    }
  };
  const auto add_integer = [&](std::int64_t value) { add(&value, sizeof(value)); };
  add_integer(step);
  for (std::size_t t = 0; t < layouts.size(); ++t) {
    const TensorLayout& layout = layouts[t];
    add(layout.path.data(), layout.path.size() + 1);  // with its terminating '\0'
    add_integer(flat.parts[t].sharded ? 1 : 0);
    add_integer(static_cast<std::int64_t>(layout.dtype));
    add_integer(static_cast<std::int64_t>(layout.shape.size()));
    for (const auto dim : layout.shape) add_integer(dim);
  }
  return hash;
}

std::vector<std::vector<Piece>> gather_pieces(const FlatState& flat, MPI_Comm comm) {
  int rank = 0;
  int ranks = 1;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  std::vector<std::int64_t> mine;
  for (const LocalPart& part : flat.parts) {
    if (part.sharded) mine.insert(mine.end(), {part.begin, part.count});
  }
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> chunks(
      static_cast<std::size_t>(ranks));
  if (!mine.empty()) {
    // Every rank has as many sharded tensors: the fingerprint agreed.
    std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(ranks));
    LOCKSTEP_CHECK_MPI(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_INT64_T,
                                     all.data(), static_cast<int>(mine.size()), MPI_INT64_T, comm));
    for (std::size_t r = 0; r < chunks.size(); ++r) {
      for (std::size_t k = 0; k < mine.size(); k += 2) {
        chunks[r].emplace_back(all[r * mine.size() + k], all[r * mine.size() + k + 1]);
      }
    }
  }
  return plan_pieces(flat, chunks, ranks);
}

StagedSave stage(std::int64_t step, const State& state, FlatState flat,
                 std::vector<std::vector<Piece>> pieces, int rank, int world_size, bool copy,
                 int threads, Tensor staging, std::shared_ptr<const RankFilePlan> rank_file,
                 std::shared_ptr<const MasterFileTemplate> master_file) {
  StagedSave staged;
  staged.master_file = std::move(master_file);
  staged.step = step;
  staged.rank = rank;
  staged.world_size = world_size;
  staged.layouts = flat.layouts;
  for (const LocalPart& part : flat.parts) staged.sharded.push_back(part.sharded);
  staged.pieces = std::move(pieces);
  staged.own_pieces.resize(staged.layouts.size());
  for (std::size_t t = 0; t < staged.layouts.size(); ++t) {
    for (const auto& piece : staged.pieces[t]) {
      if (piece.file == rank) {
        staged.own_pieces[t].push_back(piece);
      }
    }
  }
  if (!rank_file || rank_file->key != rank_file_key(staged.layouts, staged.own_pieces)) {
    rank_file = nullptr;  // the old plan's memory goes before the new one is built
    rank_file =
        std::make_shared<const RankFilePlan>(plan_rank_file(staged.layouts, staged.own_pieces));
  }
  staged.rank_file = std::move(rank_file);
  for (const auto& tensor : flat.tensors) copy = copy || !tensor.device().is_cpu();
  const RankFilePlan& plan = *staged.rank_file;
  if (copy && staging.nbytes() < plan.staged_size) {
    staging = Tensor::allocate("checkpoint staging", DType::kU8,
                               {static_cast<std::int64_t>(plan.staged_size)});
  }
  staged.staging = staging;
  // Each piece's bytes: where they are in the tensor, and where the writer
  // takes them from.
  struct Source {
    std::size_t tensor;
    std::size_t offset;
    std::byte* staged;
  };
  std::vector<Source> origins;
  std::vector<std::size_t> sizes;
  bool all_on_host = true;
  auto* base = copy ? static_cast<std::byte*>(staged.staging.data()) : nullptr;
  for (std::size_t t = 0; t < staged.layouts.size(); ++t) {
    const std::size_t element = dtype_size(staged.layouts[t].dtype);
    all_on_host = all_on_host && flat.tensors[t].device().is_cpu();
    for (const auto& piece : staged.own_pieces[t]) {
      // Where the piece starts in this rank's tensor (a chunk starts at its
      // `begin` of the global tensor).
      const std::size_t offset =
          static_cast<std::size_t>(piece.begin - flat.parts[t].begin) * element;
      const std::size_t bytes = static_cast<std::size_t>(piece.count) * element;
      std::byte* out = copy ? base + plan.staged_offsets.at(staged.sources.size()) : nullptr;
      origins.push_back({t, offset, out});
      sizes.push_back(bytes);
      if (copy) {
        staged.sources.emplace_back(out, bytes);
      } else {
        staged.sources.emplace_back(static_cast<const std::byte*>(flat.tensors[t].data()) + offset,
                                    bytes);
      }
    }
    if (rank == 0 && staged.layouts[t].shape.empty()) {
      const std::size_t offset = staged.scalars.size();
      staged.scalars.resize(offset + element);
      copy_to_host(flat.tensors[t], 0, element, staged.scalars.data() + offset);
    }
  }
  if (copy) {
    // Host memory is copied by several threads where the rank has cores to
    // spare; a GPU's copies stay on the caller's thread, which holds the
    // device.
    split_over_threads(sizes, all_on_host ? threads : 1, kMinCopyRun, false,
                       [&](int, std::size_t i, std::size_t begin, std::size_t end) {
                         const Source& source = origins[i];
                         copy_to_host(flat.tensors[source.tensor], source.offset + begin,
                                      end - begin, source.staged + begin);
                       });
  }
  if (!copy) staged.tensors = std::move(flat.tensors);
  for (const auto& item : state.items()) {
    if (item.values == nullptr) continue;
    staged.values[item.name] = *item.values;
  }
  return staged;
}

json write_own_file(StagedSave& staged, FileEnv& env, const fs::path& directory,
                    std::uint64_t& bytes_written) {
  const int rank = staged.rank;
  json outcome = {{"error", ""}};
  try {
    const auto started = std::chrono::steady_clock::now();
    const RankFilePlan& plan = *staged.rank_file;
    std::vector<std::uint32_t> piece_crcs;
    const std::uint32_t file_crc =
        write_rank_file(env, directory / rank_file_name(rank), plan, staged.sources, piece_crcs);
    json checksums = json::array();
    json offsets = json::array();
    std::size_t next = 0;
    for (std::size_t t = 0; t < staged.layouts.size(); ++t) {
      for (auto& piece : staged.own_pieces[t]) {
        piece.crc32c = piece_crcs.at(next);
        checksums.push_back(piece.crc32c);
        offsets.push_back(plan.piece_offsets.at(next++));
      }
    }
    log::debug("step {}: checksums, write and fsync {:.3f} s", staged.step,
               seconds_between(started, std::chrono::steady_clock::now()));
    bytes_written += plan.file_size;
    outcome = {{"error", ""},
               {"size", plan.file_size},
               {"crc32c", file_crc},
               {"pieces", std::move(checksums)},
               {"offsets", std::move(offsets)}};
  } catch (const std::exception& failure) {
    outcome = {{"error", fmt::format("rank {}: {}", rank, failure.what())}};
  }
  return outcome;
}

std::pair<Metadata, std::vector<std::byte>> build_metadata(
    StagedSave& staged, const std::vector<std::string>& outcomes) {
  Metadata metadata;
  metadata.library_version = LOCKSTEP_VERSION;
  metadata.step = staged.step;
  metadata.world_size = staged.world_size;
  metadata.wall_time = utc_now(&metadata.unix_time);
  metadata.values = staged.values;
  std::vector<std::size_t> next_checksum(outcomes.size(), 0);
  std::vector<json> parsed;
  std::string error;
  for (const auto& text : outcomes) {
    parsed.push_back(json::parse(text));
    const auto message = parsed.back().at("error").get<std::string>();
    if (!message.empty()) {
      if (!error.empty()) error += "; ";
      error += message;
    }
  }
  if (!error.empty()) throw IoError(error);
  for (std::size_t r = 0; r < parsed.size(); ++r) {
    metadata.rank_files.push_back({.name = rank_file_name(static_cast<int>(r)),
                                   .size = parsed[r].at("size").get<std::uint64_t>(),
                                   .crc32c = parsed[r].at("crc32c").get<std::uint32_t>()});
  }
  for (std::size_t t = 0; t < staged.layouts.size(); ++t) {
    TensorRecord record{
        .layout = staged.layouts[t], .pieces = staged.pieces[t], .sharded = staged.sharded[t]};
    for (auto& piece : record.pieces) {
      const auto file = static_cast<std::size_t>(piece.file);
      piece.crc32c = parsed[file].at("pieces").at(next_checksum[file]).get<std::uint32_t>();
      piece.offset = parsed[file].at("offsets").at(next_checksum[file]++).get<std::uint64_t>();
    }
    metadata.tensors.push_back(std::move(record));
  }
  if (!staged.master_file || staged.master_file->key != master_file_key(metadata)) {
    staged.master_file = nullptr;
    staged.master_file = std::make_shared<const MasterFileTemplate>(plan_master_file(metadata));
  }
  const auto master = build_master_file(*staged.master_file, metadata, staged.scalars);
  metadata.master_file = {.name = kMasterFile, .size = master.size(), .crc32c = crc32c(master)};
  return {std::move(metadata), master};
}

std::uint64_t write_and_commit(StagedSave& staged, MPI_Comm comm, FileEnv& env,
                               const CheckpointOptions& options) {
  const fs::path& dir = options.dir;
  const int rank = staged.rank;

  // The temporary directory's name is new for every attempt, so a leftover
  // of an earlier crash can never be mistaken for this save's files.
  std::string token;
  std::string error;
  if (rank == 0) {
    try {
      token = random_token();
      env.create_directories(dir / fmt::format("step-{}.tmp-{}", staged.step, token));
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  }
  broadcast_text(comm, 0, error);
  if (!error.empty()) {
    throw IoError(fmt::format("checkpoint of step {} was not committed: {}", staged.step, error));
  }
  broadcast_text(comm, 0, token);
  const fs::path temporary = dir / fmt::format("step-{}.tmp-{}", staged.step, token);

  // Every rank writes and fsyncs its own file.
  std::uint64_t bytes_written = 0;
  const json outcome = [&] {
    const trace::Scope writing("checkpoint", "write step", staged.step);
    return write_own_file(staged, env, temporary, bytes_written);
  }();
  // Until the end of this function: waiting for the others, the metadata,
  // the rename.
  const trace::Scope committing("checkpoint", "commit step", staged.step);

  // Rank 0 hears from every rank; only when all wrote and synced does it
  // write the metadata and commit.
  const auto gathering = std::chrono::steady_clock::now();
  const auto outcomes = gather_text(comm, 0, outcome.dump());
  const auto gathered = std::chrono::steady_clock::now();
  error.clear();
  if (rank == 0) {
    bool committed = false;    // renamed into place and durable
    bool renamed = false;      // renamed into place
    bool moved_aside = false;  // an earlier copy of the step is at `replaced`
    const fs::path final_path = dir / step_directory_name(staged.step);
    const fs::path replaced = dir / fmt::format("step-{}.replaced-{}", staged.step, token);
    try {
      const auto [metadata, master] = build_metadata(staged, outcomes);
      const auto master_built = std::chrono::steady_clock::now();
      write_durably(env, temporary / kMasterFile, master);
      const std::string text = serialize(metadata);
      write_durably(env, temporary / kMetadataFile, std::as_bytes(std::span(text)));
      bytes_written += master.size() + text.size();
      env.sync_directory(temporary);

      // The commit: one rename, made durable by syncing the parent; a step
      // whose rename may not survive a crash is not committed.
      // A step saved again (after a restart) replaces the old copy, which
      // rename(2) cannot do for a non-empty directory: move it aside first.
      // A crash before the new copy is in place leaves step-N.replaced-*
      // and no step-N: the next Checkpointer puts the old copy back
      // (remove_leftovers), so step N is never lost.
      if (env.exists(final_path)) {
        env.rename(final_path, replaced);
        moved_aside = true;
      }
      env.rename(temporary, final_path);
      renamed = true;
      env.sync_directory(dir);
      committed = true;
      log::debug(
          "step {}: waiting for the other ranks {:.3f} s, master file {:.3f} s, metadata and "
          "commit {:.3f} s",
          staged.step, seconds_between(gathering, gathered),
          seconds_between(gathered, master_built),
          seconds_between(master_built, std::chrono::steady_clock::now()));
      if (moved_aside) staged.retired.push_back(replaced);
    } catch (const std::exception& failure) {
      if (!committed) {
        error = failure.what();
        // Undo: the new copy out of sight again (its rename may be on disk
        // or not), the old one back, the new files gone.
        try {
          if (renamed) env.rename(final_path, temporary);
          renamed = false;
          if (moved_aside) env.rename(replaced, final_path);
          env.remove_all(temporary);
        } catch (const std::exception& cleanup) {
          log::warn("cannot undo the failed save of step {}: {}", staged.step, cleanup.what());
          if (renamed) {
            error += fmt::format(
                "; {} could not be taken out of sight again ({}), so it may load although "
                "this save failed",
                final_path.string(), cleanup.what());
          }
        }
      } else {
        log::warn("step {} is committed, but finishing up failed: {}", staged.step, failure.what());
      }
    }
    // Retention: the steps it drops leave the view of every rank (a rename
    // each) before any rank returns; deleting their files is left to
    // remove_retired().
    if (committed) {
      try {
        for (const auto step :
             steps_to_remove(committed_steps(env, dir), options.keep_last, options.keep_every)) {
          staged.retired.push_back(retire_step(env, dir, step, token));
        }
      } catch (const std::exception& failure) {
        log::warn("retention after step {} failed: {}", staged.step, failure.what());
      }
    }
  }
  broadcast_text(comm, 0, error);
  if (!error.empty()) {
    throw IoError(fmt::format("checkpoint of step {} was not committed: {}", staged.step, error));
  }
  return bytes_written;
}

void remove_retired(FileEnv& env, const CheckpointOptions& options,
                    const std::vector<fs::path>& retired, std::int64_t committed_step) noexcept {
  const auto removing = std::chrono::steady_clock::now();
  try {
    for (const auto& path : retired) env.remove_all(path);
    remove_leftovers(env, options.dir);
  } catch (const std::exception& failure) {
    log::warn("removing the checkpoints that step {} replaced failed: {}", committed_step,
              failure.what());
  }
  log::debug("step {}: removing older steps {:.3f} s", committed_step,
             seconds_between(removing, std::chrono::steady_clock::now()));
}

}  // namespace lockstep::checkpoint
