#include "output_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::cli {

void write_output_file(const std::filesystem::path& output,
                       const std::function<void(std::ostream&)>& write) {
  namespace fs = std::filesystem;
  if (fs::is_directory(output)) {
    throw UsageError(fmt::format("-o {}: is a directory; name a file", output.string()));
  }
  const fs::path temporary =
      output.parent_path() / fmt::format(".{}.tmp-{}", output.filename().string(), getpid());
  struct Cleanup {
    const fs::path& path;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  } cleanup{temporary};
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw UsageError(fmt::format("-o {}: cannot write there ({}); name a writable place",
                                   output.string(), std::strerror(errno)));
    }
    write(out);
    out.flush();
    if (!out) throw IoError(fmt::format("writing {} failed (disk full?)", temporary.string()));
  }
  fs::rename(temporary, output);
}

}  // namespace lockstep::cli
