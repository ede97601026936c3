// FileEnv: every file-system operation of the checkpoint layer goes through
// this interface, so that tests can make any step fail the way a real disk
// does (short write, ENOSPC, EIO, a crash between write and rename) and check
// that no committed checkpoint is ever damaged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lockstep {

// Direct I/O needs buffers, lengths and file offsets aligned to the device's
// logical block; 4 KiB covers 512-byte and 4 KiB devices. Bytes at an
// address with the same remainder modulo this as their file offset can be
// written directly from where they are.
inline constexpr std::size_t kDirectIoAlignment = 4096;

// A file being written from its start. Not thread-safe; one owner.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends every byte of `bytes` (retrying partial writes); throws IoError
  // naming the file and the system's reason (e.g. "No space left on device").
  virtual void append(std::span<const std::byte> bytes) = 0;
  // Makes the appended bytes durable (fsync); throws IoError on failure.
  virtual void sync() = 0;
  // Closes the file; throws IoError when the close reports a write error.
  // The destructor closes silently when close() was not called.
  virtual void close() = 0;
};

// A file read at given offsets. Not thread-safe; one owner.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Reads exactly out.size() bytes starting at `offset` (retrying partial
  // reads); throws IoError naming the file when the read fails or the file
  // ends first.
  virtual void read_at(std::uint64_t offset, std::span<std::byte> out) = 0;
  // Reads like read_at, but straight from the disk into `out`, bypassing the
  // page cache (O_DIRECT), where the file system allows it and `offset` and
  // the address of `out` are multiples of kDirectIoAlignment; the bytes past
  // the last whole block, and every read that is not aligned, go through the
  // page cache. The default reads through the page cache.
  virtual void read_direct_at(std::uint64_t offset, std::span<std::byte> out) {
    read_at(offset, out);
  }
  // A hint that [offset, offset + bytes) will be read soon, so the system can
  // start reading it in the background. Never fails.
  virtual void prefetch(std::uint64_t offset, std::uint64_t bytes) = 0;
};

// The file-system operations of the checkpoint layer. Implementations must be
// safe to call from several threads at once (the background writer and the
// training thread). Every method throws IoError naming the path and the
// system's reason on failure.
class FileEnv {
 public:
  virtual ~FileEnv() = default;

  // Creates or truncates `path` for writing.
  virtual std::unique_ptr<WritableFile> new_writable_file(const std::filesystem::path& path) = 0;
  // Opens `path` for reading at offsets (large files, read in parts).
  virtual std::unique_ptr<ReadableFile> new_readable_file(const std::filesystem::path& path) = 0;
  // Reads a whole (small) file.
  virtual std::string read_file(const std::filesystem::path& path) = 0;
  // Creates `path` and missing parents; succeeds when it exists already.
  virtual void create_directories(const std::filesystem::path& path) = 0;
  // Makes the entries of directory `path` durable (fsync of the directory),
  // which a rename or a new file needs before it survives a power loss.
  virtual void sync_directory(const std::filesystem::path& path) = 0;
  // rename(2): atomic replacement of `to` (which must not be a non-empty
  // directory).
  virtual void rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  // Removes `path` and everything below it; succeeds when it does not exist.
  virtual void remove_all(const std::filesystem::path& path) = 0;
  // Names of the entries of directory `path`; empty when it does not exist.
  virtual std::vector<std::string> list_directory(const std::filesystem::path& path) = 0;
  virtual bool exists(const std::filesystem::path& path) = 0;
  // Whether `path` itself is a symbolic link (not followed); false when it
  // does not exist.
  virtual bool is_symlink(const std::filesystem::path& path) = 0;
  virtual std::uint64_t file_size(const std::filesystem::path& path) = 0;
  // Throws IoError unless the process may create files in directory `path`.
  virtual void check_writable(const std::filesystem::path& path) = 0;
};

// The real file system (POSIX calls). One shared instance of each kind.
// With `direct_io`, files are written with O_DIRECT where the file system
// allows it (bypassing the page cache, which costs less CPU time), through
// the page cache elsewhere, and read_direct_at reads with O_DIRECT likewise;
// without it, every read and write goes through the page cache.
std::shared_ptr<FileEnv> posix_file_env(bool direct_io = true);

}  // namespace lockstep
