// A job in which one rank skips a collective. Used by watchdog_test.sh with a
// short LOCKSTEP_COLLECTIVE_TIMEOUT: the watchdog of the waiting ranks must
// name the rank that never arrived and abort the job.
//
//   watchdog_skip skip [RANK]   RANK (default 1) skips the third all-reduce
//   watchdog_skip ok            nobody skips; the job exits 0
#include <chrono>
#include <string>
#include <thread>

#include <lockstep/communicator.h>
#include <lockstep/lockstep.h>

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const std::string mode = argc > 1 ? argv[1] : "skip";
  const int skipper = argc > 2 ? std::stoi(argv[2]) : 1;
  auto comm = lockstep::make_communicator(rt);
  lockstep::Tensor tensor = lockstep::Tensor::allocate("t", lockstep::DType::kF32, {1024});
  for (int round = 1; round <= 3; ++round) {
    if (mode == "skip" && round == 3 && rt.rank() == skipper) {
      // Stands in for a rank stuck elsewhere: it never reaches collective #3.
      std::this_thread::sleep_for(std::chrono::seconds(60));
      return 0;
    }
    comm->allreduce(tensor);
  }
  return 0;
}
