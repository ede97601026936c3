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
#include <system_error>
#include <vector>

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
// have taken (O_EXCL), mode 0666 less the umask and never writable by
// every user, close-on-exec; `temporary` receives its
// path. Returns the descriptor, or -1 with errno set.
int create_beside(const std::filesystem::path& target, std::filesystem::path& temporary);

// Replaces `path` with `text`: written to a fresh temporary file beside it,
// then renamed over it. Returns "" or what went wrong; never throws.
std::string replace_file(const std::filesystem::path& path, std::string_view text) noexcept;

// Why another local user could tamper with what this user writes into the
// existing directory `dir`, or "" when no one can: `dir` (after symbolic
// links) is owned by a user other than this one and root, or users other
// than this one and the members of its groups may write into it; a
// symbolic link on the way to it (or `dir` itself) is another user's; or
// a directory on the way to it (by its name or after links) lets such
// users write without the sticky bit (they could rename what follows and
// put their own in its place). The owners of the directories above `dir`
// are trusted, as a project's shared directory needs. "" also when `dir`
// does not exist or is not a directory (the caller says so); never throws.
std::string why_not_private(const std::filesystem::path& dir) noexcept;

// Makes `dir` and whatever is missing above it, as
// std::filesystem::create_directories does, but leaves none of the
// directories it made writable by every user, whatever the umask. Returns
// the directories it made, deepest first (those it meant to make when it
// failed part way); `error` says why it failed.
std::vector<std::filesystem::path> create_directories(const std::filesystem::path& dir,
                                                      std::error_code& error);

}  // namespace lockstep::files
