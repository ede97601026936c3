#include "output_file.h"

#include <unistd.h>
#include <ext/stdio_filebuf.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "lockstep/error.h"
#include "lockstep/files.h"

namespace lockstep::cli {

void write_output_file(const std::filesystem::path& output,
                       const std::function<void(std::ostream&)>& write) {
  namespace fs = std::filesystem;
  if (fs::is_directory(output)) {
    throw UsageError(fmt::format("-o {}: is a directory; name a file", output.string()));
  }
  // A fresh name (O_EXCL): nothing planted beside the output is written
  // through.
  fs::path temporary;
  const int fd = files::create_beside(output, temporary);
  if (fd < 0) {
    throw UsageError(fmt::format("-o {}: cannot write there ({}); name a writable place",
                                 output.string(), std::strerror(errno)));
  }
  struct Cleanup {
    const fs::path& path;
    bool armed = true;
    ~Cleanup() {
      if (armed) ::unlink(path.c_str());
    }
  } cleanup{temporary};
  {
    __gnu_cxx::stdio_filebuf<char> buffer(fd, std::ios::out | std::ios::binary);  // closes fd
    if (!buffer.is_open()) {
      ::close(fd);
      throw IoError(fmt::format("cannot write {}: no memory for its buffer", temporary.string()));
    }
    std::ostream out(&buffer);
    write(out);
    out.flush();
    if (!out || buffer.close() == nullptr) {
      throw IoError(fmt::format("writing {} failed (disk full?)", temporary.string()));
    }
  }
  fs::rename(temporary, output);
  cleanup.armed = false;
}

}  // namespace lockstep::cli
