// A job whose ranks register different gradients with GradSync. Used by
// grad_sync_mismatch_test.sh: every rank must fail within seconds with an
// error that names the first differing parameter and the ranks involved.
//
//   grad_sync_mismatch shape   rank 1 registers fc2.weight with another shape
//   grad_sync_mismatch count   rank 2 registers one parameter fewer
//   grad_sync_mismatch ok      every rank registers the same; exits 0
#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/grad_sync.h>
#include <lockstep/lockstep.h>

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "shape";
  auto comm = lockstep::make_communicator(rt);
  std::vector<lockstep::Tensor> gradients = {
      lockstep::Tensor::allocate("fc1.weight", lockstep::DType::kF32, {16, 8}),
      lockstep::Tensor::allocate(
          "fc2.weight", lockstep::DType::kF32,
          mode == "shape" && rt.rank() == 1 ? lockstep::Shape{8, 16} : lockstep::Shape{16, 8}),
  };
  if (!(mode == "count" && rt.rank() == 2)) {
    gradients.push_back(lockstep::Tensor::allocate("fc2.bias", lockstep::DType::kF32, {8}));
  }
  lockstep::GradSync sync(*comm, gradients);
  for (auto& gradient : gradients) sync.ready(gradient);
  sync.wait();
  return 0;
}
