// examples/mlp: an MLP classifier trained data-parallel with lockstep, the
// way a user would write it. Resumes from the newest checkpoint, averages
// gradients with GradSync while backward runs, checkpoints when the runtime
// decides (interval or signal), and ends with its accuracy.
//
//   lockstep run -n 4 -- mlp --steps 300 [--hidden 256,256] [--weights-out w.bin]
//                          [--device cpu|cuda] [--zero 1]
//
// --zero 1 shards Adam's state across the ranks (ZeRO-1, ShardedGradSync):
// each rank keeps the moments of its share of the parameters only, and the
// weights are the same bits as without it.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <lockstep/lockstep.h>
#include <CLI/CLI.hpp>

#include "dataset.h"
#include "model.h"
#if LOCKSTEP_EXAMPLE_CUDA
#include <lockstep/cuda_check.h>
#endif

namespace {

struct Options {
  std::int64_t steps = 300;
  std::string hidden = "256,256";
  int input_dim = 64;
  int classes = 10;
  int global_batch = 256;
  float learning_rate = 2e-3f;
  std::uint64_t seed = 1234;
  std::string device = "cpu";
  int keep_last = 3;
  bool sync_checkpoints = false;
  std::string weights_out;
  int step_ms = 0;  // extra time per step, to make runs long enough to watch
  int eval_samples = 4096;
  int zero = 0;  // 1: optimizer state sharded across the ranks
};

constexpr std::uint64_t kDatasetSize = std::uint64_t{1} << 20;

// The tensor's bytes in host memory, copied from its GPU if it is on one.
std::vector<char> host_bytes(const lockstep::Tensor& tensor) {
  std::vector<char> bytes(tensor.nbytes());
  if (tensor.device().is_cpu()) {
    std::copy_n(static_cast<const char*>(tensor.data()), bytes.size(), bytes.begin());
    return bytes;
  }
#if LOCKSTEP_EXAMPLE_CUDA
  LOCKSTEP_CHECK_CUDA(
      cudaMemcpy(bytes.data(), tensor.data(), bytes.size(), cudaMemcpyDeviceToHost));
  return bytes;
#else
  throw lockstep::UsageError("cannot read " + tensor.describe() + " without CUDA");
#endif
}

void write_weights(const std::string& path, const std::vector<lockstep::Tensor>& parameters) {
  std::ofstream file(path, std::ios::binary);
  for (const lockstep::Tensor& tensor : parameters) {
    const std::vector<char> bytes = host_bytes(tensor);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  if (!file) throw lockstep::IoError("cannot write the weights to " + path);
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  Options options;
  CLI::App app{"An MLP classifier trained data-parallel with lockstep", "mlp"};
  app.add_option("--steps", options.steps, "Training steps")->capture_default_str();
  app.add_option("--hidden", options.hidden, "Hidden layer widths, comma-separated")
      ->capture_default_str();
  app.add_option("--batch", options.global_batch, "Global batch (split across ranks)")
      ->capture_default_str();
  app.add_option("--lr", options.learning_rate, "Adam learning rate")->capture_default_str();
  app.add_option("--seed", options.seed, "Seed of data, teacher and weights")
      ->capture_default_str();
  app.add_option("--device", options.device, "cpu, or cuda: the GPU the runtime bound to the rank")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--keep", options.keep_last, "Checkpoints to keep")->capture_default_str();
  app.add_flag("--sync-checkpoints", options.sync_checkpoints, "Save checkpoints synchronously");
  app.add_option("--weights-out", options.weights_out, "Write the final weights here (rank 0)");
  app.add_option("--step-ms", options.step_ms, "Extra milliseconds per step (demos)");
  app.add_option("--zero", options.zero,
                 "1: shard Adam's state across the ranks (ZeRO-1); 0: every rank holds all of it")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return rt.rank() == 0 ? app.exit(error) : 2;
  }
  // Bad options stop every rank alike, before any collective: exit 2.
  lockstep::Device device;
  std::vector<int> widths;
  try {
    device = mlp::model_device(options.device, rt);
    widths = mlp::layer_widths(options.input_dim, options.hidden, options.classes);
    if (options.global_batch <= 0 || options.global_batch % rt.world_size() != 0) {
      const int ranks = rt.world_size();
      throw lockstep::UsageError(fmt::format(
          "--batch {} must be a positive multiple of the number of ranks ({}), so that every "
          "rank gets the same share; pass --batch {} (or start a number of ranks that divides {})",
          options.global_batch, ranks, std::max(ranks, options.global_batch / ranks * ranks),
          options.global_batch));
    }
  } catch (const lockstep::UsageError& error) {
    if (rt.rank() == 0) lockstep::log::error("mlp: {}", error.what());
    return 2;
  }
  // One BLAS thread per rank: ranks already fill the cores, and a fixed
  // thread count keeps results bit-identical from run to run.
  openblas_set_num_threads(1);

  auto model = mlp::make_model(device, widths, {.learning_rate = options.learning_rate});
  const mlp::TeacherDataset data(options.seed, options.input_dim, options.classes);
  const mlp::Sampler sampler(kDatasetSize, options.global_batch, rt.rank(), rt.world_size());

  // For the model's device, whatever the Runtime bound: --device cpu on a
  // GPU node still averages host gradients over MPI.
  auto communicator =
      lockstep::make_communicator(rt.comm(), device, lockstep::communicator_options(rt));
  // Replicated: GradSync averages every gradient and each rank updates
  // every parameter. ZeRO-1: each rank gets and updates its share, and the
  // parameters are gathered after the step.
  std::optional<lockstep::GradSync> sync;
  std::optional<lockstep::ShardedGradSync> sharded;
  if (options.zero == 1) {
    sharded.emplace(*communicator, model->parameters(), model->gradients());
    model->set_owned(sharded->layout());
  } else {
    sync.emplace(*communicator, model->gradients());
  }
  // Every rank must hold the same weights after each step: compare them now
  // and then (LOCKSTEP_REPLICA_CHECK_EVERY) and before every checkpoint.
  lockstep::ReplicaCheck replicas(*communicator, model->parameters(), rt);
  // The configuration's checkpoint settings (the memory tier among them),
  // with this program's own flags on top.
  lockstep::CheckpointOptions checkpoint_options = lockstep::checkpoint_options(rt);
  checkpoint_options.keep_last = options.keep_last;
  checkpoint_options.async = !options.sync_checkpoints;
  lockstep::Checkpointer checkpointer(rt, checkpoint_options);
  lockstep::KeyValues progress = {{"next_step", 0}, {"seed", options.seed}};
  lockstep::State state{{"model", model->parameters()}, {"data", progress}};
  for (lockstep::State::Item& item : model->optimizer_state()) state.add(std::move(item));
  std::int64_t step = 0;
  if (checkpointer.restore_latest(state)) {
    step = progress.at("next_step").get<std::int64_t>();
    if (progress.at("seed").get<std::uint64_t>() != options.seed) {
      throw lockstep::UsageError("the checkpoint in " + checkpointer.options().dir.string() +
                                 " was trained with another --seed; use a new --run-dir");
    }
  } else {
    model->initialize(options.seed);
  }
  // Every rank's share of Adam's state (bench/mlp/zero_memory.sh reads it).
  lockstep::log::debug("mlp: Adam's state {} bytes on this rank", model->optimizer_bytes());
  if (rt.rank() == 0) {
    lockstep::log::info(
        "mlp: {} parameters, layers {}, {} ranks x {} samples, steps {}..{} on {}{}",
        model->parameter_count(), options.hidden, rt.world_size(), sampler.local_batch(), step,
        options.steps, device.str(), options.zero == 1 ? ", Adam's state sharded (ZeRO-1)" : "");
  }

  double loss = 0;
  for (; step < options.steps; ++step) {
    const mlp::Batch batch =
        mlp::make_batch(data, sampler.local_batch(), [&](int j) { return sampler.index(step, j); });
    loss = model->forward_backward(batch, [&](lockstep::Tensor& gradient) {
      if (sharded) {
        sharded->ready(gradient);
      } else {
        sync->ready(gradient);
      }
    });
    if (sharded) {
      sharded->wait();
      model->optimizer_step();  // this rank's share
      sharded->gather_parameters();
      sharded->wait_parameters();
    } else {
      sync->wait();
      model->optimizer_step();
    }
    replicas.after_step(step);
    if (options.step_ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(options.step_ms));
    rt.heartbeat(step, {{"loss", loss}});
    if (rt.should_checkpoint(step)) {
      progress["next_step"] = step + 1;
      const auto begin = std::chrono::steady_clock::now();
      replicas.verify(step);  // a checkpoint never holds diverged weights
      checkpointer.save(step, state);
      rt.report_checkpoint(
          step, std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
    }
    if (rt.should_stop()) {
      checkpointer.wait();
      if (rt.rank() == 0) lockstep::log::info("stopped after step {}; run again to resume", step);
      return 0;
    }
  }
  checkpointer.wait();
  if (checkpointer.memory_tier_on()) {
    // The run is over: its final state on disk, node memory freed.
    if (!checkpointer.last_save_stats().on_disk) {
      progress["next_step"] = options.steps;
      checkpointer.save_to_disk(options.steps - 1, state);
    }
    checkpointer.discard_memory_tier();
  }

  const mlp::Batch held_out = mlp::make_batch(data, options.eval_samples, [&](int j) {
    return kDatasetSize + static_cast<std::uint64_t>(j);  // never trained on
  });
  const double accuracy = model->accuracy(held_out);
  if (rt.rank() == 0) {
    lockstep::log::info("mlp: finished {} steps: loss {:.4f}, held-out accuracy {:.2f}%",
                        options.steps, loss, 100 * accuracy);
    if (!options.weights_out.empty()) write_weights(options.weights_out, model->parameters());
  }
  return 0;
}
