// A job in which one rank fails while the others wait in a collective. Used
// by failing_rank_test.sh: the job must end, non-zero, within seconds.
//
//   failing_rank uncaught   rank 1 throws and nothing catches it
//   failing_rank scope      rank 1's exception leaves the Runtime's scope
//                           and is caught outside it
//   failing_rank ok         nobody fails; the job exits 0
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <lockstep/lockstep.h>

namespace {

void run(lockstep::Runtime& rt, const std::string& mode) {
  if (rt.rank() == 1 && mode != "ok") {
    throw std::runtime_error("injected failure on rank 1 (" + mode + ")");
  }
  MPI_Barrier(rt.comm());  // the other ranks wait here for rank 1
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "uncaught";
  if (mode == "scope") {
    try {
      lockstep::Runtime rt(argc, argv);
      run(rt, mode);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "caught outside the Runtime: %s\n", error.what());
      return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
  }
  lockstep::Runtime rt(argc, argv);
  run(rt, mode);
  return EXIT_SUCCESS;
}
