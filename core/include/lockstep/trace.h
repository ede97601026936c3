// The timeline of one rank: spans of its steps, gradient buckets,
// collectives and checkpoint phases, for `lockstep trace RUN_DIR` to merge
// with every other rank's and the launcher's into one Chrome Trace Event /
// Perfetto file.
//
// Recording is cheap and never takes a lock: each thread owns a ring of
// fixed-size records that it alone fills, and a writer thread alone empties
// every ring into this rank's file four times a second. A ring that is full drops
// the new record and counts it; memory stays bounded whatever the program
// does. While no TraceWriter runs, recording is off and costs one relaxed
// atomic load.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace lockstep::trace {

// Nanoseconds since the Unix epoch (CLOCK_REALTIME): one axis for every
// rank of every host, as far as their clocks agree.
std::int64_t now_ns();

// Whether a TraceWriter runs in this process.
bool enabled();

// A finished span on the calling thread, from `begin_ns` to `end_ns`.
// `category` must be a string with static storage ("step", "checkpoint");
// `name` is copied, cut at 47 bytes.
void span(const char* category, std::string_view name, std::int64_t begin_ns, std::int64_t end_ns);
// A span that may overlap others on its thread, or begin on one thread and
// end on another (a collective in flight, a gradient bucket filling): shown
// on a track of its own, matched by `id` within its category.
void async_span(const char* category, std::string_view name, std::uint64_t id,
                std::int64_t begin_ns, std::int64_t end_ns);
// A moment: "restored step 41", "watchdog fired".
void instant(const char* category, std::string_view name);
// Names the calling thread in the timeline ("checkpoint writer").
void name_thread(std::string_view name);

// A span from construction to destruction, on the calling thread. While
// recording is off it costs a relaxed load and builds no name.
class Scope {
 public:
  Scope(const char* category, std::string_view name)
      : category_(category), begin_(enabled() ? now_ns() : 0) {
    if (begin_ != 0) name_ = name;
  }
  // Named "<prefix> <number>": "save step 41".
  Scope(const char* category, std::string_view prefix, std::int64_t number);
  ~Scope() {
    if (begin_ != 0) span(category_, name_, begin_, now_ns());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* category_;
  std::int64_t begin_;
  std::string name_;
};

// Where a rank's timeline goes and who wrote it.
struct TraceFile {
  std::filesystem::path path;  // <run dir>/trace/attempt-<A>/rank-<R>.jsonl
  int rank = 0;
  int world_size = 1;
  std::int64_t attempt = 0;
  std::string host;
  std::uint64_t max_bytes = 256ull << 20;  // the file stops growing here
};

// Turns recording on and appends the records to `file.path` four times a
// second (one JSON object per line, the first describing the rank), and at
// destruction. One per process at a time: a second throws UsageError.
// Throws IoError when the file cannot be created (the directory is
// created; a symbolic link in the file's place is refused). A write that
// fails later turns recording off with one warning; training goes on.
class TraceWriter {
 public:
  explicit TraceWriter(TraceFile file);
  // Writes what is left and turns recording off.
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Writes what the rings hold now (the writer thread does it every
  // quarter second; a test or a rank about to stop may not wait).
  void flush();
  // Records dropped because a ring was full, since the start.
  std::uint64_t dropped() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lockstep::trace
