// Signals that ask a training run to checkpoint or to stop. The handlers only
// set async-signal-safe flags; a Runtime turns them into a decision that every
// rank takes identically at its next should_checkpoint()/should_stop().
//
//   SIGUSR1          checkpoint at the next decision, then carry on
//                    (Slurm sends it ahead of a time limit with --signal)
//   SIGTERM, SIGINT  checkpoint at the next decision, then stop
//   SIGUSR2          the same; `lockstep run` sends it through mpirun or srun,
//                    which forward it to every rank (srun turns a SIGTERM
//                    into SIGKILL for its tasks)
//   second SIGINT    stop at once (default action), for an impatient user
#pragma once

#include <cstdint>

namespace lockstep {

// What the local process has been asked to do, as bits for an all-reduce.
enum SignalRequest : std::uint32_t {
  kRequestNone = 0,
  kRequestCheckpoint = 1u << 0,
  kRequestStop = 1u << 1,
};

namespace signals {

// Installs the handlers for SIGUSR1, SIGUSR2, SIGTERM and SIGINT. Idempotent.
void install();
// Restores the handlers that were in place before install().
void uninstall();

// Requests seen so far. take() clears the checkpoint request (it is served
// once) but keeps the stop request (a stop is final).
std::uint32_t peek();
std::uint32_t take();

// Sets a request as a signal would; for tests and for callers that learn of a
// stop by other means.
void request(std::uint32_t bits);
// Forgets every request; for tests.
void reset();

}  // namespace signals

// The decision every rank agrees on for one step: the bitwise OR of the
// requests of all ranks, plus the periodic checkpoint interval.
struct Decision {
  bool checkpoint = false;
  bool stop = false;
};

// Combines the OR of all ranks' requests with the interval: checkpoint when
// asked, when stopping (checkpoint-and-stop), or after every `every`-th step
// (never when `every` <= 0). `step` is the 0-based index of the step just
// finished, so with every = 10 the checkpoints follow steps 9, 19, 29, ...
// A negative step (a decision outside the loop) never fires the interval.
Decision decide(std::uint32_t all_requests, std::int64_t step, std::int64_t every);

}  // namespace lockstep
