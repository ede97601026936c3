// The training step of examples/mlp, timed: forward, backward with every
// gradient handed to GradSync as it appears, GradSync's wait, and Adam, on
// one batch drawn once (drawing batches is the data pipeline's cost, not the
// step's), with the device synchronised at the end of each step.
//
//   mpiexec -n 1 mlp_step_bench [--device cuda] [--hidden 256,256]
//                               [--batch 256] [--steps 200] [--warmup 20]
//
// Rank 0 prints "key value" lines: parameters, median_ms, mean_ms, and
// min_ms over the timed steps (each the slowest rank's), for run.sh.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <lockstep/lockstep.h>
#include <CLI/CLI.hpp>
#if LOCKSTEP_EXAMPLE_CUDA
#include <lockstep/cuda_check.h>
#endif

#include "dataset.h"
#include "model.h"

namespace {

struct Options {
  std::string device = "cuda";
  std::string hidden = "256,256";
  int input_dim = 64;
  int classes = 10;
  int batch = 256;
  int steps = 200;
  int warmup = 20;
};

void synchronize([[maybe_unused]] const lockstep::Device& device) {
#if LOCKSTEP_EXAMPLE_CUDA
  if (device.is_cuda()) LOCKSTEP_CHECK_CUDA(cudaDeviceSynchronize());
#endif
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  Options options;
  CLI::App app{"The example MLP's training step, timed"};
  app.add_option("--device", options.device, "cuda (the rank's GPU) or cpu")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--hidden", options.hidden, "Hidden layer widths, comma-separated")
      ->capture_default_str();
  app.add_option("--batch", options.batch, "Samples per rank and step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--steps", options.steps, "Timed steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", options.warmup, "Untimed steps first")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return rt.rank() == 0 ? app.exit(error) : 2;
  }

  lockstep::Device device;
  std::vector<int> widths;
  try {
    device = mlp::model_device(options.device, rt);
    widths = mlp::layer_widths(options.input_dim, options.hidden, options.classes);
  } catch (const lockstep::UsageError& error) {
    if (rt.rank() == 0) lockstep::log::error("mlp_step_bench: {}", error.what());
    return 2;
  }
  auto model = mlp::make_model(device, widths, {.learning_rate = 2e-3f});
  model->initialize(1234);
  auto communicator =
      lockstep::make_communicator(rt.comm(), device, lockstep::communicator_options(rt));
  lockstep::GradSync sync(*communicator, model->gradients());

  const mlp::TeacherDataset data(1234, options.input_dim, options.classes);
  // Each rank its own samples, as the trainer's sampler gives them.
  const mlp::Batch batch = mlp::make_batch(data, options.batch, [&](int j) {
    return static_cast<std::uint64_t>(j) +
           static_cast<std::uint64_t>(rt.rank()) * static_cast<std::uint64_t>(options.batch);
  });

  std::vector<double> milliseconds;
  for (int step = 0; step < options.warmup + options.steps; ++step) {
    MPI_Barrier(rt.comm());
    const auto begin = std::chrono::steady_clock::now();
    model->forward_backward(batch, [&](lockstep::Tensor& gradient) { sync.ready(gradient); });
    sync.wait();
    model->optimizer_step();
    synchronize(device);
    double mine =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
    double slowest = 0;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, rt.comm());
    if (step >= options.warmup) milliseconds.push_back(slowest);
  }

  if (rt.rank() == 0) {
    std::vector<double> sorted = milliseconds;
    std::sort(sorted.begin(), sorted.end());
    const double mean =
        std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(sorted.size());
    std::printf("device %s\nranks %d\nparameters %lld\nbatch %d\n", device.str().c_str(),
                rt.world_size(), static_cast<long long>(model->parameter_count()), options.batch);
    std::printf("median_ms %.4f\nmean_ms %.4f\nmin_ms %.4f\n", sorted[sorted.size() / 2], mean,
                sorted.front());
  }
  return 0;
}
