#include "lockstep/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lockstep/files.h"
#include "lockstep/log.h"
#include "lockstep/mutex.h"
#include "lockstep/trace.h"

namespace lockstep {

namespace {

struct Entry {
  CollectiveState state;
  std::map<std::uint64_t, std::string> unfinished;  // by sequence number
  std::deque<FlightRecord> flight;                  // the newest last
};

// The process-wide table. Leaked on purpose: communicators destroyed by
// static destructors after main() must still find it.
struct Table {
  Mutex mutex;
  std::map<std::uint64_t, Entry> entries LOCKSTEP_GUARDED_BY(mutex);
  std::map<std::string, int> made LOCKSTEP_GUARDED_BY(mutex);  // per backend
  std::uint64_t next_id LOCKSTEP_GUARDED_BY(mutex) = 0;
  std::size_t flight_capacity LOCKSTEP_GUARDED_BY(mutex) = 2000;
  FlightDumpTarget target LOCKSTEP_GUARDED_BY(mutex);
};

Table& table() {
  static Table* const instance = new Table;
  return *instance;
}

// A collective's description is short; a runaway one is cut so that the
// heartbeat line stays small.
constexpr std::size_t kMaxDescription = 200;

// The record of `sequence` in `entry`'s flight log, added (and the oldest
// dropped beyond `capacity`) when it is new. Records arrive in sequence
// order, so it is the newest or one of the few before it.
FlightRecord* flight_record(Entry& entry, std::size_t capacity, std::uint64_t sequence,
                            const std::string& description) {
  if (capacity == 0) return nullptr;
  for (auto it = entry.flight.rbegin(); it != entry.flight.rend(); ++it) {
    if (it->sequence == sequence) return &*it;
    if (it->sequence < sequence) break;
  }
  entry.flight.push_back(
      {.sequence = sequence, .description = description.substr(0, kMaxDescription)});
  while (entry.flight.size() > capacity) entry.flight.pop_front();
  return &entry.flight.back();
}

const char* stage_name(CollectiveStage stage) {
  switch (stage) {
    case CollectiveStage::kQueued:
      return "queued";
    case CollectiveStage::kStarted:
      return "started";
    case CollectiveStage::kDone:
      return "done";
  }
  return "unknown";
}

// "allreduce (4096 bytes in 2 tensors, f32, sum) #12": the operation, the
// bytes and the dtype, as the communicators describe their collectives.
nlohmann::json description_parts(const std::string& description) {
  nlohmann::json parts = nlohmann::json::object();
  const std::size_t open = description.find(" (");
  parts["op"] = description.substr(0, std::min(open, description.find(' ')));
  if (open == std::string::npos) return parts;
  const char* begin = description.data() + open + 2;
  const char* end = description.data() + description.size();
  std::uint64_t bytes = 0;
  const auto [after, error] = std::from_chars(begin, end, bytes);
  if (error != std::errc() || !std::string_view(after, end).starts_with(" bytes")) return parts;
  parts["bytes"] = bytes;
  // The dtype follows the first ", " after the bytes.
  const std::size_t comma =
      description.find(", ", static_cast<std::size_t>(after - description.data()));
  if (comma != std::string::npos) {
    const std::size_t stop = description.find_first_of(",)", comma + 2);
    parts["dtype"] = description.substr(comma + 2, stop - comma - 2);
  }
  return parts;
}

}  // namespace

CollectiveProgress::CollectiveProgress(const std::string& backend) {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  id_ = shared.next_id++;
  const int number = ++shared.made[backend];
  shared.entries[id_].state.channel = backend + " " + std::to_string(number);
}

CollectiveProgress::~CollectiveProgress() {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  shared.entries.erase(id_);
}

void CollectiveProgress::queued(std::uint64_t sequence, const std::string& description) {
  const std::int64_t now = trace::now_ns();
  Table& shared = table();
  MutexLock lock(shared.mutex);
  Entry& entry = shared.entries[id_];
  if (FlightRecord* record = flight_record(entry, shared.flight_capacity, sequence, description)) {
    record->queued_ns = now;
  }
}

void CollectiveProgress::started(std::uint64_t sequence, const std::string& description) {
  const std::int64_t now = trace::now_ns();
  Table& shared = table();
  MutexLock lock(shared.mutex);
  Entry& entry = shared.entries[id_];
  entry.state.started = std::max(entry.state.started, sequence);
  entry.unfinished[sequence] = description.substr(0, kMaxDescription);
  if (FlightRecord* record = flight_record(entry, shared.flight_capacity, sequence, description)) {
    record->stage = CollectiveStage::kStarted;
    record->started_ns = now;
  }
}

void CollectiveProgress::finished(std::uint64_t sequence) {
  const std::int64_t now = trace::now_ns();
  Table& shared = table();
  MutexLock lock(shared.mutex);
  Entry& entry = shared.entries[id_];
  entry.state.finished = std::max(entry.state.finished, sequence);
  entry.unfinished.erase(sequence);
  for (auto it = entry.flight.rbegin(); it != entry.flight.rend(); ++it) {
    if (it->sequence == sequence) {
      it->stage = CollectiveStage::kDone;
      it->done_ns = now;
      break;
    }
  }
}

std::vector<CollectiveState> collective_progress() {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  std::vector<CollectiveState> states;
  states.reserve(shared.entries.size());
  for (const auto& [id, entry] : shared.entries) {
    CollectiveState state = entry.state;
    state.waiting_in = entry.unfinished.empty() ? "" : entry.unfinished.begin()->second;
    states.push_back(std::move(state));
  }
  return states;
}

namespace {

// The flight records of every communicator, as one line of JSON.
std::string flight_dump_text(const FlightDumpTarget& target, const std::string& reason) {
  nlohmann::json channels = nlohmann::json::array();
  for (const FlightLog& log : flight_records()) {
    nlohmann::json records = nlohmann::json::array();
    for (const FlightRecord& record : log.records) {
      nlohmann::json line = description_parts(record.description);
      line.update({{"seq", record.sequence},
                   {"description", record.description},
                   {"state", stage_name(record.stage)},
                   {"queued_ns", record.queued_ns},
                   {"started_ns", record.started_ns},
                   {"done_ns", record.done_ns}});
      records.push_back(std::move(line));
    }
    channels.push_back({{"channel", log.channel}, {"records", std::move(records)}});
  }
  return nlohmann::json{{"rank", target.rank},
                        {"attempt", target.attempt},
                        {"host", target.host},
                        {"pid", getpid()},
                        {"reason", reason},
                        {"dumped_ns", trace::now_ns()},
                        {"channels", std::move(channels)}}
             .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n";
}

}  // namespace

void set_flight_capacity(std::size_t records) {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  shared.flight_capacity = records;
}

std::vector<FlightLog> flight_records() {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  std::vector<FlightLog> logs;
  for (const auto& [id, entry] : shared.entries) {
    logs.push_back({entry.state.channel, {entry.flight.begin(), entry.flight.end()}});
  }
  return logs;
}

void set_flight_dump_target(FlightDumpTarget target) {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  shared.target = std::move(target);
}

bool dump_flight_records(const std::string& reason) noexcept {
  try {
    // One dump at a time, each a snapshot taken under this lock: the
    // watchdog, the heartbeat channel and an error may all ask at once, and
    // the last written is the newest.
    static Mutex dumping;
    MutexLock lock(dumping);
    FlightDumpTarget target;
    {
      Table& shared = table();
      MutexLock table_lock(shared.mutex);
      target = shared.target;
    }
    if (target.path.empty()) return false;
    const std::string text = flight_dump_text(target, reason);
    std::error_code ignored;
    files::create_directories(target.path.parent_path(), ignored);
    if (const std::string problem = files::replace_file(target.path, text); !problem.empty()) {
      log::warn("flight recorder: {}", problem);
      return false;
    }
    log::info("flight recorder: the last collectives of this rank are in {} ({})",
              target.path.string(), reason);
    return true;
  } catch (const std::exception& error) {
    log::warn("flight recorder: dump failed: {}", error.what());
    return false;
  }
}

}  // namespace lockstep
