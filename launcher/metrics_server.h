// MetricsServer: serves the newest metrics text on http://ADDRESS:PORT/metrics
// for Prometheus to scrape, from a thread of libmicrohttpd's. The launcher
// publishes a new text every second or so; a scrape never waits for the
// supervisor, and a slow or hostile client cannot hold more than a few
// connections for more than a few seconds.
#pragma once

#include <memory>
#include <string>

#include "lockstep/mutex.h"

struct MHD_Daemon;

namespace lockstep::launcher {

class MetricsServer {
 public:
  // Listens on `address` (an IPv4 address of this host; "127.0.0.1" keeps
  // the metrics to this host) and `port` (0: a free one). Throws UsageError
  // naming the address and what to do when it cannot listen there (the
  // port is taken, the address is not this host's), IoError otherwise.
  MetricsServer(const std::string& address, int port);
  // Stops serving; waits for a request being answered.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:9400/metrics"
  std::string url() const;

  // Replaces the text /metrics serves.
  void publish(std::string text) LOCKSTEP_EXCLUDES(mutex_);
  // The text /metrics serves now.
  std::string current() const LOCKSTEP_EXCLUDES(mutex_);

 private:
  struct DaemonStop {
    void operator()(MHD_Daemon* daemon) const;
  };
  std::string address_;
  int port_ = 0;
  mutable Mutex mutex_;
  std::string text_ LOCKSTEP_GUARDED_BY(mutex_);
  std::unique_ptr<MHD_Daemon, DaemonStop> daemon_;  // last: stopped before the rest goes
};

}  // namespace lockstep::launcher
