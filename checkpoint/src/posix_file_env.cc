// FileEnv on POSIX calls. std::filesystem does not fsync and reports errors
// without the call that failed, so the few operations that matter for
// durability are made here with open/write/fsync/rename directly.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "lockstep/error.h"
#include "lockstep/file_env.h"

namespace lockstep {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void throw_errno(std::string_view operation, const fs::path& path, int error) {
  throw IoError(fmt::format("{} '{}' failed: {}", operation, path.string(), std::strerror(error)));
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
    const std::byte* data = bytes.data();
    std::size_t left = bytes.size();
    // write(2) may write less than asked (signals, quotas, pipes); only a
    // negative result is an error, and EINTR is not even that.
    while (left > 0) {
      const ssize_t written = ::write(fd_, data, left);
      if (written < 0) {
        if (errno == EINTR) continue;
        throw_errno("write to", path_, errno);
      }
      if (written == 0) throw_errno("write to", path_, EIO);
      data += written;
      left -= static_cast<std::size_t>(written);
    }
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

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(fs::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  PosixReadableFile(const PosixReadableFile&) = delete;
  PosixReadableFile& operator=(const PosixReadableFile&) = delete;
  ~PosixReadableFile() override { ::close(fd_); }

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
  fs::path path_;
  int fd_;
};

class PosixFileEnv final : public FileEnv {
 public:
  std::unique_ptr<ReadableFile> new_readable_file(const fs::path& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("open", path, errno);
    // The kernel's read-ahead window doubles for files read front to back.
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return std::make_unique<PosixReadableFile>(path, fd);
  }

  std::unique_ptr<WritableFile> new_writable_file(const fs::path& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
    fs::create_directories(path, error);
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
    const fs::path probe = path / fmt::format(".write-probe-{}", ::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int error = errno;
      throw IoError(fmt::format("checkpoint directory '{}' is not writable: {}", path.string(),
                                std::strerror(error)));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }
};

}  // namespace

std::shared_ptr<FileEnv> posix_file_env() {
  static const std::shared_ptr<FileEnv> env = std::make_shared<PosixFileEnv>();
  return env;
}

}  // namespace lockstep
