// GradSync: averaged gradients, whatever order each rank marks them ready in.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/grad_sync.h>

#include "grad_sync_checks.h"
#include "mpi_test.h"
#include "tensor_values.h"

namespace lockstep {
namespace {

using testing::element;
using testing::precision;
using testing::runtime;
using testing::set_element;

Communicator& communicator() { return testing::host_communicator(); }

struct ParamSpec {
  std::string name;
  DType dtype;
  std::int64_t count;
};

// Sizes chosen so that buckets of a few KiB split some tensors' neighbours
// and hold others alone.
const std::vector<ParamSpec> kParams = {
    {"embed.weight", DType::kF32, 3001}, {"fc1.weight", DType::kF32, 257},
    {"fc1.bias", DType::kF32, 1},        {"norm.scale", DType::kBF16, 129},
    {"fc2.weight", DType::kF64, 511},    {"fc2.bias", DType::kF64, 0},
    {"head.weight", DType::kF32, 1021},  {"head.bias", DType::kF32, 7},
};

double gradient_value(int rank, std::size_t param, std::size_t index, int step) {
  return testing::input_value(rank + 3 * step, index * 31 + param, DType::kF32);
}

std::vector<Tensor> make_gradients(int rank, int step) {
  std::vector<Tensor> gradients;
  for (std::size_t p = 0; p < kParams.size(); ++p) {
    Tensor g = Tensor::allocate(kParams[p].name, kParams[p].dtype, {kParams[p].count});
    for (std::size_t i = 0; i < static_cast<std::size_t>(kParams[p].count); ++i) {
      set_element(g, i, gradient_value(rank, p, i, step));
    }
    gradients.push_back(g);
  }
  return gradients;
}

void refill(std::vector<Tensor>& gradients, int rank, int step) {
  for (std::size_t p = 0; p < gradients.size(); ++p) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(gradients[p].numel()); ++i) {
      set_element(gradients[p], i, gradient_value(rank, p, i, step));
    }
  }
}

std::uint64_t fingerprint(const std::vector<Tensor>& gradients) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (const Tensor& g : gradients) {
    const auto* bytes = static_cast<const unsigned char*>(g.data());
    for (std::size_t i = 0; i < g.nbytes(); ++i) hash = (hash ^ bytes[i]) * 1099511628211ULL;
  }
  return hash;
}

void expect_averaged(const std::vector<Tensor>& gradients, int size, int step, double tolerance) {
  for (std::size_t p = 0; p < gradients.size(); ++p) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(gradients[p].numel()); ++i) {
      double sum = 0;
      for (int rank = 0; rank < size; ++rank) sum += gradient_value(rank, p, i, step);
      const double expected = sum / size;
      const double allowed =
          std::max(tolerance, precision(gradients[p].dtype())) * std::max(1.0, std::abs(expected));
      if (std::abs(element(gradients[p], i) - expected) > allowed) {
        ADD_FAILURE() << gradients[p].name() << "[" << i << "] = " << element(gradients[p], i)
                      << ", expected " << expected << " (step " << step << ")";
        return;
      }
    }
  }
}

void expect_same_on_every_rank(std::uint64_t mine) {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(runtime().world_size()));
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, runtime().comm());
  for (std::size_t rank = 0; rank < all.size(); ++rank) {
    EXPECT_EQ(all[rank], all[0]) << "rank " << rank << " ended with different gradients";
  }
}

void run_steps(const GradSyncOptions& options, double tolerance) {
  Communicator& comm = communicator();
  std::vector<Tensor> gradients = make_gradients(comm.rank(), 0);
  GradSync sync(comm, gradients, options);
  std::mt19937 shuffle(static_cast<unsigned>(comm.rank()) * 7919U + 1U);
  for (int step = 0; step < 3; ++step) {
    refill(gradients, comm.rank(), step);
    // Every rank marks its gradients ready in a different order.
    std::vector<std::size_t> order(gradients.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), shuffle);
    for (std::size_t index : order) sync.ready(gradients[index]);
    sync.wait();
    expect_averaged(gradients, comm.size(), step, tolerance);
    expect_same_on_every_rank(fingerprint(gradients));
  }
}

TEST(GradSync, AveragesInAnyReadyOrderWithManyBuckets) {
  run_steps({.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024}, 1e-6);
}

TEST(GradSync, AveragesWithDefaultBuckets) { run_steps({}, 1e-6); }

TEST(GradSync, AveragesEveryGradientInPlace) {
  run_steps({.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .in_place_min_mb = 0}, 1e-6);
}

TEST(GradSync, AveragesInPlaceAndPackedTogether) {
  run_steps({.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .in_place_min_mb = 1.0 / 1024},
            1e-6);
}

TEST(GradSync, AveragesWithBf16OnTheWire) {
  run_steps(
      {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .wire_dtype = WireDType::kBF16},
      1.0 / 128);
}

TEST(GradSync, AveragesWithF16OnTheWire) {
  run_steps({.bucket_mb = 4.0 / 1024, .wire_dtype = WireDType::kF16}, 1.0 / 1024);
}

TEST(GradSync, BucketsFollowReverseRegistrationOrder) {
  std::vector<Tensor> gradients = make_gradients(communicator().rank(), 0);
  GradSync sync(communicator(), gradients,
                {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024});
  const auto layout = sync.bucket_layout();
  std::vector<std::string> flat;
  for (const auto& bucket : layout) {
    ASSERT_FALSE(bucket.empty());
    flat.insert(flat.end(), bucket.begin(), bucket.end());
  }
  ASSERT_EQ(flat.size(), kParams.size());
  for (std::size_t i = 0; i < kParams.size(); ++i) {
    EXPECT_EQ(flat[i], kParams[kParams.size() - 1 - i].name);
  }
  // The first bucket (1 KiB) holds head.bias and head.weight would overflow it.
  EXPECT_EQ(layout[0], std::vector<std::string>{"head.bias"});
  EXPECT_GT(layout.size(), 4U);
  for (auto& g : gradients) sync.ready(g);
  sync.wait();
}

TEST(GradSync, ReadyTwiceOrNeverIsAUsageErrorNamingTheGradient) {
  std::vector<Tensor> gradients = make_gradients(communicator().rank(), 0);
  GradSync sync(communicator(), gradients,
                {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024});
  testing::expect_ready_twice_and_never_ready_errors(sync, gradients);
  Tensor stranger = Tensor::allocate("stranger", DType::kF32, {1});
  EXPECT_THROW(sync.ready(stranger), UsageError);
}

// Only the devices are looked at: the GPU "memory" below is never touched,
// so these run on machines without a GPU, and in builds without CUDA.
TEST(GradSync, RejectsGradientsOnTwoDevicesNamingOne) {
  float never_read = 0;
  Tensor a = Tensor::allocate("a", DType::kF32, {2});
  Tensor b = Tensor::borrow("b", &never_read, DType::kF32, {1}, Device::cuda(0));
  try {
    GradSync sync(communicator(), {a, b});
    ADD_FAILURE() << "GradSync accepted gradients on two devices";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'b' is in cuda:0 memory but 'a' is in cpu memory"),
              std::string::npos)
        << error.what();
  }
}

TEST(GradSync, RejectsGpuGradientsForTheMpiBackendNamingOne) {
  float never_read = 0;
  Tensor g = Tensor::borrow("g", &never_read, DType::kF32, {1}, Device::cuda(0));
  try {
    GradSync sync(communicator(), {g});
    ADD_FAILURE() << "GradSync over the mpi backend accepted a GPU gradient";
  } catch (const UsageError& error) {
    // Either the backend is the wrong one or the build has no CUDA.
    EXPECT_NE(std::string(error.what()).find("'g' is in cuda:0 memory"), std::string::npos)
        << error.what();
  }
}

TEST(GradSync, RejectsDuplicateNames) {
  Tensor a = Tensor::allocate("same", DType::kF32, {2});
  Tensor b = Tensor::allocate("same", DType::kF32, {2});
  EXPECT_THROW(GradSync(communicator(), {a, b}), UsageError);
}

}  // namespace
}  // namespace lockstep
