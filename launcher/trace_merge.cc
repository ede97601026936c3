#include "trace_merge.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lockstep/error.h"
#include "lockstep/files.h"

namespace lockstep::launcher {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::size_t kMaxLine = 64 * 1024;
constexpr std::size_t kMaxName = 200;
constexpr std::size_t kMaxCategory = 32;
constexpr std::int64_t kThreadsPerAttempt = kTraceThreadsPerAttempt;
constexpr int kMaxRank = 1 << 24;
constexpr int kLauncherPid = 0;

// Reads lines of at most kMaxLine bytes from a regular file (never through
// a link, never blocking on a FIFO); longer lines are skipped whole.
class LineReader {
 public:
  explicit LineReader(const fs::path& path) {
    std::string why;
    fd_ = files::open_regular(path, std::numeric_limits<std::uintmax_t>::max(), why);
  }
  ~LineReader() {
    if (fd_ >= 0) ::close(fd_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool is_open() const { return fd_ >= 0; }
  // False at the end; `too_long` says the line was skipped.
  bool next(std::string& line, bool& too_long) {
    line.clear();
    too_long = false;
    while (true) {
      if (position_ == filled_ && !refill()) return !line.empty() || too_long;
      const char c = buffer_[position_++];
      if (c == '\n') return true;
      if (line.size() < kMaxLine) {
        line += c;
      } else {
        too_long = true;
      }
    }
  }

 private:
  bool refill() {
    if (fd_ < 0) return false;
    ssize_t n = 0;
    do {
      n = ::read(fd_, buffer_.data(), buffer_.size());
    } while (n < 0 && errno == EINTR);
    position_ = 0;
    filled_ = n > 0 ? static_cast<std::size_t>(n) : 0;
    return n > 0;
  }

  int fd_ = -1;
  std::array<char, 65536> buffer_{};
  std::size_t position_ = 0;
  std::size_t filled_ = 0;
};

// The number in "attempt-12" or "rank-3.jsonl"; nullopt when the name is
// not of that form.
std::optional<std::int64_t> number_in(const std::string& name, std::string_view prefix,
                                      std::string_view suffix) {
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return std::nullopt;
  }
  const char* begin = name.data() + prefix.size();
  const char* end = name.data() + name.size() - suffix.size();
  std::int64_t value = 0;
  const auto [stop, error] = std::from_chars(begin, end, value);
  if (error != std::errc() || stop != end || value < 0) return std::nullopt;
  return value;
}

// Entries of `dir` that are real directories (or regular files), by name;
// symbolic links are not followed. An entry that vanishes or cannot be read
// ends the listing, never the command.
std::vector<fs::path> entries(const fs::path& dir, bool directories) {
  std::vector<fs::path> found;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    std::error_code status_error;
    const fs::file_status status = it->symlink_status(status_error);
    if (directories ? fs::is_directory(status) : fs::is_regular_file(status)) {
      found.push_back(it->path());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::optional<std::int64_t> integer(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<std::int64_t>();
}

std::optional<std::string> text(const json& object, const char* key, std::size_t limit) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  std::string value = it->get<std::string>();
  if (value.size() > limit) value.resize(limit);
  return value;
}

std::optional<json> parse_object(const std::string& line) {
  json value = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!value.is_object()) return std::nullopt;
  return value;
}

// The first line of a file: its header.
std::optional<json> header_of(const fs::path& path) {
  LineReader reader(path);
  std::string line;
  bool too_long = false;
  if (!reader.is_open() || !reader.next(line, too_long) || too_long) return std::nullopt;
  return parse_object(line);
}

// One rank's file of one attempt.
struct RankFile {
  fs::path path;
  int rank = 0;
  std::string host;
};

struct Attempt {
  std::int64_t number = 0;  // as the session numbers it
  std::vector<RankFile> ranks;
};

struct Session {
  std::string name;
  std::optional<fs::path> launcher;
  std::vector<Attempt> attempts;
};

class Merger {
 public:
  Merger(const TraceSink& sink, MergeReport& report) : sink_(sink), report_(report) {}

  std::vector<Session> find(const fs::path& trace_dir) {
    std::vector<Session> sessions;
    for (const fs::path& dir : entries(trace_dir, true)) {
      Session session;
      session.name = dir.filename().string();
      const fs::path launcher = dir / "launcher.jsonl";
      if (fs::is_regular_file(fs::symlink_status(launcher))) {
        if (const auto header = header_of(launcher);
            header && integer(*header, "started") && *integer(*header, "started") > 0) {
          session.launcher = launcher;
          consider_zero(*integer(*header, "started"));
        } else {
          report_.problems.push_back(launcher.string() + ": no valid first line; left out");
        }
      }
      for (const fs::path& attempt_dir : entries(dir, true)) {
        const auto number = number_in(attempt_dir.filename().string(), "attempt-", "");
        if (!number) continue;
        Attempt attempt;
        attempt.number = *number;
        for (const fs::path& file : entries(attempt_dir, false)) {
          if (!number_in(file.filename().string(), "rank-", ".jsonl")) continue;
          if (auto rank_file = read_header(file)) attempt.ranks.push_back(std::move(*rank_file));
        }
        std::sort(attempt.ranks.begin(), attempt.ranks.end(),
                  [](const RankFile& a, const RankFile& b) { return a.rank < b.rank; });
        if (!attempt.ranks.empty()) session.attempts.push_back(std::move(attempt));
      }
      std::sort(session.attempts.begin(), session.attempts.end(),
                [](const Attempt& a, const Attempt& b) { return a.number < b.number; });
      if (session.launcher || !session.attempts.empty()) sessions.push_back(std::move(session));
    }
    return sessions;
  }

  void write(const std::vector<Session>& sessions) {
    metadata(kLauncherPid, 0, "process_name", "lockstep run");
    metadata(kLauncherPid, 0, "process_sort_index", 0);
    metadata(kLauncherPid, 0, "thread_name", "attempts and events");
    std::int64_t track_attempt = 0;  // attempts over all sessions, for track ids
    for (std::size_t s = 0; s < sessions.size(); ++s) {
      const Session& session = sessions[s];
      const std::string where = sessions.size() > 1 ? fmt::format("start {}, ", s + 1) : "";
      if (session.launcher) launcher_events(*session.launcher, s + 1);
      for (const Attempt& attempt : session.attempts) {
        for (const RankFile& file : attempt.ranks) {
          rank_events(file, track_attempt, fmt::format("{}attempt {}", where, attempt.number));
        }
        ++track_attempt;
        ++report_.attempts;
      }
    }
    report_.sessions = sessions.size();
  }

 private:
  void consider_zero(std::int64_t ns) { zero_ = zero_ ? std::min(*zero_, ns) : ns; }

  // `ns` is at or after the zero (records before it are refused), and both
  // are positive: the difference cannot overflow.
  double micros(std::int64_t ns) const {
    return static_cast<double>(ns - zero_.value_or(0)) / 1000.0;
  }

  std::optional<RankFile> read_header(const fs::path& path) {
    const auto header = header_of(path);
    const std::int64_t rank = header ? integer(*header, "rank").value_or(-1) : -1;
    const std::int64_t started = header ? integer(*header, "started").value_or(0) : 0;
    if (rank < 0 || rank >= kMaxRank || started <= 0) {
      report_.problems.push_back(path.string() + ": no valid first line; left out");
      return std::nullopt;
    }
    consider_zero(started);
    return RankFile{.path = path,
                    .rank = static_cast<int>(rank),
                    .host = text(*header, "host", 255).value_or("")};
  }

  void emit(const json& event) {
    sink_(event);
    ++report_.events;
  }

  void metadata(int pid, std::int64_t tid, const char* what, const json& value) {
    emit({{"ph", "M"},
          {"pid", pid},
          {"tid", tid},
          {"name", what},
          {"args", {{std::string(what) == "process_sort_index" ? "sort_index" : "name", value}}}});
  }

  // A record of a launcher.jsonl or rank file turned into Trace Events;
  // false when it is not a valid record.
  bool record(const json& line, int pid, std::int64_t tid_base, const std::string& thread_suffix) {
    const auto ph = text(line, "ph", 16);
    if (!ph) return false;
    const auto tid = integer(line, "tid").value_or(0);
    if (tid < 0 || tid >= kThreadsPerAttempt) return false;
    const std::int64_t track = tid_base + tid;
    if (*ph == "M") {
      const auto name = text(line, "name", kMaxName);
      if (!name) return false;
      metadata(pid, track, "thread_name", *name + ", " + thread_suffix);
      return true;
    }
    const auto ts = integer(line, "ts");
    // Before every start in the run directory: not a time of this run.
    if (!ts || *ts < zero_.value_or(0)) return false;
    json event = {{"pid", pid}, {"tid", track}, {"ts", micros(*ts)}};
    if (*ph == "dropped" || *ph == "truncated") {
      const auto count = integer(line, "count").value_or(0);
      event.update(
          {{"ph", "i"},
           {"s", "p"},
           {"cat", "trace"},
           {"name", *ph == "dropped"
                        ? fmt::format("{} records dropped so far (a ring was full)", count)
                        : std::string("the timeline stops here (LOCKSTEP_TRACE_MAX_MB)")}});
      emit(event);
      return true;
    }
    const auto name = text(line, "name", kMaxName);
    const auto category = text(line, "cat", kMaxCategory);
    if (!name || !category) return false;
    event.update({{"name", *name}, {"cat", *category}});
    if (line.contains("args") && line["args"].is_object()) event["args"] = line["args"];
    if (*ph == "i") {
      event.update({{"ph", "i"}, {"s", "t"}});
      emit(event);
      return true;
    }
    const auto duration = integer(line, "dur");
    if (!duration || *duration < 0 || *duration > std::numeric_limits<std::int64_t>::max() - *ts) {
      return false;
    }
    if (*ph == "X") {
      event.update({{"ph", "X"}, {"dur", static_cast<double>(*duration) / 1000.0}});
      emit(event);
      return true;
    }
    if (*ph == "A") {
      const auto it = line.find("id");
      if (it == line.end() || !it->is_number_unsigned()) return false;
      event.update({{"ph", "b"}, {"id", fmt::format("{:#x}", it->get<std::uint64_t>())}});
      emit(event);
      event.update({{"ph", "e"}, {"ts", micros(*ts + *duration)}});
      emit(event);
      return true;
    }
    return false;
  }

  // Every line after the first of `path`, as records of `pid`.
  void records_of(const fs::path& path, int pid, std::int64_t tid_base,
                  const std::string& thread_suffix) {
    LineReader reader(path);
    std::string line;
    bool too_long = false;
    bool first = true;
    while (reader.next(line, too_long)) {
      if (std::exchange(first, false)) continue;  // the header
      const auto object = too_long ? std::nullopt : parse_object(line);
      if (!object || !record(*object, pid, tid_base, thread_suffix)) ++report_.skipped_lines;
    }
  }

  void launcher_events(const fs::path& path, std::size_t session) {
    if (const auto header = header_of(path)) {
      std::string what = fmt::format("lockstep run started (start {})", session);
      if (const auto job = text(*header, "slurm_job", 64)) {
        what += fmt::format(", Slurm job {} (restart count {})", *job,
                            integer(*header, "slurm_restart_count").value_or(0));
      }
      emit({{"ph", "i"},
            {"s", "p"},
            {"cat", "launcher"},
            {"name", what},
            {"pid", kLauncherPid},
            {"tid", 0},
            {"ts", micros(integer(*header, "started").value_or(0))}});
    }
    records_of(path, kLauncherPid, 0, "");
  }

  void rank_events(const RankFile& file, std::int64_t track_attempt,
                   const std::string& attempt_name) {
    const int pid = file.rank + 1;
    if (report_.ranks.insert(file.rank).second) {
      metadata(pid, 0, "process_name",
               file.host.empty() ? fmt::format("rank {}", file.rank)
                                 : fmt::format("rank {} ({})", file.rank, file.host));
      metadata(pid, 0, "process_sort_index", pid);
    }
    records_of(file.path, pid, track_attempt * kThreadsPerAttempt, attempt_name);
  }

  const TraceSink& sink_;
  MergeReport& report_;
  std::optional<std::int64_t> zero_;
};

}  // namespace

MergeReport visit_trace(const fs::path& run_dir, const TraceSink& sink) {
  const fs::path trace_dir = run_dir / "trace";
  if (!fs::is_directory(fs::symlink_status(trace_dir))) {
    throw UsageError(fmt::format(
        "{} has no trace/ directory: run the job with `lockstep run --run-dir {}` (ranks record "
        "their timeline unless LOCKSTEP_TRACE=off)",
        run_dir.string(), run_dir.string()));
  }
  MergeReport report;
  Merger merger(sink, report);
  const std::vector<Session> sessions = merger.find(trace_dir);
  merger.write(sessions);
  return report;
}

MergeReport merge_trace(const fs::path& run_dir, std::ostream& out) {
  bool first = true;
  const TraceSink sink = [&](const json& event) {
    out << (std::exchange(first, false) ? "{\"traceEvents\":[\n" : ",\n")
        << event.dump(-1, ' ', false, json::error_handler_t::replace);
  };
  MergeReport report = visit_trace(run_dir, sink);
  if (first) out << "{\"traceEvents\":[";
  out << "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"generated_by\":\"lockstep trace\"}}\n";
  return report;
}

}  // namespace lockstep::launcher
