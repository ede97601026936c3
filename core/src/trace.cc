#include "lockstep/trace.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lockstep/error.h"
#include "lockstep/files.h"
#include "lockstep/log.h"
#include "lockstep/mutex.h"

namespace lockstep::trace {

namespace {

constexpr std::size_t kRingRecords = 4096;  // per thread: 352 KiB (88-byte records)
constexpr std::size_t kNameBytes = 48;
constexpr auto kFlushPeriod = std::chrono::milliseconds(250);

struct Record {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::uint64_t id = 0;
  const char* category = "";
  char kind = 'X';  // X: span, A: async span, i: instant, M: the thread's name
  std::array<char, kNameBytes> name{};
};

static_assert(sizeof(Record) <= 88, "a ring of 4,096 records stays within 352 KiB");

// One thread's records. The thread alone writes records and `head`; the
// trace writer alone reads them and writes `tail`.
struct Ring {
  explicit Ring(int number) : index(number) {}
  const int index;  // the thread's number in the timeline
  std::array<Record, kRingRecords> records;
  std::atomic<std::uint64_t> head{0};
  std::atomic<std::uint64_t> tail{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<bool> orphaned{false};  // its thread has ended
};

// Every ring ever made; a ring whose thread ended is given to the next new
// thread once it is empty. Rings are never freed: a thread may record until
// the last moment of the process.
class Registry {
 public:
  Ring* acquire() LOCKSTEP_EXCLUDES(mutex_) {
    MutexLock lock(mutex_);
    if (!free_.empty()) {
      Ring* ring = free_.back();
      free_.pop_back();
      ring->orphaned.store(false, std::memory_order_relaxed);
      active_.push_back(ring);
      return ring;
    }
    all_.push_back(std::make_unique<Ring>(static_cast<int>(all_.size())));
    active_.push_back(all_.back().get());
    return all_.back().get();
  }
  std::vector<Ring*> active() const LOCKSTEP_EXCLUDES(mutex_) {
    MutexLock lock(mutex_);
    return active_;
  }
  // Takes back the ring of an ended thread, once it is empty; its drops
  // stay counted.
  void recycle(Ring* ring) LOCKSTEP_EXCLUDES(mutex_) {
    MutexLock lock(mutex_);
    std::erase(active_, ring);
    retired_drops_ += ring->dropped.exchange(0);
    free_.push_back(ring);
  }
  // Records dropped so far by every ring.
  std::uint64_t dropped() const LOCKSTEP_EXCLUDES(mutex_) {
    MutexLock lock(mutex_);
    std::uint64_t total = retired_drops_;
    for (const Ring* ring : active_) total += ring->dropped.load(std::memory_order_relaxed);
    return total;
  }

 private:
  mutable Mutex mutex_;
  std::vector<std::unique_ptr<Ring>> all_ LOCKSTEP_GUARDED_BY(mutex_);
  std::vector<Ring*> active_ LOCKSTEP_GUARDED_BY(mutex_);
  std::vector<Ring*> free_ LOCKSTEP_GUARDED_BY(mutex_);
  std::uint64_t retired_drops_ LOCKSTEP_GUARDED_BY(mutex_) = 0;
};

Registry& registry() {
  static Registry* const instance = new Registry;  // never destroyed, see above
  return *instance;
}

std::atomic<bool> g_enabled{false};
std::atomic<bool> g_writer_exists{false};

// The calling thread's ring, taken at its first record and handed back when
// the thread ends.
struct ThreadRing {
  Ring* ring = nullptr;
  bool gone = false;  // the thread is ending: it records nothing more
  ~ThreadRing() {
    gone = true;
    if (ring != nullptr) ring->orphaned.store(true, std::memory_order_release);
    ring = nullptr;
  }
};
thread_local ThreadRing t_ring;

void push(char kind, const char* category, std::string_view name, std::uint64_t id,
          std::int64_t begin, std::int64_t end) {
  if (!enabled() || t_ring.gone) return;
  if (t_ring.ring == nullptr) t_ring.ring = registry().acquire();
  Ring& ring = *t_ring.ring;
  const std::uint64_t head = ring.head.load(std::memory_order_relaxed);
  if (head - ring.tail.load(std::memory_order_acquire) >= kRingRecords) {
    ring.dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Record& record = ring.records[head % kRingRecords];
  record.kind = kind;
  record.category = category;
  record.id = id;
  record.begin = begin;
  record.end = end;
  const std::size_t length = std::min(name.size(), kNameBytes - 1);
  std::memcpy(record.name.data(), name.data(), length);
  record.name[length] = '\0';
  ring.head.store(head + 1, std::memory_order_release);
}

nlohmann::json to_json(const Record& record, int thread) {
  nlohmann::json line = {{"ph", std::string(1, record.kind)}, {"tid", thread}};
  line["name"] = std::string(record.name.data());
  if (record.kind == 'M') return line;
  line["cat"] = record.category;
  line["ts"] = record.begin;
  if (record.kind == 'X' || record.kind == 'A') line["dur"] = record.end - record.begin;
  if (record.kind == 'A') line["id"] = record.id;
  return line;
}

std::string dump(const nlohmann::json& line) {
  // A name cut in the middle of a UTF-8 sequence is written with U+FFFD.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

std::int64_t now_ns() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

void span(const char* category, std::string_view name, std::int64_t begin_ns, std::int64_t end_ns) {
  push('X', category, name, 0, begin_ns, std::max(begin_ns, end_ns));
}

void async_span(const char* category, std::string_view name, std::uint64_t id,
                std::int64_t begin_ns, std::int64_t end_ns) {
  push('A', category, name, id, begin_ns, std::max(begin_ns, end_ns));
}

void instant(const char* category, std::string_view name) {
  const std::int64_t now = now_ns();
  push('i', category, name, 0, now, now);
}

void name_thread(std::string_view name) { push('M', "", name, 0, 0, 0); }

Scope::Scope(const char* category, std::string_view prefix, std::int64_t number)
    : category_(category), begin_(enabled() ? now_ns() : 0) {
  if (begin_ != 0) name_ = fmt::format("{} {}", prefix, number);
}

struct TraceWriter::State {
  TraceFile file;
  int fd = -1;
  Mutex mutex;
  CondVar wake;
  bool stopping LOCKSTEP_GUARDED_BY(mutex) = false;
  std::uint64_t written LOCKSTEP_GUARDED_BY(mutex) = 0;
  bool closed LOCKSTEP_GUARDED_BY(mutex) = false;  // full, or a write failed
  std::uint64_t dropped_written LOCKSTEP_GUARDED_BY(mutex) = 0;
  std::atomic<std::uint64_t> dropped{0};
  std::uint64_t dropped_before = 0;  // by earlier writers
  std::thread thread;

  void write_text(const std::string& text) LOCKSTEP_REQUIRES(mutex) {
    if (closed) return;
    if (written + text.size() > file.max_bytes) {
      const std::string last = dump({{"ph", "truncated"}, {"ts", now_ns()}});
      [[maybe_unused]] const ssize_t ignored = ::write(fd, last.data(), last.size());
      closed = true;
      log::warn(
          "trace: {} reached its limit of {:.3g} MiB (LOCKSTEP_TRACE_MAX_MB); the rest of "
          "this attempt is not recorded",
          file.path.string(), static_cast<double>(file.max_bytes) / (1 << 20));
      return;
    }
    if (!files::write_all(fd, text)) {
      const int error = errno;
      closed = true;
      log::warn("trace: writing {} failed ({}); the rest of this attempt is not recorded",
                file.path.string(), std::strerror(error));
      return;
    }
    written += text.size();
  }

  void drain() LOCKSTEP_REQUIRES(mutex) {
    std::string text;
    for (Ring* ring : registry().active()) {
      const bool gone = ring->orphaned.load(std::memory_order_acquire);
      const std::uint64_t tail = ring->tail.load(std::memory_order_relaxed);
      const std::uint64_t head = ring->head.load(std::memory_order_acquire);
      for (std::uint64_t i = tail; i < head; ++i) {
        text += dump(to_json(ring->records[i % kRingRecords], ring->index));
      }
      ring->tail.store(head, std::memory_order_release);
      if (gone) registry().recycle(ring);
    }
    // Counted from the start of this writer.
    const std::uint64_t dropped_now = registry().dropped() - dropped_before;
    dropped.store(dropped_now);
    if (dropped_now > dropped_written) {
      text += dump({{"ph", "dropped"}, {"count", dropped_now}, {"ts", now_ns()}});
      dropped_written = dropped_now;
    }
    if (!text.empty()) write_text(text);
  }

  // The writer thread. Training must never stop for its timeline: a
  // failure (no memory) ends recording, not the process.
  void run() noexcept LOCKSTEP_EXCLUDES(mutex) {
    MutexLock lock(mutex);
    while (!stopping) {
      wake.wait_for(lock, kFlushPeriod, [this]() LOCKSTEP_REQUIRES(mutex) { return stopping; });
      try {
        drain();
      } catch (const std::exception&) {
        closed = true;
        g_enabled.store(false);
      }
    }
  }
};

TraceWriter::TraceWriter(TraceFile file) : state_(std::make_unique<State>()) {
  if (g_writer_exists.exchange(true)) {
    throw UsageError("trace: a TraceWriter already runs in this process; there is one per process");
  }
  struct Release {
    bool armed = true;
    ~Release() {
      if (armed) g_writer_exists.store(false);
    }
  } release;
  std::error_code error;
  files::create_directories(file.path.parent_path(), error);
  state_->fd =
      ::open(file.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (state_->fd < 0) {
    throw IoError(
        fmt::format("trace: cannot create {} ({})", file.path.string(), std::strerror(errno)));
  }
  state_->file = std::move(file);
  {
    MutexLock lock(state_->mutex);
    state_->write_text(dump({{"rank", state_->file.rank},
                             {"world_size", state_->file.world_size},
                             {"attempt", state_->file.attempt},
                             {"host", state_->file.host},
                             {"pid", getpid()},
                             {"started", now_ns()}}));
  }
  state_->dropped_before = registry().dropped();
  g_enabled.store(true);  // before the thread, which names itself first
  try {
    state_->thread = std::thread([state = state_.get()] {
      name_thread("trace writer");
      state->run();
    });
  } catch (...) {
    g_enabled.store(false);
    throw;
  }
  release.armed = false;
}

TraceWriter::~TraceWriter() {
  g_enabled.store(false);
  {
    MutexLock lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
  {
    MutexLock lock(state_->mutex);
    try {
      state_->drain();
    } catch (const std::exception&) {
      // What the rings held is lost; the file has what came before.
    }
  }
  ::close(state_->fd);
  g_writer_exists.store(false);
}

void TraceWriter::flush() {
  MutexLock lock(state_->mutex);
  state_->drain();
}

std::uint64_t TraceWriter::dropped() const { return state_->dropped.load(); }

}  // namespace lockstep::trace
