#include "lockstep/progress.h"

#include <algorithm>

#include "lockstep/mutex.h"

namespace lockstep {

namespace {

struct Entry {
  CollectiveState state;
  std::map<std::uint64_t, std::string> unfinished;  // by sequence number
};

// The process-wide table. Leaked on purpose: communicators destroyed by
// static destructors after main() must still find it.
struct Table {
  Mutex mutex;
  std::map<std::uint64_t, Entry> entries LOCKSTEP_GUARDED_BY(mutex);
  std::map<std::string, int> made LOCKSTEP_GUARDED_BY(mutex);  // per backend
  std::uint64_t next_id LOCKSTEP_GUARDED_BY(mutex) = 0;
};

Table& table() {
  static Table* const instance = new Table;
  return *instance;
}

// A collective's description is short; a runaway one is cut so that the
// heartbeat line stays small.
constexpr std::size_t kMaxDescription = 200;

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

void CollectiveProgress::started(std::uint64_t sequence, const std::string& description) {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  Entry& entry = shared.entries[id_];
  entry.state.started = std::max(entry.state.started, sequence);
  entry.unfinished[sequence] = description.substr(0, kMaxDescription);
}

void CollectiveProgress::finished(std::uint64_t sequence) {
  Table& shared = table();
  MutexLock lock(shared.mutex);
  Entry& entry = shared.entries[id_];
  entry.state.finished = std::max(entry.state.finished, sequence);
  entry.unfinished.erase(sequence);
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

}  // namespace lockstep
