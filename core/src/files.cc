#include "lockstep/files.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
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
  // mkostemp makes it 0600; the file gets the mode open(2) would give it,
  // but never writable by every user.
  static const mode_t mask = current_umask();
  ::fchmod(fd, 0666 & ~mask & ~static_cast<mode_t>(S_IWOTH));
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

namespace fs = std::filesystem;

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

std::string group_name(gid_t gid) {
  std::vector<char> buffer(4096);
  group entry{};
  group* found = nullptr;
  if (::getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return fmt::format("{} (gid {})", found->gr_name, gid);
  }
  return fmt::format("gid {}", gid);
}

bool trusted_owner(uid_t uid) { return uid == ::geteuid() || uid == 0; }

bool in_my_groups(gid_t gid) {
  if (gid == ::getegid()) return true;
  std::vector<gid_t> groups(static_cast<std::size_t>(std::max(::getgroups(0, nullptr), 0)));
  const int count = ::getgroups(static_cast<int>(groups.size()), groups.data());
  groups.resize(static_cast<std::size_t>(std::max(count, 0)));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

// Who besides this user and its groups may write into a directory with
// `info`: "every user", a group this user is not in, or "" for no one.
std::string other_writers(const struct stat& info) {
  if ((info.st_mode & S_IWOTH) != 0) return "every user";
  if ((info.st_mode & S_IWGRP) != 0 && !in_my_groups(info.st_gid)) {
    return fmt::format("group {}, which this user is not in,", group_name(info.st_gid));
  }
  return "";
}

std::string cannot_check(const fs::path& path, int error) {
  return fmt::format("cannot check {}: {}", path.string(), std::strerror(error));
}

// The first thing on the way to `path` (absolute and normal) that lets
// another user swap what follows it: a directory others may write to
// without the sticky bit, or a symbolic link of another user's. Stops at
// the first component that does not exist.
std::string check_way(const fs::path& path) {
  fs::path current = path.root_path();
  for (const auto& part : path.relative_path()) {
    struct stat holder = {};
    if (::stat(current.c_str(), &holder) != 0) return cannot_check(current, errno);
    if (const std::string writers = other_writers(holder);
        !writers.empty() && (holder.st_mode & S_ISVTX) == 0) {
      return fmt::format(
          "{} lies in {}, which {} may write to without the sticky bit (mode {:04o}): they could "
          "rename what is in it and put their own in its place",
          path.string(), current.string(), writers, holder.st_mode & 07777);
    }
    const fs::path next = current / part;
    struct stat entry = {};
    if (::lstat(next.c_str(), &entry) != 0) return errno == ENOENT ? "" : cannot_check(next, errno);
    if (S_ISLNK(entry.st_mode) && !trusted_owner(entry.st_uid)) {
      return fmt::format("{} is a symbolic link that {} owns, who can point it elsewhere",
                         next.string(), user_name(entry.st_uid));
    }
    current = next;
  }
  return "";
}

// `path` absolute and normal, without a trailing '/'.
fs::path plain(const fs::path& path) {
  fs::path result = fs::absolute(path).lexically_normal();
  if (!result.has_filename() && result.has_relative_path()) result = result.parent_path();
  return result;
}

}  // namespace

std::string why_not_private(const std::filesystem::path& dir) noexcept {
  try {
    const fs::path path = plain(dir);
    struct stat link = {};
    if (::lstat(path.c_str(), &link) != 0) return errno == ENOENT ? "" : cannot_check(path, errno);
    if (std::string why = check_way(path); !why.empty()) return why;
    std::error_code error;
    const fs::path real = fs::canonical(path, error);
    if (error) return fmt::format("cannot check {}: {}", path.string(), error.message());
    if (real != path) {
      if (std::string why = check_way(real); !why.empty()) return why;
    }
    struct stat info = {};
    if (::stat(real.c_str(), &info) != 0) return cannot_check(real, errno);
    if (!S_ISDIR(info.st_mode)) return "";  // not a directory: the caller says so
    const std::string named = real == path
                                  ? path.string()
                                  : fmt::format("{} (that is, {})", path.string(), real.string());
    if (!trusted_owner(info.st_uid)) {
      return fmt::format("{} is owned by {}, not by this user, {}: the owner could put links there",
                         named, user_name(info.st_uid), user_name(::geteuid()));
    }
    if (const std::string writers = other_writers(info); !writers.empty()) {
      return fmt::format("{} may be written by {} (mode {:04o}), who could put links there", named,
                         writers, info.st_mode & 07777);
    }
    return "";
  } catch (const std::exception& failure) {
    return fmt::format("cannot check {}: {}", dir.string(), failure.what());
  }
}

std::vector<std::filesystem::path> create_directories(const std::filesystem::path& dir,
                                                      std::error_code& error) {
  error.clear();
  std::vector<fs::path> made;
  try {
    for (fs::path path = plain(dir); path.has_relative_path() && !fs::exists(path, error) && !error;
         path = path.parent_path()) {
      made.push_back(path);
    }
  } catch (const std::exception&) {
    error = std::make_error_code(std::errc::invalid_argument);
    return {};
  }
  if (error) return {};
  fs::create_directories(dir, error);
  for (const fs::path& path : made) {
    struct stat info = {};
    if (::lstat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode) &&
        (info.st_mode & S_IWOTH) != 0) {
      ::chmod(path.c_str(), info.st_mode & 07777 & ~static_cast<mode_t>(S_IWOTH));
    }
  }
  return made;
}

}  // namespace lockstep::files
