#include "lockstep/replica_check.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <new>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lockstep/build_config.h"
#include "lockstep/knobs.h"
#include "lockstep/log.h"
#include "lockstep/runtime.h"

// The header-only build of xxHash: nothing to link.
#define XXH_INLINE_ALL
#include <xxhash.h>

#if LOCKSTEP_HAVE_CUDA
#include <cuda_runtime.h>

#include "lockstep/cuda_check.h"
#endif

namespace lockstep {

namespace {

ReplicaCheckOptions options_from(const Runtime& runtime) {
  ReplicaCheckOptions options;
  options.every = runtime.config().get(knobs::replica_check_every);
  options.restart_count = runtime.restart_count();
  options.host = runtime.hostname();
  const std::string inject = runtime.config().get(knobs::inject_bitflip);
  if (!inject.empty()) {
    const std::size_t colon = inject.find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      options.inject_rank = std::stoi(inject.substr(0, colon));
      options.inject_step = std::stoll(inject.substr(colon + 1));
    } catch (const std::logic_error&) {
      throw ConfigError(fmt::format("LOCKSTEP_INJECT_BITFLIP='{}' is not RANK:STEP", inject));
    }
  }
  return options;
}

}  // namespace

ReplicaCheck::ReplicaCheck(Communicator& communicator, std::vector<Tensor> parameters,
                           ReplicaCheckOptions options)
    : communicator_(communicator),
      parameters_(std::move(parameters)),
      options_(std::move(options)) {}

ReplicaCheck::ReplicaCheck(Communicator& communicator, std::vector<Tensor> parameters,
                           Runtime& runtime)
    : ReplicaCheck(communicator, std::move(parameters), options_from(runtime)) {
  runtime_ = &runtime;
}

std::uint64_t ReplicaCheck::local_hash() const {
  // Owned for the whole loop: a failing CUDA copy or a refused tensor must
  // not leak it.
  const std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                       XXH3_freeState);
  if (!state) throw std::bad_alloc();
  XXH3_64bits_reset(state.get());
  std::vector<std::byte> staging;
  for (const Tensor& tensor : parameters_) {
    const void* bytes = tensor.data();
    if (tensor.device().is_cuda()) {
#if LOCKSTEP_HAVE_CUDA
      staging.resize(tensor.nbytes());
      LOCKSTEP_CHECK_CUDA(
          cudaMemcpy(staging.data(), tensor.data(), tensor.nbytes(), cudaMemcpyDeviceToHost));
      bytes = staging.data();
#else
      throw UsageError("ReplicaCheck: a CUDA tensor in a build without CUDA");
#endif
    }
    XXH3_64bits_update(state.get(), bytes, tensor.nbytes());
  }
  return XXH3_64bits_digest(state.get());
}

void ReplicaCheck::after_step(std::int64_t step) {
  if (!injected_ && options_.inject_rank == communicator_.rank() && options_.inject_step == step &&
      options_.restart_count == 0 && !parameters_.empty() && parameters_.front().nbytes() > 0 &&
      !parameters_.front().device().is_cuda()) {
    // Testing: a silent corruption of one bit of this replica.
    auto* first = static_cast<unsigned char*>(parameters_.front().data());
    first[0] ^= 0x01;
    injected_ = true;
    log::warn("testing: flipped one bit of parameter '{}' after step {}",
              parameters_.front().name(), step);
  }
  if (options_.every > 0 && (step + 1) % options_.every == 0) verify(step);
}

void ReplicaCheck::verify(std::int64_t step) {
  if (step == last_verified_step_) return;  // compared after this step already
  const std::uint64_t mine = local_hash();
  const std::string entry = fmt::format("{:016x} {}", mine, options_.host);
  const std::vector<std::string> all = communicator_.exchange_metadata(entry);
  ++checks_;
  std::map<std::string, std::vector<int>> ranks_by_hash;
  std::vector<std::string> hosts(all.size());
  for (std::size_t rank = 0; rank < all.size(); ++rank) {
    const std::size_t space = all[rank].find(' ');
    ranks_by_hash[all[rank].substr(0, space)].push_back(static_cast<int>(rank));
    hosts[rank] = space == std::string::npos ? "" : all[rank].substr(space + 1);
  }
  if (ranks_by_hash.size() <= 1) {
    last_verified_step_ = step;
    return;
  }
  // The majority's copy is taken as the good one; without a majority every
  // rank is suspect.
  const auto majority = std::max_element(
      ranks_by_hash.begin(), ranks_by_hash.end(),
      [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
  const bool has_majority = majority->second.size() * 2 > all.size();
  std::vector<int> divergent;
  std::vector<std::string> where;
  for (const auto& [hash, ranks] : ranks_by_hash) {
    if (has_majority && hash == majority->first) continue;
    for (const int rank : ranks) {
      divergent.push_back(rank);
      where.push_back(fmt::format("rank {} on {}", rank, hosts[static_cast<std::size_t>(rank)]));
    }
  }
  std::sort(divergent.begin(), divergent.end());
  const std::string what = fmt::format(
      "silent data corruption: after step {} the parameters of {} differ from {} "
      "(hashes of the replicated parameters disagree); the run must go back to the "
      "newest checkpoint, which was saved after a check that passed",
      step, fmt::join(where, ", "),
      has_majority ? fmt::format("the other {} ranks'", majority->second.size())
                   : std::string("each other's, with no majority"));
  if (runtime_ != nullptr && communicator_.rank() == 0) runtime_->report_fault(what, divergent);
  throw ReplicaDivergence(what, divergent);
}

}  // namespace lockstep
