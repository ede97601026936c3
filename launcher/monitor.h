// Monitor: the launcher's end of the heartbeat channel. A background thread
// accepts TCP connections from ranks, authenticates each with the per-run
// token (first line), parses JSON-line messages into events, and queues them
// for the supervisor. Malformed input is dropped and counted; it never
// stops the monitor. One epoll set holds every connection, so the work per
// message does not grow with the number of ranks.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lockstep/mutex.h"
#include "unique_fd.h"

namespace lockstep::launcher {

using Clock = std::chrono::steady_clock;

// Where one communicator of a rank is, as its "alive" line says.
struct CollectiveReport {
  std::string channel;        // "mpi 1": the same name on every rank
  std::int64_t started = 0;   // the last collective it started
  std::int64_t finished = 0;  // the last one it finished
  std::string waiting_in;     // the oldest unfinished one, "" when none
};

struct RankEvent {
  enum class Kind { kHello, kStep, kCheckpoint, kExit, kClosed, kFault, kAlive };
  Kind kind = Kind::kHello;
  Clock::time_point time;
  int rank = -1;
  std::int64_t restart_count = -1;  // the attempt the rank belongs to
  // kHello
  int pid = 0;
  int world_size = 0;
  std::string host;
  // kStep, kCheckpoint, kExit (last_step)
  std::int64_t step = -1;
  double step_time = 0;
  // kStep: the mean compute time (the step less its waits for other ranks)
  // of the `compute_steps` steps since the rank's previous step line; 0
  // steps when the rank does not measure it (or sent nonsense).
  double compute = 0;
  std::int64_t compute_steps = 0;
  std::map<std::string, double> metrics;
  double stall = 0;
  int exit_code = 0;
  bool stopped = false;  // kExit: the rank stopped early on request (a signal)
  // kFault: what the rank found, and the ranks it blames
  std::string what;
  std::vector<int> blamed;
  // kAlive: sent every second by a live rank, whatever its training does;
  // kStep through a node relay, which sends the two as one message
  // (`has_collectives` then says that the step carried them, even none).
  std::vector<CollectiveReport> collectives;
  bool has_collectives = false;
};

// One line of the heartbeat channel, parsed.
struct ChannelLine {
  enum Verdict {
    kEvent,      // a valid message: `event` holds it
    kMalformed,  // from a rank, but not a valid message: dropped, counted
    kGarbage,    // before authentication, not a message at all: closed
    kStranger,   // before authentication, a message but not a hello with the token
    kBadHello,   // a hello with the token but invalid fields
    kRelay,      // before authentication, a node relay's hello with the token
  };
  Verdict verdict = kMalformed;
  RankEvent event;
};

// Parses one line (without its newline). Before authentication only a
// hello carrying `token` is an event. Never throws: the input comes from
// the network.
ChannelLine parse_channel_line(std::string_view line, bool authenticated, std::string_view token);
// The same for one message already parsed as JSON (a message of a relay's
// batch).
ChannelLine parse_channel_message(const nlohmann::json& message, bool authenticated,
                                  std::string_view token);

// Limits that keep strangers from starving the launcher.
struct MonitorLimits {
  // Connections that have not yet shown the token. When a new one arrives
  // and this many are waiting, the oldest is dropped: a flood of idle
  // connections cannot hold more than this many descriptors, and a rank,
  // whose hello arrives with its connection, still gets in.
  std::size_t max_strangers = 64;
  // Descriptors left free for the launcher itself (the next attempt's
  // pipes, files): the monitor never holds more than the soft limit
  // (RLIMIT_NOFILE) minus this.
  std::size_t reserved_fds = 128;
  // How long a connection may stay without showing the token.
  std::chrono::milliseconds hello_deadline = std::chrono::seconds(10);
  // Pause before accepting again after accept() failed for lack of
  // descriptors or memory.
  std::chrono::milliseconds accept_backoff = std::chrono::milliseconds(100);
};

class Monitor {
 public:
  // Listens on `bind_address` ("127.0.0.1" or "0.0.0.0") on a free port.
  // Throws IoError when no socket can be opened.
  Monitor(const std::string& bind_address, std::string token, MonitorLimits limits = {});
  // Stops the thread and closes every connection.
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  int port() const { return port_; }

  // Events received since the last call, oldest first.
  std::vector<RankEvent> drain() LOCKSTEP_EXCLUDES(mutex_);

  // Asks every connected rank to write its flight recorder's records (the
  // job hangs); returns at once, the monitor thread sends the request.
  void request_dump();

  // Connections closed for a missing or wrong token, for being too slow to
  // show it, or for arriving when the limits were reached.
  std::int64_t refused() const { return refused_.load(); }
  // Lines that were not valid messages, dropped.
  std::int64_t malformed() const { return malformed_.load(); }
  // accept() calls that failed (out of descriptors or memory).
  std::int64_t accept_failures() const { return accept_failures_.load(); }
  // Node relays that connected (lockstep/node_relay.h), over the monitor's
  // life.
  std::int64_t relays() const { return relays_.load(); }
  // Connections open now, authenticated or not.
  std::size_t open_connections() const { return open_connections_.load(); }

 private:
  struct Connection {
    UniqueFd fd;
    std::uint64_t id = 0;  // tells a reused descriptor number from the old one
    bool authenticated = false;
    int rank = -1;
    std::int64_t restart_count = -1;
    bool said_exit = false;
    std::string buffer;
    Clock::time_point opened;
    // A node's relay (lockstep/node_relay.h): its lines are batches of the
    // messages of the ranks it carries, each authenticated by its hello.
    bool relay = false;
    struct Carried {
      std::int64_t restart_count = 0;
      bool said_exit = false;
      int pid = 0;
    };
    int relay_pid = 0;  // the process of the rank the relay runs in
    std::unordered_map<int, Carried> carried;
  };

  void run();
  // Accepts what is pending; returns false when accept() ran out of
  // descriptors or memory and the listener must rest.
  bool accept_new();
  // Makes room for one more connection: drops the oldest stranger when the
  // strangers or all connections are at their limit. False when no room
  // can be made (every connection is a rank).
  bool make_room();
  // Closes the oldest stranger still open; false when there is none.
  bool drop_oldest_stranger();
  void expire_strangers(Clock::time_point now);
  // Returns false when the connection must be closed.
  bool read_from(Connection& connection);
  bool handle_line(Connection& connection, std::string_view line);
  // A relay's batch line; false when the relay must be closed.
  bool handle_batch(Connection& connection, std::string_view line);
  // The event that says `rank` ended (said goodbye first or not).
  static RankEvent closed_event(int rank, std::int64_t restart_count, bool said_exit);
  void close_connection(int fd);
  // Sends `line` to every authenticated connection, without waiting.
  void send_to_ranks(std::string_view line);
  void push(RankEvent event) LOCKSTEP_EXCLUDES(mutex_);
  // Moves every event of `events` to the queue, in order, under one lock.
  void push_all(std::vector<RankEvent>& events) LOCKSTEP_EXCLUDES(mutex_);
  int next_timeout_ms(Clock::time_point now) const;

  // Constant after construction.
  std::string token_;
  MonitorLimits limits_;
  std::size_t max_connections_ = 0;
  UniqueFd listen_fd_;
  UniqueFd epoll_fd_;
  UniqueFd wake_read_;  // a pipe that interrupts epoll_wait() on shutdown
  UniqueFd wake_write_;
  int port_ = 0;

  // Used by the monitor thread only.
  std::array<char, 64 * 1024> chunk_{};  // what one read() takes
  std::unordered_map<int, Connection> connections_;
  // Strangers by age: (fd, id) pairs; entries whose connection has since
  // closed or authenticated are skipped when met.
  std::deque<std::pair<int, std::uint64_t>> strangers_;
  std::size_t stranger_count_ = 0;
  std::uint64_t next_id_ = 1;
  std::optional<Clock::time_point> listen_paused_until_;

  Mutex mutex_;
  std::vector<RankEvent> events_ LOCKSTEP_GUARDED_BY(mutex_);
  std::atomic<std::int64_t> refused_{0};
  std::atomic<std::int64_t> malformed_{0};
  std::atomic<std::int64_t> accept_failures_{0};
  std::atomic<std::int64_t> relays_{0};
  std::atomic<std::size_t> open_connections_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> dump_requested_{false};
  std::thread thread_;
};

}  // namespace lockstep::launcher
