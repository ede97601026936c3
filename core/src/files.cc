#include "lockstep/files.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace lockstep::files {

bool write_all(int fd, std::string_view data) noexcept {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

int open_regular(const std::filesystem::path& path, std::uintmax_t max_bytes, std::string& why) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    why = errno == ELOOP ? "it is a symbolic link" : std::strerror(errno);
    return -1;
  }
  struct stat info = {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    why = "it is not a regular file";
    ::close(fd);
    return -1;
  }
  if (static_cast<std::uintmax_t>(info.st_size) > max_bytes) {
    why = fmt::format("it is larger than {} bytes", max_bytes);
    ::close(fd);
    return -1;
  }
  // Reads of a regular file never block; clear the flag all the same.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::optional<std::string> read_regular(const std::filesystem::path& path,
                                        std::uintmax_t max_bytes) {
  std::string why;
  const int fd = open_regular(path, max_bytes, why);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || text.size() + static_cast<std::size_t>(n) > max_bytes) {
      ::close(fd);
      return n == 0 ? std::optional<std::string>(std::move(text)) : std::nullopt;
    }
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

namespace {

// The process's umask, read without changing it (umask(2) cannot read it
// alone, and setting it to read it races with other threads' files).
mode_t current_umask() {
  std::string status;
  if (const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC); fd >= 0) {
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    ::close(fd);
    if (n > 0) status.assign(buffer, static_cast<std::size_t>(n));
  }
  const std::size_t at = status.find("Umask:");
  if (at == std::string::npos) return 022;
  return static_cast<mode_t>(std::strtoul(status.c_str() + at + 6, nullptr, 8));
}

}  // namespace

int create_beside(const std::filesystem::path& target, std::filesystem::path& temporary) {
  std::string pattern =
      (target.parent_path() / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd < 0) return -1;
  // mkostemp makes it 0600; the file gets the mode open(2) would give it.
  static const mode_t mask = current_umask();
  ::fchmod(fd, 0666 & ~mask);
  temporary = pattern;
  return fd;
}

std::string replace_file(const std::filesystem::path& path, std::string_view text) noexcept {
  try {
    std::filesystem::path temporary;
    const int fd = create_beside(path, temporary);
    if (fd < 0) return fmt::format("cannot write {}: {}", path.string(), std::strerror(errno));
    bool written = write_all(fd, text);
    int error = errno;
    // close() may be where a write error (NFS) shows.
    if (::close(fd) != 0 && written) {
      written = false;
      error = errno;
    }
    if (written && ::rename(temporary.c_str(), path.c_str()) != 0) {
      written = false;
      error = errno;
    }
    if (!written) {
      ::unlink(temporary.c_str());
      return fmt::format("cannot write {}: {}", path.string(), std::strerror(error));
    }
    return "";
  } catch (const std::exception& failure) {
    return fmt::format("cannot write {}: {}", path.string(), failure.what());
  }
}

namespace {

// The user a file belongs to, for a message: "name (uid N)".
std::string user_name(uid_t uid) {
  std::vector<char> buffer(4096);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return fmt::format("{} (uid {})", found->pw_name, uid);
  }
  return fmt::format("uid {}", uid);
}

bool trusted_owner(uid_t uid) { return uid == ::geteuid() || uid == 0; }

}  // namespace

std::string why_not_private(const std::filesystem::path& dir) noexcept {
  try {
    const std::filesystem::path path = std::filesystem::absolute(dir).lexically_normal();
    struct stat link = {};
    if (::lstat(path.c_str(), &link) != 0) return "";
    if (S_ISLNK(link.st_mode) && !trusted_owner(link.st_uid)) {
      return fmt::format("{} is a symbolic link that {} owns, who can point it elsewhere",
                         path.string(), user_name(link.st_uid));
    }
    std::error_code error;
    const std::filesystem::path real = std::filesystem::canonical(path, error);
    if (error) return "";
    struct stat info = {};
    if (::stat(real.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) return "";
    const std::string named = real == path
                                  ? path.string()
                                  : fmt::format("{} (that is, {})", path.string(), real.string());
    if (!trusted_owner(info.st_uid)) {
      return fmt::format("{} is owned by {}, not by this user, {}: the owner could put links there",
                         named, user_name(info.st_uid), user_name(::geteuid()));
    }
    if ((info.st_mode & S_IWOTH) != 0) {
      return fmt::format("{} may be written by every user (mode {:04o}), who could put links there",
                         named, info.st_mode & 07777);
    }
    const std::filesystem::path parent = real.parent_path();
    struct stat above = {};
    if (real != parent && ::stat(parent.c_str(), &above) == 0 && (above.st_mode & S_IWOTH) != 0 &&
        (above.st_mode & S_ISVTX) == 0) {
      return fmt::format(
          "{} lies in {}, which every user may write to without the sticky bit (mode {:04o}): "
          "they could rename it and put their own in its place",
          named, parent.string(), above.st_mode & 07777);
    }
    return "";
  } catch (const std::exception& failure) {
    return fmt::format("cannot check {}: {}", dir.string(), failure.what());
  }
}

}  // namespace lockstep::files
