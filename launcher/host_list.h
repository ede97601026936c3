// Hosts a job runs on, from `-H host:slots,...` or an Open MPI-style hostfile.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::launcher {

struct Host {
  std::string name;
  int slots = 1;
  bool operator==(const Host&) const = default;
};

// Parses "a:4,b:4" or "a,b" (one slot each). Throws UsageError naming the
// bad entry and the accepted form, or when the slots add up to more than an
// int holds.
std::vector<Host> parse_host_list(std::string_view text);

// Parses a hostfile: one host per line, "name", "name slots=N" or "name:N";
// '#' starts a comment; blank lines are ignored. Throws UsageError with the
// file name and line number of the first bad line (or of the line where the
// slots add up to more than an int holds), or when the file cannot be read
// or names no host.
std::vector<Host> parse_hostfile(const std::filesystem::path& path);
// The same for the contents of a hostfile; `name` is the file's name in
// errors.
std::vector<Host> parse_hostfile_text(std::string_view contents, std::string_view name);

// Sum of the slots; it fits in an int for hosts from the parsers above.
int total_slots(const std::vector<Host>& hosts);

// "a:4,b:4", the form mpirun's --host takes.
std::string host_list_string(const std::vector<Host>& hosts);

}  // namespace lockstep::launcher
