// The configuration knobs of lockstep, declared once each in knobs.cc.
#pragma once

#include <cstdint>
#include <string>

#include "lockstep/config.h"

namespace lockstep::knobs {

// core
extern const Knob<std::string> log_level;
extern const Knob<std::string> run_dir;
extern const Knob<std::string> device;
extern const Knob<std::int64_t> checkpoint_every;
extern const Knob<bool> handle_signals;
extern const Knob<std::int64_t> restart_count;
extern const Knob<double> collective_timeout;

// set by `lockstep run` for the ranks it starts
extern const Knob<std::string> monitor_address;
extern const Knob<std::string> monitor_token;
extern const Knob<std::string> launcher_address;
extern const Knob<double> launcher_connect_timeout;
extern const Knob<bool> allow_unmonitored;
extern const Knob<double> launcher_loss_grace;
extern const Knob<double> host_timeout;
extern const Knob<std::string> heartbeat_relay;

// the timeline
extern const Knob<std::string> trace;
extern const Knob<std::string> trace_dir;
extern const Knob<std::int64_t> trace_max_mb;
extern const Knob<std::int64_t> flight_records;

// collectives
extern const Knob<std::int64_t> replica_check_every;
extern const Knob<std::string> inject_bitflip;
extern const Knob<std::string> inject_slow;
extern const Knob<double> mpi_segment_mb;

// checkpoint
extern const Knob<std::string> checkpoint_dir;
extern const Knob<std::int64_t> checkpoint_keep;
extern const Knob<std::int64_t> checkpoint_keep_every;
extern const Knob<bool> checkpoint_async;
extern const Knob<std::int64_t> checkpoint_threads;
extern const Knob<std::string> checkpoint_memory_dir;
extern const Knob<std::int64_t> checkpoint_memory_mb;
extern const Knob<std::int64_t> checkpoint_memory_keep;
extern const Knob<std::int64_t> checkpoint_disk_every;
extern const Knob<bool> checkpoint_direct_io;
extern const Knob<std::string> checkpoint_policy;
extern const Knob<double> checkpoint_seconds;
extern const Knob<double> mtbf;

}  // namespace lockstep::knobs
