// ReplicaCheck: catches silent data corruption in data-parallel training.
// With replicated parameters every rank must hold the same bits after each
// optimizer step; a rank whose parameters differ (a flipped bit in memory, a
// faulty GPU, a miscomputing core) would otherwise poison every later step
// and every checkpoint without any error. Every `every` steps, and before
// every checkpoint, each rank hashes its parameters (XXH3, 64 bits) and the
// ranks compare the hashes; a mismatch names the divergent ranks and hosts
// and throws, which ends the attempt, and `lockstep run` restarts it from
// the newest checkpoint. Because a checkpoint is only written after a check
// that passed, that checkpoint predates the divergence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lockstep/communicator.h"
#include "lockstep/error.h"
#include "lockstep/tensor.h"

namespace lockstep {

class Runtime;

// The parameters of some ranks differ from the others' (majority) copy.
class ReplicaDivergence : public Error {
 public:
  ReplicaDivergence(std::string message, std::vector<int> ranks)
      : Error(std::move(message)), ranks_(std::move(ranks)) {}
  // The ranks whose parameters differ from the majority's (every rank when
  // there is no majority).
  const std::vector<int>& ranks() const { return ranks_; }

 private:
  std::vector<int> ranks_;
};

struct ReplicaCheckOptions {
  // Compare every this many steps (after steps every-1, 2*every-1, ...);
  // 0 compares only before checkpoints. From LOCKSTEP_REPLICA_CHECK_EVERY
  // when made with a Runtime.
  std::int64_t every = 0;
  // Testing: flip one bit of this rank's first parameter after step
  // `inject_step` (first attempt only), to see the check work. -1: never.
  int inject_rank = -1;
  std::int64_t inject_step = -1;
  std::int64_t restart_count = 0;
  // This rank's host, for the report.
  std::string host;
};

class ReplicaCheck {
 public:
  // `parameters` are the replicated tensors that must agree (host or CUDA
  // memory; borrowed, they must outlive the check). `communicator` carries
  // the hashes (host memory, any backend). Not collective.
  ReplicaCheck(Communicator& communicator, std::vector<Tensor> parameters,
               ReplicaCheckOptions options);
  // Options from the Runtime's configuration (LOCKSTEP_REPLICA_CHECK_EVERY,
  // LOCKSTEP_INJECT_BITFLIP) and topology; a divergence is also reported to
  // the launcher (Runtime::report_fault) by rank 0 before the throw.
  ReplicaCheck(Communicator& communicator, std::vector<Tensor> parameters, Runtime& runtime);

  // Call after every optimizer step, with the 0-based step just finished:
  // compares when the step is due. Collective: every rank calls it with the
  // same step. Throws ReplicaDivergence on a mismatch.
  void after_step(std::int64_t step);
  // Compares now (before a checkpoint of `step`). Collective; throws
  // ReplicaDivergence.
  void verify(std::int64_t step);

  // The hash of this rank's parameters as they are now.
  std::uint64_t local_hash() const;
  // Comparisons made so far.
  std::int64_t checks() const { return checks_; }

 private:
  Communicator& communicator_;
  std::vector<Tensor> parameters_;
  ReplicaCheckOptions options_;
  Runtime* runtime_ = nullptr;  // for reporting faults; may be null
  std::int64_t checks_ = 0;
  std::int64_t last_verified_step_ = -1;
  bool injected_ = false;
};

}  // namespace lockstep
