// FileEnv on POSIX calls. std::filesystem does not fsync and reports errors
// without the call that failed, so the few operations that matter for
// durability are made here with open/write/fsync/rename directly.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "lockstep/error.h"
#include "lockstep/file_env.h"
#include "lockstep/files.h"

namespace lockstep {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void throw_errno(std::string_view operation, const fs::path& path, int error) {
  throw IoError(fmt::format("{} '{}' failed: {}", operation, path.string(), std::strerror(error)));
}

// write(2) of every byte of [data, data + size), retrying partial writes.
void write_all(int fd, const fs::path& path, const std::byte* data, std::size_t size) {
  // write(2) may write less than asked (signals, quotas, pipes); only a
  // negative result is an error, and EINTR is not even that.
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno("write to", path, errno);
    }
    if (written == 0) throw_errno("write to", path, EIO);
    data += written;
    size -= static_cast<std::size_t>(written);
  }
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  PosixWritableFile(const PosixWritableFile&) = delete;
  PosixWritableFile& operator=(const PosixWritableFile&) = delete;
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void append(std::span<const std::byte> bytes) override {
    write_all(fd_, path_, bytes.data(), bytes.size());
  }

  void sync() override {
    if (::fsync(fd_) != 0) throw_errno("fsync of", path_, errno);
  }

  void close() override {
    const int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) throw_errno("close of", path_, errno);
  }

 private:
  fs::path path_;
  int fd_;
};

constexpr std::size_t kDirectBuffer = std::size_t{4} << 20;

struct AlignedFree {
  void operator()(std::byte* bytes) const { std::free(bytes); }
};

// A file written with O_DIRECT, bypassing the page cache. That spares the
// kernel's copy into cached pages, their later write-back and reclaim: a
// third of the CPU time of a buffered write of the same bytes on our test
// machine, time a background save would otherwise take from training.
// Appended bytes whose address is aligned where the file offset is go to the
// disk from where they are, whole blocks at a time, without being touched;
// other bytes gather in an aligned buffer that is written whole. The last
// partial block is written through the page cache (O_DIRECT turned off), so
// the file ends at exactly the bytes appended.
class DirectWritableFile final : public WritableFile {
 public:
  DirectWritableFile(fs::path path, int fd)
      : path_(std::move(path)),
        fd_(fd),
        buffer_(static_cast<std::byte*>(std::aligned_alloc(kDirectIoAlignment, kDirectBuffer))) {
    if (!buffer_) {
      ::close(fd_);
      fd_ = -1;
      throw IoError(fmt::format("cannot allocate a write buffer for '{}'", path_.string()));
    }
  }
  DirectWritableFile(const DirectWritableFile&) = delete;
  DirectWritableFile& operator=(const DirectWritableFile&) = delete;
  ~DirectWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void append(std::span<const std::byte> bytes) override {
    while (!bytes.empty()) {
      // The file offset is at written blocks plus `used_`.
      const auto address = reinterpret_cast<std::uintptr_t>(bytes.data());
      if (used_ % kDirectIoAlignment == 0 && address % kDirectIoAlignment == 0 &&
          bytes.size() >= kDirectIoAlignment) {
        if (used_ > 0) {
          write_all(fd_, path_, buffer_.get(), used_);
          used_ = 0;
        }
        const std::size_t blocks = bytes.size() / kDirectIoAlignment * kDirectIoAlignment;
        write_all(fd_, path_, bytes.data(), blocks);
        bytes = bytes.subspan(blocks);
        continue;
      }
      std::size_t take = std::min(bytes.size(), kDirectBuffer - used_);
      // Bytes at the same remainder as the file offset become aligned once
      // the buffer has taken the part up to the next block.
      if ((address - used_) % kDirectIoAlignment == 0 && address % kDirectIoAlignment != 0) {
        take = std::min(take, kDirectIoAlignment - address % kDirectIoAlignment);
      }
      std::memcpy(buffer_.get() + used_, bytes.data(), take);
      used_ += take;
      bytes = bytes.subspan(take);
      if (used_ == kDirectBuffer) {
        write_all(fd_, path_, buffer_.get(), used_);
        used_ = 0;
      }
    }
  }

  void sync() override {
    flush();
    if (::fsync(fd_) != 0) throw_errno("fsync of", path_, errno);
  }

  void close() override {
    flush();
    const int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) throw_errno("close of", path_, errno);
  }

 private:
  // Writes what the buffer holds: whole blocks directly, the rest buffered.
  void flush() {
    if (used_ == 0) return;
    const std::size_t blocks = used_ / kDirectIoAlignment * kDirectIoAlignment;
    write_all(fd_, path_, buffer_.get(), blocks);
    if (blocks < used_) {
      const int flags = ::fcntl(fd_, F_GETFL);
      if (flags < 0 || ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) != 0) {
        throw_errno("fcntl of", path_, errno);
      }
      write_all(fd_, path_, buffer_.get() + blocks, used_ - blocks);
    }
    used_ = 0;
  }

  fs::path path_;
  int fd_;
  std::unique_ptr<std::byte, AlignedFree> buffer_;
  std::size_t used_ = 0;
};

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(fs::path path, int fd, bool direct_io)
      : path_(std::move(path)), fd_(fd), direct_fd_(direct_io ? kNotOpen : kNoDirectIo) {}
  PosixReadableFile(const PosixReadableFile&) = delete;
  PosixReadableFile& operator=(const PosixReadableFile&) = delete;
  ~PosixReadableFile() override {
    ::close(fd_);
    if (direct_fd_ >= 0) ::close(direct_fd_);
  }

  void read_direct_at(std::uint64_t offset, std::span<std::byte> out) override {
    const std::size_t blocks = out.size() / kDirectIoAlignment * kDirectIoAlignment;
    const auto address = reinterpret_cast<std::uintptr_t>(out.data());
    const bool aligned =
        blocks > 0 && offset % kDirectIoAlignment == 0 && address % kDirectIoAlignment == 0;
    if (aligned && direct_fd_ == kNotOpen) {
      // EINVAL: the file system has no direct I/O (tmpfs).
      direct_fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
      if (direct_fd_ < 0) direct_fd_ = kNoDirectIo;
    }
    std::size_t done = 0;
    if (aligned && direct_fd_ >= 0) {
      while (done < blocks) {
        const ssize_t got = ::pread(direct_fd_, out.data() + done, blocks - done,
                                    static_cast<off_t>(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EINVAL) {
          // The device wants a coarser alignment: use the page cache from now on.
          ::close(direct_fd_);
          direct_fd_ = kNoDirectIo;
          break;
        }
        if (got < 0) throw_errno("read of", path_, errno);
        done += static_cast<std::size_t>(got);
        // Short: the file ends here (read_at below reports it).
        if (got == 0 || static_cast<std::size_t>(got) % kDirectIoAlignment != 0) break;
      }
    }
    if (done < out.size()) read_at(offset + done, out.subspan(done));
  }

  void read_at(std::uint64_t offset, std::span<std::byte> out) override {
    std::byte* data = out.data();
    std::size_t left = out.size();
    while (left > 0) {
      const ssize_t got = ::pread(fd_, data, left, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw_errno("read of", path_, errno);
      }
      if (got == 0) {
        throw IoError(fmt::format("read of '{}' failed: the file ends at {} bytes, before {}",
                                  path_.string(), offset, offset + left));
      }
      data += got;
      offset += static_cast<std::uint64_t>(got);
      left -= static_cast<std::size_t>(got);
    }
  }

  void prefetch(std::uint64_t offset, std::uint64_t bytes) override {
    ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes),
                    POSIX_FADV_WILLNEED);
  }

 private:
  static constexpr int kNotOpen = -1;
  static constexpr int kNoDirectIo = -2;

  fs::path path_;
  int fd_;
  int direct_fd_;  // opened at the first direct read, or kNoDirectIo
};

class PosixFileEnv final : public FileEnv {
 public:
  std::unique_ptr<ReadableFile> new_readable_file(const fs::path& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("open", path, errno);
    // The kernel's read-ahead window doubles for files read front to back.
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return std::make_unique<PosixReadableFile>(path, fd, direct_io_);
  }

  explicit PosixFileEnv(bool direct_io) : direct_io_(direct_io) {}

  std::unique_ptr<WritableFile> new_writable_file(const fs::path& path) override {
    constexpr int kFlags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    if (direct_io_) {
      const int fd = ::open(path.c_str(), kFlags | O_DIRECT, 0644);
      if (fd >= 0) return std::make_unique<DirectWritableFile>(path, fd);
      // EINVAL: the file system has no direct I/O (tmpfs); write through
      // the page cache instead.
      if (errno != EINVAL) throw_errno("create", path, errno);
    }
    const int fd = ::open(path.c_str(), kFlags, 0644);
    if (fd < 0) throw_errno("create", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd);
  }

  std::string read_file(const fs::path& path) override {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_errno("open", path, errno != 0 ? errno : ENOENT);
    std::ostringstream contents;
    contents << in.rdbuf();
    if (in.bad()) throw_errno("read", path, EIO);
    return contents.str();
  }

  void create_directories(const fs::path& path) override {
    std::error_code error;
    files::create_directories(path, error);
    if (error) {
      throw IoError(
          fmt::format("cannot create directory '{}': {}", path.string(), error.message()));
    }
  }

  void sync_directory(const fs::path& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno("open directory", path, errno);
    const int rc = ::fsync(fd);
    const int error = errno;
    ::close(fd);
    if (rc != 0) throw_errno("fsync of directory", path, error);
  }

  void rename(const fs::path& from, const fs::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      const int error = errno;
      throw IoError(fmt::format("rename '{}' -> '{}' failed: {}", from.string(), to.string(),
                                std::strerror(error)));
    }
  }

  void remove_all(const fs::path& path) override {
    std::error_code error;
    fs::remove_all(path, error);
    if (error) {
      throw IoError(fmt::format("cannot remove '{}': {}", path.string(), error.message()));
    }
  }

  std::vector<std::string> list_directory(const fs::path& path) override {
    std::vector<std::string> names;
    std::error_code error;
    fs::directory_iterator it(path, error);
    if (error) {
      if (error == std::errc::no_such_file_or_directory) return names;
      throw IoError(fmt::format("cannot list '{}': {}", path.string(), error.message()));
    }
    for (const auto& entry : it) names.push_back(entry.path().filename().string());
    return names;
  }

  bool exists(const fs::path& path) override {
    std::error_code error;
    return fs::exists(path, error);
  }

  bool is_symlink(const fs::path& path) override {
    std::error_code error;
    return fs::is_symlink(fs::symlink_status(path, error));
  }

  std::uint64_t file_size(const fs::path& path) override {
    std::error_code error;
    const auto size = fs::file_size(path, error);
    if (error) {
      throw IoError(fmt::format("cannot stat '{}': {}", path.string(), error.message()));
    }
    return size;
  }

  void check_writable(const fs::path& path) override {
    // access(2) ignores read-only mounts for root and ACL subtleties; creating
    // a file is the only honest test.
    // A new file of its own: never through a link, never over a file of
    // someone else's (a leftover of a crashed probe is removed first).
    const fs::path probe = path / fmt::format(".write-probe-{}", ::getpid());
    ::unlink(probe.c_str());
    const int fd =
        ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      const int error = errno;
      throw IoError(fmt::format("checkpoint directory '{}' is not writable: {}", path.string(),
                                std::strerror(error)));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }

 private:
  bool direct_io_;
};

}  // namespace

std::shared_ptr<FileEnv> posix_file_env(bool direct_io) {
  static const std::shared_ptr<FileEnv> direct = std::make_shared<PosixFileEnv>(true);
  static const std::shared_ptr<FileEnv> buffered = std::make_shared<PosixFileEnv>(false);
  return direct_io ? direct : buffered;
}

}  // namespace lockstep
