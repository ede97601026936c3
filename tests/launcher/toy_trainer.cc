// A small deterministic "trainer" for the launcher's tests: every step
// all-reduces a value (so a dead rank blocks the others, as in real
// training), reports a heartbeat, and checkpoints its state to a file when
// the runtime decides to. Its final value is the same whether or not the run
// was interrupted and resumed.
//
//   toy_trainer --steps N [--step-ms M] [--fail-before-first-step]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <lockstep/lockstep.h>
#include <lockstep/mpi_check.h>

namespace {

struct Options {
  std::int64_t steps = 20;
  int step_ms = 20;
  bool fail_before_first_step = false;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--steps" && i + 1 < argc) {
      options.steps = std::stoll(argv[++i]);
    } else if (flag == "--step-ms" && i + 1 < argc) {
      options.step_ms = std::stoi(argv[++i]);
    } else if (flag == "--fail-before-first-step") {
      options.fail_before_first_step = true;
    } else {
      throw lockstep::UsageError("unknown argument " + flag);
    }
  }
  return options;
}

struct State {
  std::int64_t next_step = 0;
  double value = 1.0;
};

// Rank 0 writes, then renames: a crash never leaves a torn file.
void save(const lockstep::Runtime& rt, const State& state) {
  LOCKSTEP_CHECK_MPI(MPI_Barrier(rt.comm()));
  if (rt.rank() != 0) return;
  const auto path = rt.run_dir() / "toy-checkpoint";
  {
    std::ofstream file(path.string() + ".tmp");
    char text[64];
    std::snprintf(text, sizeof(text), "%lld %a\n", static_cast<long long>(state.next_step),
                  state.value);
    file << text;
  }
  std::filesystem::rename(path.string() + ".tmp", path);
}

State restore(const lockstep::Runtime& rt) {
  State state;
  if (rt.rank() == 0) {
    std::ifstream file(rt.run_dir() / "toy-checkpoint");
    long long step = 0;
    double value = 0;
    std::string hex;
    if (file >> step >> hex) {
      value = std::strtod(hex.c_str(), nullptr);
      state = {step, value};
    }
  }
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&state.next_step, 1, MPI_INT64_T, 0, rt.comm()));
  LOCKSTEP_CHECK_MPI(MPI_Bcast(&state.value, 1, MPI_DOUBLE, 0, rt.comm()));
  return state;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const Options options = parse(argc, argv);
  if (options.fail_before_first_step) throw std::runtime_error("configured to fail at start");
  State state = restore(rt);
  if (rt.rank() == 0) {
    lockstep::log::info("starting at step {} (restart {})", state.next_step, rt.restart_count());
  }
  for (std::int64_t step = state.next_step; step < options.steps; ++step) {
    double contribution = std::sin(static_cast<double>((step + 1) * (rt.rank() + 1)));
    double sum = 0;
    LOCKSTEP_CHECK_MPI(MPI_Allreduce(&contribution, &sum, 1, MPI_DOUBLE, MPI_SUM, rt.comm()));
    state.value = 0.5 * state.value + sum;
    std::this_thread::sleep_for(std::chrono::milliseconds(options.step_ms));
    state.next_step = step + 1;
    rt.heartbeat(step, {{"value", state.value}});
    if (rt.should_checkpoint(step)) {
      const auto begin = std::chrono::steady_clock::now();
      save(rt, state);
      rt.report_checkpoint(
          step, std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
    }
    if (rt.should_stop()) {
      if (rt.rank() == 0) lockstep::log::info("stopping after step {} as asked", step);
      return 0;
    }
  }
  if (rt.rank() == 0) {
    std::ofstream(rt.run_dir() / "toy-result") << std::hexfloat << state.value << "\n";
    lockstep::log::info("finished {} steps, value {}", options.steps, state.value);
  }
  return 0;
}
