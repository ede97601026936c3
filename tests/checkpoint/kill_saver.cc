// The trainer of sigkill_test.sh. `save DIR` checkpoints steps 1, 2, 3, ...
// forever on deliberately slow storage, printing each rank's pid and every
// committed step; `restore DIR` restores the newest step and checks that
// every value is the one saved at that step.
#include <unistd.h>

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
      checkpointer.save(step, lockstep::State{{"model", tensors}, {"data", data}});
      // save() waited for the previous step, which is therefore committed.
      if (runtime.rank() == 0 && step > 1) std::cout << "committed " << step - 1 << std::endl;
    }
  }

  lockstep::Checkpointer checkpointer(runtime, {.dir = dir});
  lockstep::State state{{"model", tensors}, {"data", data}};
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
  if (data != lockstep::KeyValues{{"step", *step}}) {
    std::cout << "key/values differ: " << data.dump() << std::endl;
    return 1;
  }
  if (runtime.rank() == 0) std::cout << "restored " << *step << std::endl;
  return 0;
}
