// LineLog: appends lines to a file (attempts.jsonl, the launcher's
// timeline). The file is reopened when it was removed or replaced since the
// last line (the run directory deleted under a running job), so that later
// lines are not written into a file that no longer has a name; the file is
// never followed through a symbolic link.
#pragma once

#include <filesystem>
#include <string>

#include "unique_fd.h"

namespace lockstep::launcher {

class LineLog {
 public:
  explicit LineLog(std::filesystem::path path) : path_(std::move(path)) {}

  // Appends `line` and a newline; returns what went wrong, or "".
  std::string append(const std::string& line);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  UniqueFd file_;
};

}  // namespace lockstep::launcher
