// The trainer of sigkill_test.sh. `save DIR` checkpoints steps 1, 2, 3, ...
// forever on deliberately slow storage, printing each rank's pid and every
// committed step; `restore DIR` restores the newest step and checks that
// every value is the one saved at that step. Besides whole tensors, the
// state holds sharded moments: each rank its chunk of them, cut anew for
// the world size of the restore.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>

#include <fmt/format.h>

#include <lockstep/checkpointer.h>
#include <lockstep/lockstep.h>

#include "fault_injection_env.h"

namespace {

std::vector<lockstep::Tensor> make_tensors() {
  return {lockstep::Tensor::allocate("weight", lockstep::DType::kF32, {512, 1024}),
          lockstep::Tensor::allocate("bias", lockstep::DType::kF64, {1024}),
          lockstep::Tensor::allocate("count", lockstep::DType::kI64, {})};
}

template <class T>
void fill_typed(lockstep::Tensor& tensor, std::int64_t step) {
  T* values = static_cast<T*>(tensor.data());
  for (std::int64_t i = 0; i < tensor.numel(); ++i) values[i] = static_cast<T>(step * 100000 + i);
}

void fill(std::vector<lockstep::Tensor>& tensors, std::int64_t step) {
  fill_typed<float>(tensors[0], step);
  fill_typed<double>(tensors[1], step);
  fill_typed<std::int64_t>(tensors[2], step);
}

constexpr std::int64_t kMoments = 1000 * 513;

// This rank's chunk of the moments: shares of ceil(elements / ranks), with
// the values of `step`.
lockstep::ShardChunk moments_chunk(int rank, int ranks, std::int64_t step) {
  const std::int64_t share = (kMoments + ranks - 1) / ranks;
  const std::int64_t begin = std::min(kMoments, rank * share);
  const std::int64_t end = std::min(kMoments, begin + share);
  lockstep::ShardChunk chunk{
      .local = lockstep::Tensor::allocate("moments", lockstep::DType::kF32, {end - begin}),
      .global_shape = {1000, 513},
      .begin = begin};
  auto* values = chunk.local.data_as<float>();
  for (std::int64_t i = begin; i < end; ++i) {
    values[i - begin] = static_cast<float>(step * 1000000 + i);
  }
  return chunk;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  if (argc != 3) {
    std::cerr << "usage: checkpoint_kill_saver save|restore DIR\n";
    return 2;
  }
  const std::string mode = argv[1];
  const std::filesystem::path dir = argv[2];
  auto tensors = make_tensors();
  lockstep::KeyValues data = lockstep::KeyValues::object();

  if (mode == "save") {
    auto env = std::make_shared<lockstep::testing::FaultInjectionEnv>();
    env->set_append_delay(std::chrono::milliseconds(300));
    lockstep::Checkpointer checkpointer(runtime, {.dir = dir, .keep_last = 2, .env = env});
    std::cout << fmt::format("pid {} {}", runtime.rank(), ::getpid()) << std::endl;
    for (std::int64_t step = 1;; ++step) {
      fill(tensors, step);
      data = {{"step", step}};
      const auto chunk = moments_chunk(runtime.rank(), runtime.world_size(), step);
      checkpointer.save(step,
                        lockstep::State{{"model", tensors}, {"optim", {chunk}}, {"data", data}});
      // save() waited for the previous step, which is therefore committed.
      if (runtime.rank() == 0 && step > 1) std::cout << "committed " << step - 1 << std::endl;
    }
  }

  lockstep::Checkpointer checkpointer(runtime, {.dir = dir});
  auto chunk = moments_chunk(runtime.rank(), runtime.world_size(), 0);
  lockstep::State state{{"model", tensors}, {"optim", {chunk}}, {"data", data}};
  const auto step = checkpointer.restore_latest(state);
  if (!step) {
    std::cout << "restored nothing" << std::endl;
    return 1;
  }
  auto expected = make_tensors();
  fill(expected, *step);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (std::memcmp(expected[i].data(), tensors[i].data(), tensors[i].nbytes()) != 0) {
      std::cout << "tensor " << tensors[i].name() << " differs from step " << *step << std::endl;
      return 1;
    }
  }
  const auto expected_chunk = moments_chunk(runtime.rank(), runtime.world_size(), *step);
  if (std::memcmp(expected_chunk.local.data(), chunk.local.data(), chunk.local.nbytes()) != 0) {
    std::cout << "rank " << runtime.rank() << "'s chunk of the moments differs from step " << *step
              << std::endl;
    return 1;
  }
  if (data != lockstep::KeyValues{{"step", *step}}) {
    std::cout << "key/values differ: " << data.dump() << std::endl;
    return 1;
  }
  if (runtime.rank() == 0) std::cout << "restored " << *step << std::endl;
  return 0;
}
