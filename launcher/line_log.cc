#include "line_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "lockstep/files.h"

namespace lockstep::launcher {

std::string LineLog::append(const std::string& line) {
  std::string note;
  struct stat on_disk = {};
  struct stat opened = {};
  const bool same = file_ && stat(path_.c_str(), &on_disk) == 0 &&
                    fstat(file_.get(), &opened) == 0 && on_disk.st_ino == opened.st_ino &&
                    on_disk.st_dev == opened.st_dev;
  if (!same) {
    if (file_) {
      note = fmt::format(
          "{} was removed while the job ran; what it held is lost, later lines go to a new file",
          path_.string());
    }
    std::error_code error;
    files::create_directories(path_.parent_path(), error);
    file_.reset(open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!file_) return fmt::format("cannot write {}: {}", path_.string(), std::strerror(errno));
  }
  if (!files::write_all(file_.get(), line + "\n")) {
    const int error = errno;
    return fmt::format("cannot write {}: {}", path_.string(), std::strerror(error));
  }
  return note;
}

}  // namespace lockstep::launcher
