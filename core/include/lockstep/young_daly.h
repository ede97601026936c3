// The Young/Daly checkpoint interval and the goodput it gives. One copy of
// the formula, used by the Checkpointer's automatic policy and by
// `lockstep plan`.
//
// A job saves every `interval` seconds of computation; each save stalls it
// for C seconds; failures arrive at a mean interval M (the job's MTBF); each
// failure costs a restart of R seconds and the computation since the last
// completed save. Young (1974) and Daly (2006) give the interval that
// minimises the time lost, sqrt(2·C·M), and, to first order in C/M and R/M,
// the fraction of wall time that is useful work
//   1 − C/τ − (τ/2 + R)/M.
#pragma once

namespace lockstep {

// sqrt(2 · save_cost · mtbf), in seconds. A save cost of 0 gives 0 (the
// Checkpointer asks before it has measured a save). Throws UsageError for a
// negative or non-finite cost or a non-positive MTBF.
double young_daly_interval(double save_cost_seconds, double mtbf_seconds);

// Where the wall time of a run goes, as fractions of it.
struct YoungDalyGoodput {
  double goodput = 0;    // useful work
  double stall = 0;      // saves: C/τ
  double recompute = 0;  // work redone after failures: τ/(2M)
  double restart = 0;    // restarts: R/M
};

// The first-order goodput of saving every `interval_seconds` (see above). It
// falls below 0 when the losses exceed the run, which says the inputs are
// far outside the formula's range (R or τ comparable to the MTBF). Throws
// UsageError unless interval and MTBF are positive and the costs >= 0.
YoungDalyGoodput young_daly_goodput(double interval_seconds, double save_cost_seconds,
                                    double restart_cost_seconds, double mtbf_seconds);

// The exact expected goodput of the same job when failures are a Poisson
// process (exponential times between failures), including failures during
// saves and restarts (Daly 2006, eq. 13):
//   τ / (M · e^(R/M) · (e^((τ+C)/M) − 1)).
// It agrees with young_daly_goodput() when C, R and τ are small against M,
// and stays exact where the first-order formula breaks down. Throws like
// young_daly_goodput().
double exponential_goodput(double interval_seconds, double save_cost_seconds,
                           double restart_cost_seconds, double mtbf_seconds);

}  // namespace lockstep
