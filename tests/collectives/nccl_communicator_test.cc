// The NCCL backend on CUDA tensors. Skips where no GPU is visible.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <vector>

#include <lockstep/communicator.h>

#include "mpi_test.h"

namespace lockstep {
namespace {

using testing::runtime;

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!runtime().device().is_cuda()) GTEST_SKIP() << "no GPU is visible to this rank";
  }
  static Communicator& comm() {
    static std::unique_ptr<Communicator> comm = make_communicator(runtime());
    return *comm;
  }
};

std::vector<float> to_host(const Tensor& tensor) {
  std::vector<float> host(static_cast<std::size_t>(tensor.numel()));
  EXPECT_EQ(cudaMemcpy(host.data(), tensor.data(), tensor.nbytes(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  return host;
}

Tensor on_device(const std::vector<float>& values) {
  Tensor tensor = Tensor::allocate("t", DType::kF32, {static_cast<std::int64_t>(values.size())},
                                   runtime().device());
  EXPECT_EQ(cudaMemcpy(tensor.data(), values.data(), tensor.nbytes(), cudaMemcpyHostToDevice),
            cudaSuccess);
  return tensor;
}

TEST_F(NcclCommunicatorTest, AllreduceSumAndAvgMatchTheReference) {
  const int size = comm().size();
  for (std::size_t count : {std::size_t{1}, std::size_t{13}, std::size_t{1} << 20}) {
    std::vector<float> mine(count);
    for (std::size_t i = 0; i < count; ++i)
      mine[i] = static_cast<float>(static_cast<int>(i % 17) + 3 * comm().rank());
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      Tensor tensor = on_device(mine);
      comm().allreduce(tensor, {.op = op});
      const std::vector<float> result = to_host(tensor);
      for (std::size_t i = 0; i < count; ++i) {
        double sum = 0;
        for (int rank = 0; rank < size; ++rank)
          sum += static_cast<double>(static_cast<int>(i % 17) + 3 * rank);
        const double max = static_cast<double>(static_cast<int>(i % 17) + 3 * (size - 1));
        const double expected = op == ReduceOp::kSum   ? sum
                                : op == ReduceOp::kAvg ? sum / size
                                                       : max;
        ASSERT_NEAR(static_cast<double>(result[i]), expected, 1e-4) << "n=" << count << " i=" << i;
      }
    }
  }
}

TEST_F(NcclCommunicatorTest, AsyncAllgatherAndBarrier) {
  const auto size = static_cast<std::size_t>(comm().size());
  Tensor input = on_device({static_cast<float>(comm().rank())});
  Tensor output =
      Tensor::allocate("out", DType::kF32, {static_cast<std::int64_t>(size)}, runtime().device());
  auto gathered = comm().allgather_async(input, output);
  auto barrier = comm().barrier_async();
  barrier->wait();
  gathered->wait();
  const std::vector<float> result = to_host(output);
  for (std::size_t rank = 0; rank < size; ++rank) EXPECT_EQ(result[rank], static_cast<float>(rank));
}

TEST_F(NcclCommunicatorTest, RejectsHostTensors) {
  Tensor host = Tensor::allocate("host", DType::kF32, {4});
  EXPECT_THROW(comm().allreduce(host), UsageError);
}

}  // namespace
}  // namespace lockstep
