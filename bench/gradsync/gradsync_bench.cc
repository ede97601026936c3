// GradSync on the gradients of GPT-2 small (124M parameters, 148 tensors in
// the order of its named_parameters()), two parts:
//
// comm     the time to average all gradients with GradSync (every gradient
//          marked ready, then wait()), against one MPI_Allreduce of the same
//          bytes in one buffer, against the same buffer in 4 MiB pieces, and
//          against lockstep's own (averaging) all-reduce of that one buffer;
//          plus the memory GradSync adds (resident set growth when it is
//          constructed and runs its first step, and the bytes of its bucket
//          buffers) against the gradient bytes.
// zero     ShardedGradSync (ZeRO-1: reduce-scatter, then all-gather of the
//          parameters) against GradSync's all-reduce of the same gradients
//          (as configured, and with every gradient packed), the transport
//          alone on one buffer (all-reduce, reduce-scatter, all-gather, and
//          Open MPI's own reduce-scatter and all-gather as the peer), and
//          the largest share of the elements (so of Adam's state) that a
//          rank owns, against 1/N.
// overlap  a synthetic backward pass that produces the gradients in reverse
//          order, each after "work" proportional to its element count,
//          calibrated to about --work-ratio times the communication alone.
//          `serial` marks every gradient ready after the backward pass;
//          `overlap` marks each as it appears. hidden = (serial - overlap) /
//          communication alone. Two kinds of work: `cpu` (arithmetic on the
//          calling thread, as a CPU backward pass) and `sleep` (the thread
//          waits, as a host thread whose backward runs on an accelerator).
//          The same with MPI_Iallreduce per gradient on the calling thread,
//          progressed by MPI_Testall after each layer, instead of GradSync's
//          communication thread (`nonblocking`).
//
//   mpiexec -n 2 gradsync_bench [options]   (--help lists them)
//
// --scale F divides every dimension by sqrt(F), so that the matrices (and
// the total) shrink by about F. Every figure is the median over --steps
// steps after one warm-up step, each step timed on the slowest rank. Rank 0
// prints one "key value" line per figure (run.sh turns them into tables).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <lockstep/communicator.h>
#include <lockstep/grad_sync.h>
#include <lockstep/runtime.h>
#include <lockstep/sharded_grad_sync.h>
#include <lockstep/tensor.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Settings {
  double scale = 1;
  int steps = 5;
  double bucket_mb = 25;
  double first_bucket_mb = 1;
  double in_place_min_mb = lockstep::GradSyncOptions{}.in_place_min_mb;
  double work_ratio = 1;
  std::string parts = "comm,overlap,zero";
  std::string work = "cpu,sleep";
};

// The settings from the command line; nullopt after --help or a bad flag
// (CLI11 has printed why on rank 0), with `exit_code` for main.
std::optional<Settings> parse(int argc, char** argv, int rank, int& exit_code) {
  Settings settings;
  CLI::App app{
      "GradSync on GPT-2 small's gradients against one MPI_Allreduce of the same bytes, and the "
      "share of its communication a backward pass hides (bench/gradsync/run.sh adds PyTorch DDP "
      "and prints the tables)"};
  app.add_option("--scale", settings.scale, "Divides every dimension by sqrt(F)")
      ->check(CLI::Range(0.001, 10000.0))
      ->capture_default_str();
  app.add_option("--steps", settings.steps, "Timed steps; every figure is their median")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--bucket-mb", settings.bucket_mb, "GradSync bucket size, MiB")
      ->check(CLI::Range(0.001, 1e6))
      ->capture_default_str();
  app.add_option("--first-bucket-mb", settings.first_bucket_mb, "The first bucket's size, MiB")
      ->check(CLI::Range(0.001, 1e6))
      ->capture_default_str();
  app.add_option("--in-place-min-mb", settings.in_place_min_mb,
                 "Gradients this large or larger are reduced in their own storage, MiB")
      ->check(CLI::Range(0.0, 1e12))
      ->capture_default_str();
  app.add_option("--work-ratio", settings.work_ratio,
                 "The overlap run's backward work, as a multiple of the communication alone")
      ->check(CLI::Range(0.001, 1000.0))
      ->capture_default_str();
  app.add_option("--parts", settings.parts, "Which parts to run: comm, overlap, zero")
      ->capture_default_str();
  app.add_option("--work", settings.work, "The overlap run's kinds of work: cpu, sleep or both")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    exit_code = rank == 0 ? app.exit(error) : error.get_exit_code();
    return std::nullopt;
  }
  return settings;
}

bool listed(const std::string& list, const std::string& item) {
  return ("," + list + ",").find("," + item + ",") != std::string::npos;
}

struct Parameter {
  std::string name;
  lockstep::Shape shape;
};

// GPT-2 small (n_layer 12, n_embd 768, vocab 50257, context 1024), every
// dimension divided by sqrt(scale). The language-model head shares wte.
std::vector<Parameter> gpt2_small(double scale) {
  const double divisor = std::sqrt(std::max(scale, 1.0));
  auto dim = [&](std::int64_t size) {
    return std::max<std::int64_t>(1, std::llround(static_cast<double>(size) / divisor));
  };
  const std::int64_t embd = dim(768);
  std::vector<Parameter> parameters{{"wte.weight", {dim(50257), embd}},
                                    {"wpe.weight", {dim(1024), embd}}};
  for (int block = 0; block < 12; ++block) {
    const std::string prefix = "h." + std::to_string(block) + ".";
    auto add = [&](const std::string& name, lockstep::Shape shape) {
      parameters.push_back({prefix + name, std::move(shape)});
    };
    add("ln_1.weight", {embd});
    add("ln_1.bias", {embd});
    add("attn.c_attn.weight", {embd, dim(2304)});
    add("attn.c_attn.bias", {dim(2304)});
    add("attn.c_proj.weight", {embd, embd});
    add("attn.c_proj.bias", {embd});
    add("ln_2.weight", {embd});
    add("ln_2.bias", {embd});
    add("mlp.c_fc.weight", {embd, dim(3072)});
    add("mlp.c_fc.bias", {dim(3072)});
    add("mlp.c_proj.weight", {dim(3072), embd});
    add("mlp.c_proj.bias", {embd});
  }
  parameters.push_back({"ln_f.weight", {embd}});
  parameters.push_back({"ln_f.bias", {embd}});
  return parameters;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// For each of `ways`, the median over `steps` of the slowest rank's time
// for one call, after one warm-up call each. The ways take turns step by
// step, so that a change in the machine's load affects them alike.
std::vector<double> time_steps(MPI_Comm comm, int steps,
                               const std::vector<std::function<void()>>& ways) {
  for (const auto& way : ways) way();
  std::vector<std::vector<double>> times(ways.size());
  for (int i = 0; i < steps; ++i) {
    for (std::size_t w = 0; w < ways.size(); ++w) {
      MPI_Barrier(comm);
      const auto start = Clock::now();
      ways[w]();
      const double mine = seconds_since(start);
      double slowest = 0;
      MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
      times[w].push_back(slowest);
    }
  }
  std::vector<double> medians;
  for (auto& way_times : times) medians.push_back(median(way_times));
  return medians;
}

// Resident set size of this process in bytes (VmRSS, or VmHWM for the peak).
double resident_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atof(line.c_str() + field.size() + 1) * 1024;
  }
  return 0;
}

// Arithmetic on a cache-resident scratch array: `elements` element updates.
float cpu_work(std::vector<float>& scratch, std::int64_t elements) {
  float total = 0;
  while (elements > 0) {
    const auto count =
        static_cast<std::size_t>(std::min<std::int64_t>(elements, std::ssize(scratch)));
    for (std::size_t i = 0; i < count; ++i) {
      scratch[i] = scratch[i] * 0.999F + 0.001F;
      total += scratch[i];
    }
    elements -= static_cast<std::int64_t>(count);
  }
  return total;
}

// Seconds one element update of cpu_work() takes on the slowest rank.
double seconds_per_update(MPI_Comm comm, std::vector<float>& scratch) {
  volatile float sink = 0;
  const std::int64_t probe = 50'000'000;
  double probe_time = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    sink = sink + cpu_work(scratch, probe);
    probe_time = std::min(probe_time, seconds_since(start));
  }
  double slowest = 0;
  MPI_Allreduce(&probe_time, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
  return slowest / static_cast<double>(probe);
}

void print(int rank, const std::string& key, double value) {
  if (rank == 0) std::printf("%s %.10g\n", key.c_str(), value);
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime rt(argc, argv);
  int exit_code = 0;
  const auto parsed = parse(argc, argv, rt.rank(), exit_code);
  if (!parsed) return exit_code;
  const Settings& settings = *parsed;
  const int rank = rt.rank();
  const MPI_Comm world = rt.comm();
  auto comm = lockstep::make_communicator(rt);

  std::vector<lockstep::Tensor> gradients;
  std::int64_t total_elements = 0;
  for (const Parameter& parameter : gpt2_small(settings.scale)) {
    gradients.push_back(
        lockstep::Tensor::allocate(parameter.name, lockstep::DType::kF32, parameter.shape));
    std::fill_n(gradients.back().data_as<float>(), gradients.back().numel(),
                static_cast<float>(rank + 1));
    total_elements += gradients.back().numel();
  }
  const double gradient_bytes = static_cast<double>(total_elements) * sizeof(float);
  print(rank, "ranks", rt.world_size());
  print(rank, "tensors", static_cast<double>(gradients.size()));
  print(rank, "parameters", static_cast<double>(total_elements));
  print(rank, "gradient_mib", gradient_bytes / 1048576.0);

  // Memory: what constructing GradSync and running its first step adds.
  const double resident_before = resident_bytes("VmRSS");
  lockstep::GradSync sync(*comm, gradients,
                          {.bucket_mb = settings.bucket_mb,
                           .first_bucket_mb = settings.first_bucket_mb,
                           .in_place_min_mb = settings.in_place_min_mb});
  auto sync_step = [&] {
    for (const lockstep::Tensor& gradient : gradients) sync.ready(gradient);
    sync.wait();
  };
  sync_step();
  const double resident_growth = resident_bytes("VmRSS") - resident_before;
  const auto layout = sync.bucket_layout();
  // Every gradient is f32 and so is the wire: the buffers hold the
  // gradients that are not reduced in place, once each.
  double packed_bytes = 0;
  for (const lockstep::Tensor& gradient : gradients) {
    const auto bytes = static_cast<double>(gradient.nbytes());
    if (bytes < settings.in_place_min_mb * 1048576.0) packed_bytes += bytes;
  }
  print(rank, "buckets", static_cast<double>(layout.size()));
  print(rank, "bucket_buffer_mib", packed_bytes / 1048576.0);
  print(rank, "rss_growth_mib", resident_growth / 1048576.0);

  // Correctness of the step above, every element: rank r contributed r + 1.
  const float expected = static_cast<float>(rt.world_size() + 1) / 2.0F;
  for (const lockstep::Tensor& gradient : gradients) {
    const float* values = gradient.data_as<float>();
    const float* wrong = std::find_if(values, values + gradient.numel(),
                                      [&](float value) { return value != expected; });
    if (wrong != values + gradient.numel()) {
      std::fprintf(stderr, "gradsync_bench: '%s' holds %g at %td, expected %g\n",
                   gradient.name().c_str(), static_cast<double>(*wrong), wrong - values,
                   static_cast<double>(expected));
      return 1;
    }
  }

  if (listed(settings.parts, "comm")) {
    // (a) the same bytes in one buffer: one MPI_Allreduce, the same buffer
    // in 4 MiB pieces (Open MPI at its best on this machine), and lockstep's
    // all-reduce of the buffer (GradSync's transport without the buckets).
    std::vector<float> flat(static_cast<std::size_t>(total_elements), static_cast<float>(rank));
    const std::size_t piece = std::size_t{4} << 20 >> 2;
    lockstep::Tensor flat_tensor =
        lockstep::Tensor::borrow("flat", flat.data(), lockstep::DType::kF32, {total_elements});
    const std::vector<double> medians =
        time_steps(world, settings.steps,
                   {sync_step,
                    [&] {
                      MPI_Allreduce(MPI_IN_PLACE, flat.data(), static_cast<int>(flat.size()),
                                    MPI_FLOAT, MPI_SUM, world);
                    },
                    [&] {
                      for (std::size_t offset = 0; offset < flat.size(); offset += piece) {
                        MPI_Allreduce(MPI_IN_PLACE, flat.data() + offset,
                                      static_cast<int>(std::min(piece, flat.size() - offset)),
                                      MPI_FLOAT, MPI_SUM, world);
                      }
                    },
                    [&] { comm->allreduce(flat_tensor, {.op = lockstep::ReduceOp::kAvg}); }});
    print(rank, "lockstep_one_buffer_avg_ms", medians[3] * 1e3);
    print(rank, "gradsync_ms", medians[0] * 1e3);
    print(rank, "mpi_allreduce_ms", medians[1] * 1e3);
    print(rank, "mpi_allreduce_4mib_pieces_ms", medians[2] * 1e3);
  }

  if (listed(settings.parts, "zero")) {
    // GradSync and ShardedGradSync as configured (the step of the other
    // parts), and GradSync with every gradient packed; the parameters are
    // the gradients' twins.
    const lockstep::GradSyncOptions packed{.bucket_mb = settings.bucket_mb,
                                           .first_bucket_mb = settings.first_bucket_mb,
                                           .in_place_min_mb = 1e12};
    std::vector<lockstep::Tensor> parameters;
    for (const lockstep::Tensor& gradient : gradients) {
      parameters.push_back(
          lockstep::Tensor::allocate(gradient.name(), gradient.dtype(), gradient.shape()));
    }
    lockstep::GradSync replicated(*comm, gradients, packed);
    lockstep::ShardedGradSync sharded(*comm, parameters, gradients,
                                      {.bucket_mb = settings.bucket_mb,
                                       .first_bucket_mb = settings.first_bucket_mb,
                                       .in_place_min_mb = settings.in_place_min_mb});
    const std::vector<double> medians =
        time_steps(world, settings.steps,
                   {[&] {
                      for (const lockstep::Tensor& gradient : gradients) replicated.ready(gradient);
                      replicated.wait();
                    },
                    sync_step,
                    [&] {
                      for (const lockstep::Tensor& gradient : gradients) sharded.ready(gradient);
                      sharded.wait();
                      sharded.gather_parameters();
                      sharded.wait_parameters();
                    }});
    // The transport alone, on one buffer of every gradient's elements.
    lockstep::Tensor flat =
        lockstep::Tensor::allocate("flat", lockstep::DType::kF32, {total_elements});
    const std::vector<double> transport = time_steps(
        world, settings.steps,
        {[&] { comm->allreduce_async(flat)->wait(); },
         [&] { comm->reduce_scatter_stream_async({flat})->wait(); },
         [&] { comm->allgather_stream_async({flat})->wait(); },
         [&] {
           // The peer: Open MPI's own reduce-scatter and all-gather of
           // equal blocks (GPT-2 small's element count divides by 2, 4
           // and 8; at other scales the last few elements stay out).
           const int block = static_cast<int>(total_elements / rt.world_size());
           float* data = flat.data_as<float>();
           MPI_Reduce_scatter_block(MPI_IN_PLACE, data, block, MPI_FLOAT, MPI_SUM, world);
           MPI_Allgather(MPI_IN_PLACE, block, MPI_FLOAT, data, block, MPI_FLOAT, world);
         }});
    print(rank, "zero_flat_allreduce_ms", transport[0] * 1e3);
    print(rank, "zero_flat_reduce_scatter_ms", transport[1] * 1e3);
    print(rank, "zero_flat_allgather_ms", transport[2] * 1e3);
    print(rank, "zero_flat_mpi_reduce_scatter_allgather_ms", transport[3] * 1e3);
    std::int64_t most_owned = 0;
    const std::int64_t owned = sharded.layout().local_elements;
    MPI_Allreduce(&owned, &most_owned, 1, MPI_INT64_T, MPI_MAX, world);
    print(rank, "zero_allreduce_packed_ms", medians[0] * 1e3);
    print(rank, "zero_allreduce_default_ms", medians[1] * 1e3);
    print(rank, "zero_sharded_ms", medians[2] * 1e3);
    print(rank, "zero_most_owned_share",
          static_cast<double>(most_owned) / static_cast<double>(total_elements));

    // The all-gather against the next forward pass: a synthetic forward
    // that visits the parameters first layer first, each after waiting for
    // its bucket (wait_parameter) and then working in proportion to its
    // elements, against waiting for every bucket first (wait_parameters).
    // The forward takes --work-ratio times the all-gather alone.
    const auto gather_all = [&] {
      sharded.gather_parameters();
      sharded.wait_parameters();
    };
    const double gather = time_steps(world, settings.steps, {gather_all})[0];
    std::vector<float> scratch(16 * 1024, 1.0F);
    volatile float sink = 0;
    const double forward_seconds = settings.work_ratio * gather;
    const double updates_per_element =
        forward_seconds / seconds_per_update(world, scratch) / static_cast<double>(total_elements);
    print(rank, "zero_gather_ms", gather * 1e3);
    for (const std::string kind : {"cpu", "sleep"}) {
      if (!listed(settings.work, kind)) continue;
      const auto forward = [&](bool wait_each) {
        auto deadline = Clock::now();
        for (std::size_t index = 0; index < parameters.size(); ++index) {
          if (wait_each) sharded.wait_parameter(parameters[index]);
          const auto elements = static_cast<double>(parameters[index].numel());
          if (kind == "cpu") {
            sink = sink + cpu_work(scratch, std::llround(updates_per_element * elements));
            continue;
          }
          // A layer's time counts from when it could start.
          deadline = std::max(deadline, Clock::now()) +
                     std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                         forward_seconds * elements / static_cast<double>(total_elements)));
          std::this_thread::sleep_until(deadline);
        }
      };
      const std::vector<double> forward_medians = time_steps(world, settings.steps,
                                                             {[&] { forward(false); },
                                                              [&] {
                                                                gather_all();
                                                                forward(false);
                                                              },
                                                              [&] {
                                                                sharded.gather_parameters();
                                                                forward(true);
                                                                sharded.wait_parameters();
                                                              }});
      const std::string prefix = "zero_forward_" + kind + "_";
      print(rank, prefix + "alone_ms", forward_medians[0] * 1e3);
      print(rank, prefix + "gather_first_ms", forward_medians[1] * 1e3);
      print(rank, prefix + "gather_per_bucket_ms", forward_medians[2] * 1e3);
      // Of the all-gather's time, what the forward did not wait for.
      print(rank, prefix + "hidden_pct",
            100.0 * (1.0 - (forward_medians[2] - forward_medians[0]) / gather));
    }
    // The forward's first layers wait for the whole bucket that holds them
    // (the last one launched, gathered first): that share cannot be hidden.
    double first_gathered = 0;
    const auto buckets = sharded.bucket_layout();
    for (const std::string& name : buckets.back()) {
      for (const lockstep::Tensor& parameter : parameters) {
        if (parameter.name() == name) first_gathered += static_cast<double>(parameter.numel());
      }
    }
    print(rank, "zero_first_gathered_share_pct",
          100.0 * first_gathered / static_cast<double>(total_elements));
  }

  if (listed(settings.parts, "overlap")) {
    // Work per element of gradient so that the backward pass takes about
    // work_ratio times the communication alone.
    std::vector<float> scratch(16 * 1024, 1.0F);
    volatile float sink = 0;
    const double per_update = seconds_per_update(world, scratch);
    const double communication = time_steps(world, settings.steps, {sync_step})[0];
    const double backward_seconds = settings.work_ratio * communication;
    const double updates_per_element =
        backward_seconds / per_update / static_cast<double>(total_elements);

    for (const std::string kind : {"cpu", "sleep"}) {
      if (!listed(settings.work, kind)) continue;
      // Runs the backward pass from the last gradient to the first.
      auto backward = [&](const std::function<void(std::size_t)>& on_gradient) {
        const auto start = Clock::now();
        double planned = 0;
        for (std::size_t index = gradients.size(); index-- > 0;) {
          const double share =
              static_cast<double>(gradients[index].numel()) / static_cast<double>(total_elements);
          if (kind == "cpu") {
            sink = sink +
                   cpu_work(scratch, std::llround(updates_per_element *
                                                  static_cast<double>(gradients[index].numel())));
          } else {
            planned += share * backward_seconds;
            std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                      std::chrono::duration<double>(planned)));
          }
          on_gradient(index);
        }
      };
      // The alternative to the communication thread: MPI_Iallreduce per
      // gradient from the calling thread, progressed by MPI_Testall after
      // each layer (Open MPI advances non-blocking collectives only inside
      // MPI calls), summing only.
      std::vector<MPI_Request> requests;
      auto start_nonblocking = [&](std::size_t index) {
        lockstep::Tensor& gradient = gradients[index];
        MPI_Iallreduce(MPI_IN_PLACE, gradient.data(), static_cast<int>(gradient.numel()), MPI_FLOAT,
                       MPI_SUM, world, &requests.emplace_back());
        int done = 0;
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
      };
      auto finish_nonblocking = [&] {
        MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
        requests.clear();
      };
      const std::vector<double> medians =
          time_steps(world, settings.steps,
                     {sync_step, [&] { backward([](std::size_t) {}); },
                      [&] {
                        backward([](std::size_t) {});
                        sync_step();
                      },
                      [&] {
                        backward([&](std::size_t index) { sync.ready(gradients[index]); });
                        sync.wait();
                      },
                      [&] {
                        backward([](std::size_t) {});
                        for (std::size_t index = gradients.size(); index-- > 0;) {
                          start_nonblocking(index);
                        }
                        finish_nonblocking();
                      },
                      [&] {
                        backward(start_nonblocking);
                        finish_nonblocking();
                      }});
      const double alone = medians[1];
      const double serial = medians[2];
      const double overlapped = medians[3];
      const std::string prefix = "overlap_" + kind + "_";
      print(rank, prefix + "comm_ms", medians[0] * 1e3);
      print(rank, prefix + "backward_ms", alone * 1e3);
      print(rank, prefix + "serial_ms", serial * 1e3);
      print(rank, prefix + "overlap_ms", overlapped * 1e3);
      print(rank, prefix + "nonblocking_serial_ms", medians[4] * 1e3);
      print(rank, prefix + "nonblocking_overlap_ms", medians[5] * 1e3);
      print(rank, prefix + "nonblocking_hidden_pct",
            100.0 * (medians[4] - medians[5]) / (medians[4] - alone));
      print(rank, prefix + "hidden_pct", 100.0 * (serial - overlapped) / medians[0]);
    }
    // The last bucket (wte, produced last) cannot start before the backward
    // pass ends: its share of the bytes bounds what can be hidden.
    print(rank, "last_bucket_share_pct",
          100.0 * static_cast<double>(gradients.front().numel()) /
              static_cast<double>(total_elements));
  }
  print(rank, "peak_rss_mib", resident_bytes("VmHWM") / 1048576.0);
  return 0;
}
