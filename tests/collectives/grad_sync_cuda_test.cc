// GradSync on gradients in CUDA memory against GradSync on the same
// gradients in host memory: the same buckets, the same averaged bits, the
// same errors. Skips where no GPU is visible.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

struct ParamSpec {
  std::string name;
  DType dtype;
  std::int64_t count;
};

// Every floating dtype, an empty tensor, and sizes that make buckets of a
// few KiB split some neighbours and hold others alone.
const std::vector<ParamSpec> kParams = {
    {"embed.weight", DType::kF32, 3001}, {"fc1.weight", DType::kF32, 257},
    {"fc1.bias", DType::kF32, 1},        {"norm.scale", DType::kBF16, 129},
    {"norm.shift", DType::kF16, 67},     {"fc2.weight", DType::kF64, 511},
    {"fc2.bias", DType::kF64, 0},        {"head.weight", DType::kF32, 1021},
    {"head.bias", DType::kF32, 7},
};

// Magnitudes in [0.25, 1) with either sign and no short binary expansion:
// the casts to 16 bits round, yet the sum of two ranks' values is exact in
// float, so NCCL and MPI may add them in any order.
std::vector<Tensor> host_gradients(int rank, int step) {
  std::vector<Tensor> gradients;
  for (std::size_t p = 0; p < kParams.size(); ++p) {
    Tensor g = Tensor::allocate(kParams[p].name, kParams[p].dtype, {kParams[p].count});
    std::mt19937_64 random(static_cast<std::uint64_t>(rank) * 1000003U +
                           static_cast<std::uint64_t>(step) * 101U + p);
    std::uniform_real_distribution<double> magnitude(0.25, 1.0);
    for (std::size_t i = 0; i < static_cast<std::size_t>(g.numel()); ++i) {
      const double value = magnitude(random);
      set_element(g, i, (random() & 1U) != 0 ? value : -value);
    }
    gradients.push_back(g);
  }
  return gradients;
}

void copy(Tensor& destination, const Tensor& source, cudaMemcpyKind kind) {
  ASSERT_EQ(cudaMemcpy(destination.data(), source.data(), source.nbytes(), kind), cudaSuccess);
}

std::vector<Tensor> device_copies(const std::vector<Tensor>& host) {
  std::vector<Tensor> device;
  for (const Tensor& h : host) {
    Tensor d = Tensor::allocate(h.name(), h.dtype(), h.shape(), runtime().device());
    copy(d, h, cudaMemcpyHostToDevice);
    device.push_back(d);
  }
  return device;
}

void refill(std::vector<Tensor>& device, const std::vector<Tensor>& host) {
  for (std::size_t p = 0; p < device.size(); ++p) copy(device[p], host[p], cudaMemcpyHostToDevice);
}

Tensor host_copy(const Tensor& device) {
  Tensor h = Tensor::allocate(device.name(), device.dtype(), device.shape());
  copy(h, device, cudaMemcpyDeviceToHost);
  return h;
}

class GradSyncCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runtime().device().is_cuda()) GTEST_SKIP() << "no GPU is visible to this rank";
  }
  static Communicator& gpu() {
    static std::unique_ptr<Communicator> comm = make_communicator(runtime());
    return *comm;
  }
  static Communicator& host() {
    static std::unique_ptr<Communicator> comm =
        make_communicator(runtime().comm(), Device::cpu(), communicator_options(runtime()));
    return *comm;
  }
};

// Three steps of GradSync on host and on GPU copies of the same gradients,
// each rank marking them ready in its own order.
void expect_host_bits(const GradSyncOptions& options, Communicator& host, Communicator& gpu) {
  const int rank = host.rank();
  std::vector<Tensor> on_host = host_gradients(rank, 0);
  std::vector<Tensor> on_gpu = device_copies(on_host);
  GradSync host_sync(host, on_host, options);
  GradSync gpu_sync(gpu, on_gpu, options);
  EXPECT_EQ(gpu_sync.bucket_layout(), host_sync.bucket_layout());
  std::mt19937 shuffle(static_cast<unsigned>(rank) * 7919U + 1U);
  for (int step = 0; step < 3; ++step) {
    const std::vector<Tensor> fresh = host_gradients(rank, step);
    for (std::size_t p = 0; p < on_host.size(); ++p) {
      std::memcpy(on_host[p].data(), fresh[p].data(), fresh[p].nbytes());
    }
    refill(on_gpu, fresh);
    std::vector<std::size_t> order(on_host.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), shuffle);
    for (std::size_t index : order) {
      host_sync.ready(on_host[index]);
      gpu_sync.ready(on_gpu[index]);
    }
    host_sync.wait();
    gpu_sync.wait();
    for (std::size_t p = 0; p < on_host.size(); ++p) {
      const Tensor averaged = host_copy(on_gpu[p]);
      const Tensor& expected = on_host[p];
      // Up to two ranks both paths add exactly; beyond, NCCL and MPI may add
      // in another order and round differently.
      if (host.size() <= 2) {
        ASSERT_EQ(std::memcmp(averaged.data(), expected.data(), expected.nbytes()), 0)
            << expected.name() << " differs from the host path's average at step " << step;
        continue;
      }
      for (std::size_t i = 0; i < static_cast<std::size_t>(expected.numel()); ++i) {
        const double want = element(expected, i);
        ASSERT_NEAR(element(averaged, i), want,
                    2 * precision(expected.dtype()) * std::max(1.0, std::abs(want)))
            << expected.name() << "[" << i << "] at step " << step;
      }
    }
  }
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathWithManyBuckets) {
  expect_host_bits({.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024}, host(), gpu());
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathWithDefaultBuckets) {
  expect_host_bits({}, host(), gpu());
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathInPlace) {
  expect_host_bits({.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .in_place_min_mb = 0},
                   host(), gpu());
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathInPlaceAndPacked) {
  expect_host_bits(
      {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .in_place_min_mb = 1.0 / 1024},
      host(), gpu());
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathWithBf16OnTheWire) {
  expect_host_bits(
      {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024, .wire_dtype = WireDType::kBF16},
      host(), gpu());
}

TEST_F(GradSyncCudaTest, AveragesLikeTheHostPathWithF16OnTheWire) {
  expect_host_bits({.bucket_mb = 4.0 / 1024, .wire_dtype = WireDType::kF16}, host(), gpu());
}

// The bf16 wire on its own terms: f32 gradients come back as the average of
// their bf16 roundings, within bf16's precision of the exact average.
TEST_F(GradSyncCudaTest, Bf16WireRoundTripKeepsBf16Precision) {
  const int size = gpu().size();
  std::vector<std::vector<Tensor>> every_rank;
  for (int rank = 0; rank < size; ++rank) every_rank.push_back(host_gradients(rank, 7));
  std::vector<Tensor> on_gpu = device_copies(every_rank[static_cast<std::size_t>(gpu().rank())]);
  GradSync sync(gpu(), on_gpu, {.wire_dtype = WireDType::kBF16});
  for (Tensor& g : on_gpu) sync.ready(g);
  sync.wait();
  for (std::size_t p = 0; p < on_gpu.size(); ++p) {
    if (on_gpu[p].dtype() != DType::kF32) continue;
    const Tensor averaged = host_copy(on_gpu[p]);
    for (std::size_t i = 0; i < static_cast<std::size_t>(averaged.numel()); ++i) {
      double sum = 0;
      for (const auto& gradients : every_rank) sum += element(gradients[p], i);
      const double exact = sum / size;
      // Inputs below 1 in magnitude, each rounded once, partial sums of
      // more than two ranks rounded again on the wire.
      ASSERT_NEAR(element(averaged, i), exact, precision(DType::kBF16) * size)
          << on_gpu[p].name() << "[" << i << "]";
    }
  }
}

TEST_F(GradSyncCudaTest, ReadyTwiceOrNeverIsAUsageErrorNamingTheGradient) {
  std::vector<Tensor> gradients = device_copies(host_gradients(gpu().rank(), 0));
  GradSync sync(gpu(), gradients, {.bucket_mb = 4.0 / 1024, .first_bucket_mb = 1.0 / 1024});
  testing::expect_ready_twice_and_never_ready_errors(sync, gradients);
}

TEST_F(GradSyncCudaTest, RejectsGpuGradientsWithTheHostBackend) {
  std::vector<Tensor> gradients = device_copies(host_gradients(gpu().rank(), 0));
  try {
    GradSync sync(host(), gradients);
    ADD_FAILURE() << "GradSync over the mpi backend accepted GPU gradients";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'embed.weight' is in cuda:"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace lockstep
