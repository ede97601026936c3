// ShardedGradSync (ZeRO-1): each rank gets the average of the elements it
// owns, the same bits as GradSync's; an optimizer step on the owned elements
// and the all-gather leave every rank with the parameters the replicated
// path computes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/grad_sync.h>
#include <lockstep/sharded_grad_sync.h>

#include "grad_sync_checks.h"
#include "mpi_test.h"
#include "tensor_values.h"

namespace lockstep {
namespace {

using testing::element;
using testing::runtime;
using testing::set_element;

Communicator& communicator() { return testing::host_communicator(); }

// The host communicator with its stream shares hidden, as NCCL has none:
// ShardedGradSync then takes the path it takes on a GPU (every gradient
// packed into a buffer padded to equal blocks, reduce_scatter and
// allgather of those), here over the real MPI collectives.
class EqualBlocksOnly final : public Communicator {
 public:
  explicit EqualBlocksOnly(Communicator& inner) : inner_(inner) {}
  std::string_view backend_name() const override { return inner_.backend_name(); }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void allreduce(Tensor& tensor, const AllreduceOptions& options) override {
    inner_.allreduce(tensor, options);
  }
  std::shared_ptr<Work> allreduce_async(Tensor tensor, const AllreduceOptions& options) override {
    return inner_.allreduce_async(std::move(tensor), options);
  }
  void broadcast(Tensor& tensor, const BroadcastOptions& options) override {
    inner_.broadcast(tensor, options);
  }
  std::shared_ptr<Work> broadcast_async(Tensor tensor, const BroadcastOptions& options) override {
    return inner_.broadcast_async(std::move(tensor), options);
  }
  void allgather(const Tensor& input, Tensor& output, const AllgatherOptions& options) override {
    inner_.allgather(input, output, options);
  }
  std::shared_ptr<Work> allgather_async(Tensor input, Tensor output,
                                        const AllgatherOptions& options) override {
    ++equal_block_calls_;
    return inner_.allgather_async(std::move(input), std::move(output), options);
  }
  void reduce_scatter(const Tensor& input, Tensor& output,
                      const ReduceScatterOptions& options) override {
    inner_.reduce_scatter(input, output, options);
  }
  std::shared_ptr<Work> reduce_scatter_async(Tensor input, Tensor output,
                                             const ReduceScatterOptions& options) override {
    ++equal_block_calls_;
    return inner_.reduce_scatter_async(std::move(input), std::move(output), options);
  }
  void barrier(const BarrierOptions& options) override { inner_.barrier(options); }
  std::shared_ptr<Work> barrier_async(const BarrierOptions& options) override {
    return inner_.barrier_async(options);
  }
  std::vector<std::string> exchange_metadata(const std::string& mine) override {
    return inner_.exchange_metadata(mine);
  }
  // How many reduce_scatter_async and allgather_async calls came through.
  int equal_block_calls() const { return equal_block_calls_; }

 private:
  Communicator& inner_;
  int equal_block_calls_ = 0;
};

struct ParamSpec {
  std::string name;
  DType dtype;
  Shape shape;
};

// No size divides evenly by 2, 3, 4 or 8 ranks everywhere; a one-element
// bias alone in the first small bucket leaves every rank but one an empty
// share, and an empty tensor owns nothing anywhere.
const std::vector<ParamSpec> kParams = {
    {"embed.weight", DType::kF32, {97, 31}}, {"fc1.weight", DType::kF32, {257}},
    {"fc1.bias", DType::kF32, {3}},          {"norm.scale", DType::kBF16, {129}},
    {"fc2.weight", DType::kF64, {7, 73}},    {"fc2.bias", DType::kF64, {0}},
    {"head.weight", DType::kF32, {1021}},    {"head.bias", DType::kF32, {1}},
};

const GradSyncOptions kSmallBuckets{.bucket_mb = 4.0 / 1024, .first_bucket_mb = 4.0 / 1024 / 1024};

// kSmallBuckets with gradients of `in_place_min_mb` MiB or more in place.
GradSyncOptions small_buckets_in_place_from(double in_place_min_mb) {
  GradSyncOptions options = kSmallBuckets;
  options.in_place_min_mb = in_place_min_mb;
  return options;
}

double gradient_value(int rank, std::size_t param, std::size_t index, int step) {
  return testing::input_value(rank + 3 * step, index * 31 + param, DType::kF32);
}

std::vector<Tensor> make_tensors(const std::string& suffix) {
  std::vector<Tensor> tensors;
  for (const ParamSpec& spec : kParams) {
    tensors.push_back(Tensor::allocate(spec.name + suffix, spec.dtype, spec.shape));
  }
  return tensors;
}

void fill_gradients(std::vector<Tensor>& gradients, int rank, int step) {
  for (std::size_t p = 0; p < gradients.size(); ++p) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(gradients[p].numel()); ++i) {
      set_element(gradients[p], i, gradient_value(rank, p, i, step));
    }
  }
}

void fill_parameters(std::vector<Tensor>& parameters) {
  for (std::size_t p = 0; p < parameters.size(); ++p) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(parameters[p].numel()); ++i) {
      set_element(parameters[p], i, 0.5 * static_cast<double>((i * 5 + p) % 17));
    }
  }
}

// Marks every gradient ready in an order of this rank's own.
template <class Sync>
void mark_all_ready(Sync& sync, std::vector<Tensor>& gradients, std::mt19937& random) {
  std::vector<std::size_t> order(gradients.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), random);
  for (const std::size_t index : order) sync.ready(gradients[index]);
}

bool same_bits(const Tensor& a, std::size_t a_index, const Tensor& b, std::size_t b_index,
               std::size_t count) {
  const std::size_t element_size = dtype_size(a.dtype());
  return std::memcmp(static_cast<const char*>(a.data()) + a_index * element_size,
                     static_cast<const char*>(b.data()) + b_index * element_size,
                     count * element_size) == 0;
}

// Every parameter's slices over all ranks tile it: each element owned once.
void expect_layout_tiles(const ShardLayout& layout) {
  const int size = communicator().size();
  std::int64_t total = 0;
  for (std::size_t p = 0; p < layout.slices.size(); ++p) {
    const ShardSlice& slice = layout.slices[p];
    EXPECT_EQ(slice.name, kParams[p].name);
    EXPECT_EQ(slice.shape, kParams[p].shape);
    std::int64_t range[2] = {slice.begin, slice.count};
    std::vector<std::int64_t> all(2 * static_cast<std::size_t>(size));
    MPI_Allgather(range, 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, runtime().comm());
    std::vector<std::pair<std::int64_t, std::int64_t>> owned;
    for (int r = 0; r < size; ++r) {
      const auto at = 2 * static_cast<std::size_t>(r);
      if (all[at + 1] > 0) owned.emplace_back(all[at], all[at + 1]);
    }
    std::sort(owned.begin(), owned.end());
    std::int64_t next = 0;
    for (const auto& [begin, count] : owned) {
      EXPECT_EQ(begin, next) << slice.name << ": a hole or an overlap at element " << next;
      next = begin + count;
    }
    EXPECT_EQ(next, checked_numel(kParams[p].shape, slice.name)) << slice.name;
    // Parameter after parameter, each non-empty slice aligned, no gap as
    // large as the alignment.
    if (slice.count > 0) {
      EXPECT_EQ(slice.local_offset % ShardLayout::kSliceAlignment, 0) << slice.name;
      EXPECT_GE(slice.local_offset, total) << slice.name;
      EXPECT_LT(slice.local_offset - total, ShardLayout::kSliceAlignment) << slice.name;
      total = slice.local_offset + slice.count;
    } else {
      EXPECT_EQ(slice.local_offset, total) << slice.name;
    }
  }
  EXPECT_EQ(layout.local_elements, total);
}

void expect_owned_averages_match(const GradSyncOptions& options,
                                 Communicator& comm = communicator()) {
  std::vector<Tensor> reference = make_tensors("");
  std::vector<Tensor> gradients = make_tensors("");
  std::vector<Tensor> parameters = make_tensors("");
  GradSync replicated(comm, reference, options);
  ShardedGradSync sharded(comm, parameters, gradients, options);
  expect_layout_tiles(sharded.layout());
  std::mt19937 random(static_cast<unsigned>(comm.rank()) * 7919U + 3U);
  for (int step = 0; step < 3; ++step) {
    fill_gradients(reference, comm.rank(), step);
    fill_gradients(gradients, comm.rank(), step);
    mark_all_ready(replicated, reference, random);
    replicated.wait();
    mark_all_ready(sharded, gradients, random);
    sharded.wait();
    for (std::size_t p = 0; p < kParams.size(); ++p) {
      const ShardSlice& slice = sharded.layout().slices[p];
      const auto begin = static_cast<std::size_t>(slice.begin);
      EXPECT_TRUE(same_bits(gradients[p], begin, reference[p], begin,
                            static_cast<std::size_t>(slice.count)))
          << slice.name << " [" << slice.begin << ", +" << slice.count << ") on rank "
          << comm.rank() << " differs from GradSync's average at step " << step;
    }
    // The parameters go round untouched.
    sharded.gather_parameters();
    sharded.wait_parameters();
  }
}

TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsWithManySmallBuckets) {
  expect_owned_averages_match(kSmallBuckets);
}

TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsWithDefaultBuckets) {
  expect_owned_averages_match({});
}

TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsWithEveryGradientInPlace) {
  expect_owned_averages_match(small_buckets_in_place_from(0));
}

TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsInPlaceAndPackedTogether) {
  expect_owned_averages_match(small_buckets_in_place_from(1.0 / 1024));
}

TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsWithBf16OnTheWire) {
  GradSyncOptions options = kSmallBuckets;
  options.wire_dtype = WireDType::kBF16;  // packs every f32 and f64 gradient, in both
  expect_owned_averages_match(options);
}

// Values whose sums round, in buckets large enough for the ring: the
// averages are still GradSync's bits, because the ring adds every element
// in the same order in an all-reduce and in a reduce-scatter.
TEST(ShardedGradSync, OwnedAveragesAreGradSyncsBitsWhenSumsRound) {
  Communicator& comm = communicator();
  const auto make = [] {
    return std::vector<Tensor>{Tensor::allocate("w1", DType::kF32, {300007}),
                               Tensor::allocate("b1", DType::kF32, {33}),
                               Tensor::allocate("w2", DType::kF32, {70001, 3})};
  };
  std::vector<Tensor> reference = make();
  std::vector<Tensor> gradients = make();
  std::vector<Tensor> parameters = make();
  std::mt19937 random(static_cast<unsigned>(comm.rank()) * 31U + 7U);
  std::uniform_real_distribution<float> uniform(-1.0F, 1.0F);
  for (std::size_t t = 0; t < gradients.size(); ++t) {
    float* values = gradients[t].data_as<float>();
    for (std::int64_t i = 0; i < gradients[t].numel(); ++i) values[i] = uniform(random) / 3.0F;
    std::memcpy(reference[t].data(), gradients[t].data(), gradients[t].nbytes());
  }
  GradSync replicated(comm, reference);
  ShardedGradSync sharded(comm, parameters, gradients);
  for (Tensor& gradient : reference) replicated.ready(gradient);
  replicated.wait();
  for (Tensor& gradient : gradients) sharded.ready(gradient);
  sharded.wait();
  for (std::size_t t = 0; t < gradients.size(); ++t) {
    const ShardSlice& slice = sharded.layout().slices[t];
    const auto begin = static_cast<std::size_t>(slice.begin);
    EXPECT_TRUE(
        same_bits(gradients[t], begin, reference[t], begin, static_cast<std::size_t>(slice.count)))
        << slice.name << " on rank " << comm.rank() << " differs from GradSync's average";
  }
}

TEST(ShardedGradSync, SmallBucketsLeaveSomeRanksEmptyShares) {
  std::vector<Tensor> gradients = make_tensors("");
  std::vector<Tensor> parameters = make_tensors("");
  ShardedGradSync sync(communicator(), parameters, gradients, kSmallBuckets);
  // head.bias (1 element) fills the first bucket alone: one rank owns it.
  EXPECT_EQ(sync.bucket_layout().front(), std::vector<std::string>{"head.bias"});
  const ShardSlice& bias = sync.layout().slice("head.bias");
  EXPECT_EQ(bias.count, communicator().rank() == 0 ? 1 : 0);
  EXPECT_EQ(sync.layout().slice("fc2.bias").count, 0);
}

// A step of plain SGD, p -= g / 4 (exact in binary for these values).
void sgd(Tensor& parameter, const Tensor& gradient, std::size_t begin, std::size_t count) {
  for (std::size_t i = begin; i < begin + count; ++i) {
    set_element(parameter, i, element(parameter, i) - element(gradient, i) / 4);
  }
}

void expect_optimizer_step_matches(const GradSyncOptions& options,
                                   Communicator& comm = communicator()) {
  std::vector<Tensor> reference_parameters = make_tensors("");
  std::vector<Tensor> reference_gradients = make_tensors("");
  std::vector<Tensor> parameters = make_tensors("");
  std::vector<Tensor> gradients = make_tensors("");
  fill_parameters(reference_parameters);
  fill_parameters(parameters);
  GradSync replicated(comm, reference_gradients, options);
  ShardedGradSync sharded(comm, parameters, gradients, options);
  std::mt19937 random(static_cast<unsigned>(comm.rank()) + 11U);
  for (int step = 0; step < 4; ++step) {
    fill_gradients(reference_gradients, comm.rank(), step);
    fill_gradients(gradients, comm.rank(), step);
    mark_all_ready(replicated, reference_gradients, random);
    replicated.wait();
    for (std::size_t p = 0; p < kParams.size(); ++p) {
      sgd(reference_parameters[p], reference_gradients[p], 0,
          static_cast<std::size_t>(reference_parameters[p].numel()));
    }
    mark_all_ready(sharded, gradients, random);
    sharded.wait();
    for (std::size_t p = 0; p < kParams.size(); ++p) {
      const ShardSlice& slice = sharded.layout().slices[p];
      sgd(parameters[p], gradients[p], static_cast<std::size_t>(slice.begin),
          static_cast<std::size_t>(slice.count));
    }
    sharded.gather_parameters();
    if (step % 2 == 0) {
      // As a forward pass would: each layer's parameters just before use.
      for (const Tensor& parameter : parameters) sharded.wait_parameter(parameter);
    }
    // Odd steps: the next step's ready() finishes each bucket's gather.
    if (step % 2 == 1 && step + 1 < 4) continue;
    sharded.wait_parameters();
    for (std::size_t p = 0; p < kParams.size(); ++p) {
      EXPECT_TRUE(same_bits(parameters[p], 0, reference_parameters[p], 0,
                            static_cast<std::size_t>(parameters[p].numel())))
          << kParams[p].name << " differs from the replicated step at step " << step;
    }
  }
  sharded.wait_parameters();
  for (std::size_t p = 0; p < kParams.size(); ++p) {
    EXPECT_TRUE(same_bits(parameters[p], 0, reference_parameters[p], 0,
                          static_cast<std::size_t>(parameters[p].numel())))
        << kParams[p].name << " differs from the replicated step at the end";
  }
}

TEST(ShardedGradSync, OptimizerOnOwnedElementsThenGatherEqualsTheReplicatedStep) {
  expect_optimizer_step_matches(kSmallBuckets);
}

TEST(ShardedGradSync, OptimizerStepMatchesWithParametersGatheredInPlace) {
  expect_optimizer_step_matches(small_buckets_in_place_from(1.0 / 1024));
}

// The path a GPU takes, on the host: padded equal blocks. (Not with
// gradients in place: GradSync on the host would average those in the
// backend, ShardedGradSync packs them here, and the two divisions by a
// world size that is not a power of two may differ in the last bit. On a
// GPU both multiply the sums by 1 / size.)
TEST(ShardedGradSync, PaddedEqualBlocksGiveGradSyncsBits) {
  EqualBlocksOnly comm(communicator());
  expect_owned_averages_match(kSmallBuckets, comm);
  expect_owned_averages_match({}, comm);
  GradSyncOptions bf16 = kSmallBuckets;
  bf16.wire_dtype = WireDType::kBF16;
  expect_owned_averages_match(bf16, comm);
  EXPECT_GT(comm.equal_block_calls(), 0) << "the padded path was not taken";
}

TEST(ShardedGradSync, PaddedEqualBlocksOptimizerStepEqualsTheReplicatedStep) {
  EqualBlocksOnly comm(communicator());
  expect_optimizer_step_matches(kSmallBuckets, comm);
  expect_optimizer_step_matches({}, comm);
  EXPECT_GT(comm.equal_block_calls(), 0) << "the padded path was not taken";
}

TEST(ShardedGradSync, ChunksViewTheOwnedState) {
  std::vector<Tensor> gradients = make_tensors("");
  std::vector<Tensor> parameters = make_tensors("");
  ShardedGradSync sync(communicator(), parameters, gradients, kSmallBuckets);
  const ShardLayout& layout = sync.layout();
  Tensor m = Tensor::allocate("m", DType::kF32, {layout.local_elements});
  const auto chunks = layout.chunks(m);
  ASSERT_EQ(chunks.size(), kParams.size());
  for (std::size_t p = 0; p < chunks.size(); ++p) {
    EXPECT_EQ(chunks[p].local.name(), kParams[p].name);
    EXPECT_EQ(chunks[p].global_shape, kParams[p].shape);
    EXPECT_EQ(chunks[p].begin, layout.slices[p].begin);
    EXPECT_EQ(chunks[p].local.numel(), layout.slices[p].count);
    EXPECT_EQ(static_cast<const char*>(chunks[p].local.data()),
              static_cast<const char*>(m.data()) + layout.slices[p].local_offset * 4);
  }
  Tensor wrong = Tensor::allocate("m", DType::kF32, {layout.local_elements + 1});
  EXPECT_THROW(layout.chunks(wrong), UsageError);
  EXPECT_THROW(layout.slice("nowhere"), UsageError);
}

TEST(ShardedGradSync, UsageErrorsNameWhatIsWrong) {
  std::vector<Tensor> gradients = make_tensors("");
  std::vector<Tensor> parameters = make_tensors("");
  const auto expect_message = [](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "no UsageError; expected one saying: " << needle;
    } catch (const UsageError& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  };
  std::vector<Tensor> fewer(parameters.begin(), parameters.end() - 1);
  expect_message([&] { ShardedGradSync sync(communicator(), fewer, gradients); },
                 "7 parameters but 8 gradients");
  std::vector<Tensor> reshaped = parameters;
  reshaped[1] = Tensor::allocate("fc1.weight", DType::kF32, {256});
  expect_message([&] { ShardedGradSync sync(communicator(), reshaped, gradients); },
                 "parameter 'fc1.weight f32[256] cpu' and its gradient");

  ShardedGradSync sync(communicator(), parameters, gradients, kSmallBuckets);
  expect_message([&] { sync.wait_parameter(Tensor::allocate("x", DType::kF32, {1})); },
                 "'x' is not a registered parameter");
  for (Tensor& gradient : gradients) sync.ready(gradient);
  sync.wait();
  sync.gather_parameters();
  expect_message([&] { sync.gather_parameters(); }, "still on their way");
  sync.wait_parameters();
}

}  // namespace
}  // namespace lockstep
