// One synthetic training step: a backward pass of fixed work per layer that
// produces one gradient per layer, then the averaged gradients. Three ways:
//
//   no_overlap       backward first, then GradSync (every bucket after compute)
//   grad_sync        GradSync::ready() as each gradient appears; a
//                    communication thread runs the buckets meanwhile
//   mpi_nonblocking  the same buckets with MPI_Iallreduce, progressed by
//                    MPI_Test after each layer (no extra thread)
//
//   mpiexec -n 2 gradsync_bench [--layers 24] [--layer-mb 1] [--steps 8] [--bucket-mb 4]
//
// Prints the mean step time of each way on rank 0 and its ratio to
// no_overlap. The work per layer is calibrated so that the whole backward
// pass takes about as long as communicating all gradients alone.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/grad_sync.h>
#include <lockstep/lockstep.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Settings {
  int layers = 24;
  double layer_mb = 1;
  int steps = 8;
  double bucket_mb = 4;
};

Settings parse(int argc, char** argv) {
  Settings settings;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--layers") settings.layers = std::atoi(argv[i + 1]);
    if (flag == "--layer-mb") settings.layer_mb = std::atof(argv[i + 1]);
    if (flag == "--steps") settings.steps = std::atoi(argv[i + 1]);
    if (flag == "--bucket-mb") settings.bucket_mb = std::atof(argv[i + 1]);
  }
  return settings;
}

// A fixed amount of arithmetic, standing in for one layer's backward pass.
float layer_work(std::vector<float>& scratch, int passes) {
  float total = 0;
  for (int pass = 0; pass < passes; ++pass) {
    for (float& value : scratch) {
      value = value * 0.999F + 0.001F;
      total += value;
    }
  }
  return total;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double slowest(MPI_Comm comm, double mine) {
  double result = 0;
  MPI_Allreduce(&mine, &result, 1, MPI_DOUBLE, MPI_MAX, comm);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  const Settings settings = parse(argc, argv);
  auto comm = lockstep::make_communicator(rt);
  const auto layer_elements = static_cast<std::int64_t>(settings.layer_mb * 1024 * 1024 / 4);
  std::vector<lockstep::Tensor> gradients;
  for (int layer = 0; layer < settings.layers; ++layer) {
    gradients.push_back(lockstep::Tensor::allocate("layer" + std::to_string(layer) + ".grad",
                                                   lockstep::DType::kF32, {layer_elements}));
  }
  lockstep::GradSync sync(*comm, gradients, {.bucket_mb = settings.bucket_mb});
  std::vector<float> scratch(64 * 1024, 1.0F);
  volatile float sink = 0;

  // Calibration: communication alone (after a warm-up), and one pass of
  // layer work.
  for (auto& gradient : gradients) sync.ready(gradient);
  sync.wait();
  MPI_Barrier(rt.comm());
  auto start = Clock::now();
  for (auto& gradient : gradients) sync.ready(gradient);
  sync.wait();
  const double communication = slowest(rt.comm(), seconds_since(start));
  start = Clock::now();
  sink = sink + layer_work(scratch, 10);
  const double per_pass = slowest(rt.comm(), seconds_since(start)) / 10;
  const int passes =
      std::max(1, static_cast<int>(communication / settings.layers / std::max(per_pass, 1e-9)));

  auto backward = [&](auto&& on_gradient) {
    for (int layer = settings.layers - 1; layer >= 0; --layer) {
      sink = sink + layer_work(scratch, passes);
      on_gradient(static_cast<std::size_t>(layer));
    }
  };

  // The same buckets for the MPI non-blocking way.
  const auto layout = sync.bucket_layout();
  std::vector<std::vector<float>> buckets;
  std::vector<int> bucket_of(static_cast<std::size_t>(settings.layers));
  std::vector<std::size_t> offset_of(static_cast<std::size_t>(settings.layers));
  std::vector<std::size_t> missing;
  for (std::size_t b = 0; b < layout.size(); ++b) {
    std::size_t elements = 0;
    for (const std::string& name : layout[b]) {
      const auto layer = static_cast<std::size_t>(std::stoi(name.substr(5)));
      bucket_of[layer] = static_cast<int>(b);
      offset_of[layer] = elements;
      elements += static_cast<std::size_t>(layer_elements);
    }
    buckets.emplace_back(elements);
    missing.push_back(layout[b].size());
  }
  lockstep::MpiComm private_comm = lockstep::MpiComm::dup(rt.comm());

  auto step_no_overlap = [&] {
    backward([](std::size_t) {});
    for (auto& gradient : gradients) sync.ready(gradient);
    sync.wait();
  };
  auto step_grad_sync = [&] {
    backward([&](std::size_t layer) { sync.ready(gradients[layer]); });
    sync.wait();
  };
  auto step_mpi_nonblocking = [&] {
    std::vector<MPI_Request> requests(buckets.size(), MPI_REQUEST_NULL);
    std::vector<std::size_t> waiting = missing;
    std::size_t next = 0;
    backward([&](std::size_t layer) {
      const auto b = static_cast<std::size_t>(bucket_of[layer]);
      std::copy_n(gradients[layer].data_as<float>(), layer_elements,
                  buckets[b].data() + offset_of[layer]);
      --waiting[b];
      while (next < buckets.size() && waiting[next] == 0) {
        MPI_Iallreduce(MPI_IN_PLACE, buckets[next].data(), static_cast<int>(buckets[next].size()),
                       MPI_FLOAT, MPI_SUM, private_comm.get(), &requests[next]);
        ++next;
      }
      int done = 0;
      MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    });
    MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
    const float inverse = 1.0F / static_cast<float>(rt.world_size());
    for (std::size_t layer = 0; layer < gradients.size(); ++layer) {
      const float* source =
          buckets[static_cast<std::size_t>(bucket_of[layer])].data() + offset_of[layer];
      float* target = gradients[layer].data_as<float>();
      for (std::int64_t i = 0; i < layer_elements; ++i) target[i] = source[i] * inverse;
    }
  };

  auto measure = [&](auto&& step) {
    step();  // warm-up
    MPI_Barrier(rt.comm());
    const auto begin = Clock::now();
    for (int i = 0; i < settings.steps; ++i) step();
    return slowest(rt.comm(), seconds_since(begin) / settings.steps);
  };
  const double no_overlap = measure(step_no_overlap);
  const double grad_sync = measure(step_grad_sync);
  const double mpi_nonblocking = measure(step_mpi_nonblocking);
  if (rt.rank() == 0) {
    std::printf(
        "# %d ranks, %d layers x %.3g MiB f32 (%zu buckets), communication alone %.1f ms, "
        "%d passes of layer work per layer\n",
        rt.world_size(), settings.layers, settings.layer_mb, layout.size(), communication * 1e3,
        passes);
    std::printf("%-16s %12s %10s\n", "way", "step ms", "vs none");
    std::printf("%-16s %12.1f %10.2f\n", "no_overlap", no_overlap * 1e3, 1.0);
    std::printf("%-16s %12.1f %10.2f\n", "grad_sync", grad_sync * 1e3, no_overlap / grad_sync);
    std::printf("%-16s %12.1f %10.2f\n", "mpi_nonblocking", mpi_nonblocking * 1e3,
                no_overlap / mpi_nonblocking);
  }
  return 0;
}
