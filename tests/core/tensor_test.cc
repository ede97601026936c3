#include <cstdint>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "lockstep/build_config.h"
#include "lockstep/cuda_check.h"
#include "lockstep/tensor.h"

namespace lockstep {
namespace {

TEST(DType, SizesAndNamesRoundTrip) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF64), 8u);
  EXPECT_EQ(dtype_size(DType::kI32), 4u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_EQ(dtype_size(DType::kU8), 1u);
  EXPECT_EQ(all_dtypes().size(), 7u);
  for (const DType dtype : all_dtypes()) EXPECT_EQ(parse_dtype(dtype_name(dtype)), dtype);
}

TEST(DType, UnknownNameListsAccepted) {
  try {
    parse_dtype("float32");
    FAIL() << "accepted an unknown dtype";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'float32'"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("bf16"), std::string::npos);
  }
}

TEST(Tensor, AllocateGivesZeroedAlignedMemoryOfTheRightSize) {
  Tensor t = Tensor::allocate("model/w", DType::kF32, {3, 5});
  EXPECT_EQ(t.name(), "model/w");
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_TRUE(t.owns_storage());
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % 64, 0u);
  const float* values = t.data_as<float>();
  for (int i = 0; i < 15; ++i) EXPECT_EQ(values[i], 0.0f);
  EXPECT_EQ(t.describe(), "model/w f32[3, 5] cpu");
}

TEST(Tensor, EveryDTypeAllocates) {
  for (const DType dtype : all_dtypes()) {
    Tensor t = Tensor::allocate("x", dtype, {7});
    EXPECT_EQ(t.nbytes(), 7 * dtype_size(dtype));
    std::memset(t.data(), 0xAB, t.nbytes());  // ASan catches a short allocation
  }
}

TEST(Tensor, ScalarAndEmptyShapes) {
  Tensor scalar = Tensor::allocate("scalar", DType::kF64, {});
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.nbytes(), 8u);
  Tensor empty = Tensor::allocate("empty", DType::kF32, {4, 0, 3});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.nbytes(), 0u);
  EXPECT_NE(empty.data(), nullptr);
}

TEST(Tensor, CopiesShareStorage) {
  Tensor a = Tensor::allocate("a", DType::kI32, {4});
  Tensor b = a;
  b.data_as<std::int32_t>()[2] = 42;
  EXPECT_EQ(a.data_as<std::int32_t>()[2], 42);
  EXPECT_EQ(a.data(), b.data());
}

TEST(Tensor, BorrowDoesNotOwn) {
  double storage[6] = {1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::borrow("optim/m", storage, DType::kF64, {2, 3});
  EXPECT_FALSE(t.owns_storage());
  EXPECT_EQ(t.data(), storage);
  EXPECT_EQ(t.data_as<double>()[5], 6.0);
  EXPECT_THROW(Tensor::borrow("null", nullptr, DType::kF32, {2}), UsageError);
  EXPECT_NO_THROW(Tensor::borrow("null-empty", nullptr, DType::kF32, {0}));
}

TEST(Tensor, WrongTypedAccessIsAnError) {
  Tensor t = Tensor::allocate("model/b", DType::kF32, {2});
  try {
    t.data_as<double>();
    FAIL() << "f32 tensor read as f64";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'model/b' holds f32 but was accessed as f64"),
              std::string::npos)
        << error.what();
  }
}

TEST(Tensor, BadShapesNameTheTensor) {
  try {
    Tensor::allocate("model/bad", DType::kF32, {2, -3});
    FAIL() << "negative dimension accepted";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("model/bad"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("[2, -3]"), std::string::npos);
  }
  EXPECT_THROW(Tensor::allocate("huge", DType::kU8, {1LL << 40, 1LL << 40}), UsageError);
}

TEST(Tensor, DeviceNames) {
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::cuda(3).str(), "cuda:3");
  EXPECT_THROW(Device::cuda(-1), UsageError);
  EXPECT_NE(Device::cpu(), Device::cuda(0));
}

TEST(Tensor, CudaTensorWithoutUsableGpuFailsClearly) {
#if LOCKSTEP_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
    Tensor t = Tensor::allocate("gpu", DType::kF32, {16}, Device::cuda(0));
    EXPECT_TRUE(t.device().is_cuda());
    EXPECT_THROW(t.data_as<float>(), UsageError) << "host access to device memory";
    return;
  }
  cudaGetLastError();
  EXPECT_THROW(Tensor::allocate("gpu", DType::kF32, {16}, Device::cuda(0)), BackendError);
#else
  EXPECT_THROW(Tensor::allocate("gpu", DType::kF32, {16}, Device::cuda(0)), UsageError);
#endif
}

}  // namespace
}  // namespace lockstep
