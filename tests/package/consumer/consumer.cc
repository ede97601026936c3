// Uses the installed lockstep: runtime, a tensor and a collective decision.
#include <cstdio>

#include <lockstep/lockstep.h>
#include <lockstep/mpi_check.h>

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  lockstep::Tensor ones = lockstep::Tensor::allocate("ones", lockstep::DType::kI64, {3});
  for (int i = 0; i < 3; ++i) ones.data_as<std::int64_t>()[i] = 1;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, ones.data(), 3, MPI_INT64_T, MPI_SUM, rt.comm()));
  const bool stop = rt.should_stop();
  if (ones.data_as<std::int64_t>()[2] != rt.world_size() || stop) return 1;
  if (rt.rank() == 0)
    std::printf("consumer ok: %d ranks, lockstep %s\n", rt.world_size(), LOCKSTEP_VERSION);
  return 0;
}
