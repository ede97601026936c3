// Careful file access for files a hostile local user may have planted or
// replaced (anything under a run directory): reads open only regular files,
// never through a symbolic link, never blocking on a FIFO, and read at most
// a bound; writes go to a fresh temporary file that is renamed into place,
// so that a reader never sees half a file and a planted link is never
// written through.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep::files {

// Writes all of `data` to `fd`, through short writes and EINTR. False, with
// errno set, when the descriptor fails.
bool write_all(int fd, std::string_view data) noexcept;

// Opens `path` for reading when it is a regular file (not a symbolic link,
// FIFO, device or directory) of at most `max_bytes`. Returns the descriptor
// (close-on-exec), or -1 with `why` saying what was wrong.
int open_regular(const std::filesystem::path& path, std::uintmax_t max_bytes, std::string& why);

// The whole of a regular file of at most `max_bytes`; nothing otherwise.
std::optional<std::string> read_regular(const std::filesystem::path& path,
                                        std::uintmax_t max_bytes);

// Creates a new, empty file beside `target` with a name no one else can
// have taken (O_EXCL), mode 0644, close-on-exec; `temporary` receives its
// path. Returns the descriptor, or -1 with errno set.
int create_beside(const std::filesystem::path& target, std::filesystem::path& temporary);

// Replaces `path` with `text`: written to a fresh temporary file beside it,
// then renamed over it. Returns "" or what went wrong; never throws.
std::string replace_file(const std::filesystem::path& path, std::string_view text) noexcept;

// Why another local user could tamper with what this user writes into the
// existing directory `dir`, or "" when no one can: `dir` (after symbolic
// links) is owned by a user other than this one and root, or others may
// write into it; `dir` itself is a symbolic link of another user's; or
// the directory that holds it lets others write without the sticky bit
// (they could rename it and put their own in its place). The group is
// trusted, as a project's shared directory needs. Never throws.
std::string why_not_private(const std::filesystem::path& dir) noexcept;

}  // namespace lockstep::files
