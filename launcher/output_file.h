// Writing a command's output file: beside its place, then renamed, so that
// a failed command leaves an earlier file as it was.
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>

namespace lockstep::cli {

// Calls `write` with a stream to a temporary file next to `output`, then
// renames it to `output`. Throws UsageError when `output` is a directory or
// its directory cannot be written, IoError when writing fails; removes the
// temporary file whatever happens.
void write_output_file(const std::filesystem::path& output,
                       const std::function<void(std::ostream&)>& write);

}  // namespace lockstep::cli
