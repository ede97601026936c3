// A multi-rank smoke run of the runtime: topology, device binding, a tensor,
// an all-reduce, and the collective checkpoint/stop decisions driven by a
// signal that only one rank receives.
//
//   mpiexec -n 4 ./lockstep_smoke [--steps N] [--signal-rank R] [--signal-step S]
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <lockstep/lockstep.h>
#include <lockstep/mpi_check.h>

namespace {

struct Options {
  std::int64_t steps = 8;
  int signal_rank = 1;
  std::int64_t signal_step = 3;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::int64_t value = std::stoll(argv[i + 1]);
    if (flag == "--steps") {
      options.steps = value;
    } else if (flag == "--signal-rank") {
      options.signal_rank = static_cast<int>(value);
    } else if (flag == "--signal-step") {
      options.signal_step = value;
    } else {
      throw lockstep::UsageError("unknown flag " + flag +
                                 "; accepted: --steps N --signal-rank R --signal-step S");
    }
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const Options options = parse(argc, argv);
  lockstep::log::info("host {} node {}/{} local rank {}/{} device {} restarts {}", rt.hostname(),
                      rt.node_index(), rt.node_count(), rt.local_rank(), rt.local_size(),
                      rt.device().str(), rt.restart_count());

  // Every rank contributes rank+1; the sum is n(n+1)/2 on every rank.
  lockstep::Tensor value = lockstep::Tensor::allocate("smoke/value", lockstep::DType::kF64, {1});
  value.data_as<double>()[0] = rt.rank() + 1;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, value.data(), 1, MPI_DOUBLE, MPI_SUM, rt.comm()));
  const double expected = rt.world_size() * (rt.world_size() + 1) / 2.0;
  if (value.data_as<double>()[0] != expected) {
    rt.abort("all-reduce gave " + std::to_string(value.data_as<double>()[0]) + ", expected " +
             std::to_string(expected));
  }
  if (rt.rank() == 0)
    lockstep::log::info("all-reduce over {} ranks: {} (correct)", rt.world_size(), expected);

  for (std::int64_t step = 0; step < options.steps; ++step) {
    if (step == options.signal_step && rt.rank() == options.signal_rank) {
      lockstep::log::info("step {}: sending SIGUSR1 to myself only", step);
      std::raise(SIGUSR1);
    }
    if (rt.should_checkpoint(step) && rt.rank() == 0) {
      lockstep::log::info("step {}: every rank agreed to checkpoint", step);
    }
    if (rt.should_stop()) {
      if (rt.rank() == 0) lockstep::log::info("step {}: every rank agreed to stop", step);
      break;
    }
  }
  if (rt.rank() == 0) lockstep::log::info("smoke run finished on {} ranks", rt.world_size());
  return EXIT_SUCCESS;
}
