#include "lockstep/checkpoint_inspect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "crc32c.h"
#include "directory.h"
#include "hdf5_files.h"
#include "layout.h"
#include "lockstep/error.h"
#include "metadata.h"

namespace lockstep {

namespace {

namespace fs = std::filesystem;
using checkpoint::CorruptCheckpoint;

double modified_seconds(const fs::path& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) return 0;
  return static_cast<double>(status.st_mtim.tv_sec) +
         static_cast<double>(status.st_mtim.tv_nsec) * 1e-9;
}

// Sizes and newest modification below `path`; unreadable parts count as 0,
// since a listing should show what it can.
void measure(const fs::path& path, CheckpointEntry& entry) {
  std::error_code error;
  entry.modified_unix_seconds = modified_seconds(path);
  // A link is not followed: what it points to is not the checkpoint's.
  if (!fs::is_directory(fs::symlink_status(path, error))) {
    entry.bytes = fs::file_size(path, error);
    if (error) entry.bytes = 0;
    return;
  }
  for (fs::recursive_directory_iterator it(path, error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file(error)) continue;
    const auto size = it->file_size(error);
    if (!error) entry.bytes += size;
    entry.modified_unix_seconds =
        std::max(entry.modified_unix_seconds, modified_seconds(it->path()));
  }
}

// The CRC-32C and size of a whole file, read in large chunks.
struct FileSum {
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
};

FileSum sum_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    throw IoError(fmt::format("cannot open: {}", std::strerror(error)));
  }
  constexpr std::size_t kChunk = 8U << 20;
  const auto buffer = std::make_unique<std::byte[]>(kChunk);
  FileSum sum;
  for (;;) {
    const ssize_t got = ::read(fd, buffer.get(), kChunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      throw IoError(fmt::format("read failed: {}", std::strerror(error)));
    }
    if (got == 0) break;
    const auto bytes = static_cast<std::size_t>(got);
    sum.crc32c = checkpoint::crc32c(std::span(buffer.get(), bytes), sum.crc32c);
    sum.size += bytes;
  }
  ::close(fd);
  return sum;
}

// Checks the size and CRC-32C of one file of the step; returns whether it
// is a regular file of the size the metadata records, which the check of
// its pieces needs (their sizes are then bounded by the file's).
bool check_file(const fs::path& step_dir, const checkpoint::FileRecord& record,
                VerifyReport& report) {
  const fs::path path = step_dir / record.name;
  std::error_code error;
  if (fs::is_symlink(fs::symlink_status(path, error))) {
    report.problems.push_back(fmt::format(
        "{}: is a symbolic link; a checkpoint's files are never links, so it is not read",
        path.string()));
    return false;
  }
  try {
    const FileSum sum = sum_file(path);
    report.bytes_checked += sum.size;
    if (sum.size != record.size) {
      report.problems.push_back(fmt::format("{}: {} bytes, the metadata says {} (truncated?)",
                                            path.string(), sum.size, record.size));
      return false;
    }
    if (sum.crc32c != record.crc32c) {
      report.problems.push_back(
          fmt::format("{}: file checksum mismatch (CRC-32C {:08x}, the metadata says {:08x})",
                      path.string(), sum.crc32c, record.crc32c));
    } else {
      ++report.checks_passed;
    }
    return true;
  } catch (const IoError& failure) {
    report.problems.push_back(fmt::format("{}: {}", path.string(), failure.what()));
    return false;
  }
}

}  // namespace

std::string checkpoint_step_name(std::int64_t step) {
  return checkpoint::step_directory_name(step);
}

std::vector<CheckpointEntry> list_checkpoint_entries(const fs::path& dir) {
  std::error_code error;
  if (!fs::exists(dir, error)) {
    throw UsageError(fmt::format("{} does not exist", dir.string()));
  }
  if (!fs::is_directory(dir, error)) {
    throw UsageError(fmt::format("{} is not a directory", dir.string()));
  }
  std::vector<CheckpointEntry> entries;
  bool other_entries = false;
  fs::directory_iterator it(dir, error);
  if (error) throw UsageError(fmt::format("cannot list {}: {}", dir.string(), error.message()));
  for (const auto& item : it) {
    const std::string name = item.path().filename().string();
    CheckpointEntry entry;
    entry.name = name;
    if (const auto step = checkpoint::parse_step_directory(name)) {
      entry.step = *step;
      entry.committed = true;
    } else if (checkpoint::is_leftover(name)) {
      entry.step = *checkpoint::parse_step_directory(name.substr(0, name.find('.')));
    } else {
      // A Checkpointer's own files (the writability probe, the run's id for
      // the memory tier, a memory directory's owner), or anything of the
      // user's.
      if (!name.starts_with(".write-probe-") && !name.starts_with(".memory-tier-id") &&
          !name.starts_with(".owner")) {
        other_entries = true;
      }
      continue;
    }
    measure(item.path(), entry);
    entries.push_back(std::move(entry));
  }
  if (entries.empty() && other_entries) {
    if (fs::exists(dir / checkpoint::kMetadataFile)) {
      throw UsageError(fmt::format(
          "{} is the directory of one step; pass the checkpoint directory that holds it ({})",
          dir.string(), dir.parent_path().string()));
    }
    throw UsageError(fmt::format("{} is not a checkpoint directory: it holds no step-<N> entries",
                                 dir.string()));
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    if (a.step != b.step) return a.step < b.step;
    if (a.committed != b.committed) return a.committed;
    return a.name < b.name;
  });
  return entries;
}

CheckpointInfo read_checkpoint_info(const fs::path& step_dir) {
  const fs::path path = step_dir / checkpoint::kMetadataFile;
  const std::string text = checkpoint::read_metadata_text(*posix_file_env(), step_dir);
  const checkpoint::Metadata metadata = checkpoint::parse_metadata(text, path.string());
  CheckpointInfo info;
  info.step = metadata.step;
  info.world_size = metadata.world_size;
  info.format_version = metadata.format_version;
  info.library_version = metadata.library_version;
  info.wall_time = metadata.wall_time;
  info.unix_time = metadata.unix_time;
  info.values = metadata.values;
  for (const auto& record : metadata.tensors) {
    const auto& layout = record.layout;
    info.tensors.push_back({.path = layout.path,
                            .dtype = layout.dtype,
                            .shape = layout.shape,
                            .bytes = layout.nbytes(),
                            .pieces = static_cast<int>(record.pieces.size()),
                            .sharded = record.sharded});
    info.tensor_bytes += layout.nbytes();
  }
  for (const auto& file : metadata.rank_files) info.files.push_back(file.name);
  info.files.push_back(metadata.master_file.name);
  return info;
}

VerifyReport verify_checkpoint(const fs::path& step_dir) {
  std::error_code error;
  if (!fs::is_directory(step_dir, error)) {
    throw UsageError(fmt::format("{} is not a checkpoint step directory", step_dir.string()));
  }
  VerifyReport report;
  const fs::path metadata_path = step_dir / checkpoint::kMetadataFile;
  checkpoint::Metadata metadata;
  try {
    metadata = checkpoint::parse_metadata(
        checkpoint::read_metadata_text(*posix_file_env(), step_dir), metadata_path.string());
    ++report.checks_passed;
  } catch (const Error& failure) {
    // Without metadata nothing else can be checked.
    report.problems.push_back(failure.what());
    return report;
  }
  report.step = metadata.step;
  if (const auto named = checkpoint::parse_step_directory(step_dir.filename().string());
      named && *named != metadata.step) {
    report.problems.push_back(fmt::format("{} is of step {}, its directory of step {}",
                                          metadata_path.string(), metadata.step, *named));
  }

  // Whole files first: the cheap check that covers HDF5's own metadata too.
  std::vector<bool> readable;
  for (const auto& record : metadata.rank_files) {
    readable.push_back(check_file(step_dir, record, report));
  }
  check_file(step_dir, metadata.master_file, report);

  // Then every piece as a restore reads it, so a report names the tensor
  // and element range that a damaged byte belongs to. Only files of the
  // recorded size: the metadata's checks bound every piece by that size,
  // so the buffer never grows past a file that is really there.
  std::vector<std::byte> buffer;
  for (int file = 0; file < metadata.world_size; ++file) {
    if (!readable[static_cast<std::size_t>(file)]) continue;
    const fs::path path = step_dir / metadata.rank_files[static_cast<std::size_t>(file)].name;
    try {
      checkpoint::RankFileReader reader(path);
      for (const auto& record : metadata.tensors) {
        for (const auto& piece : record.pieces) {
          if (piece.file != file) continue;
          const std::size_t bytes =
              static_cast<std::size_t>(piece.count) * dtype_size(record.layout.dtype);
          if (buffer.size() < bytes) buffer.resize(bytes);
          const std::span<std::byte> out(buffer.data(), bytes);
          try {
            reader.read(record.layout, piece, out);
          } catch (const CorruptCheckpoint& failure) {
            report.problems.push_back(failure.what());
            continue;
          }
          if (checkpoint::crc32c(out) != piece.crc32c) {
            report.problems.push_back(fmt::format(
                "{}: checksum mismatch in tensor '{}', elements [{}, {})", path.string(),
                record.layout.path, piece.begin, piece.begin + piece.count));
          } else {
            ++report.checks_passed;
          }
        }
      }
    } catch (const Error& failure) {
      report.problems.push_back(failure.what());
    }
  }
  return report;
}

}  // namespace lockstep
