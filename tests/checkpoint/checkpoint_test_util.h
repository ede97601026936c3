// Helpers shared by the multi-rank checkpoint tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lockstep/checkpointer.h>

#include "mpi_test.h"

namespace lockstep::testing {

// A fresh, empty directory for one test, the same on every rank of `comm`.
inline std::filesystem::path fresh_dir(const std::string& name, MPI_Comm comm) {
  int rank = 0;
  int ranks = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const auto dir = runtime().run_dir() / fmt::format("checkpoint-np{}", ranks) / name;
  if (rank == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(comm);
  return dir;
}

// Deterministic bytes (splitmix64) that differ for every seed and tensor.
inline void fill(Tensor& tensor, std::uint64_t seed) {
  auto* bytes = static_cast<unsigned char*>(tensor.data());
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ULL + std::hash<std::string>{}(tensor.name());
  for (std::size_t i = 0; i < tensor.nbytes(); ++i) {
    state += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    bytes[i] = static_cast<unsigned char>(z >> 56);
  }
}

inline bool holds_seed(const Tensor& tensor, std::uint64_t seed) {
  Tensor expected = Tensor::allocate(tensor.name(), tensor.dtype(), tensor.shape());
  fill(expected, seed);
  return std::memcmp(expected.data(), tensor.data(), tensor.nbytes()) == 0;
}

// Training state of tensors of the given shapes and dtypes, plus key/values.
struct TestModel {
  std::vector<Tensor> model;
  std::vector<Tensor> optim;
  KeyValues data = KeyValues::object();

  State state() { return State{{"model", model}, {"optim", optim}, {"data", data}}; }

  void fill_all(std::uint64_t seed) {
    for (auto& tensor : model) fill(tensor, seed);
    for (auto& tensor : optim) fill(tensor, seed + 1000);
    data = {{"position", seed * 3}, {"rng", fmt::format("state-{}", seed)}};
  }

  // Names the first tensor that does not hold `seed`'s values; empty when all do.
  std::string mismatch(std::uint64_t seed) const {
    for (const auto& tensor : model) {
      if (!holds_seed(tensor, seed)) return "model/" + tensor.name();
    }
    for (const auto& tensor : optim) {
      if (!holds_seed(tensor, seed + 1000)) return "optim/" + tensor.name();
    }
    if (data != KeyValues{{"position", seed * 3}, {"rng", fmt::format("state-{}", seed)}}) {
      return "data: " + data.dump();
    }
    return {};
  }
};

// One tensor of each dtype for each of several awkward shapes.
inline TestModel every_dtype_model() {
  TestModel state;
  const std::vector<Shape> shapes = {{},        {0},        {7},       {3, 5},
                                     {2, 3, 5}, {1, 1, 13}, {4, 0, 3}, {101, 37}};
  for (const auto dtype : all_dtypes()) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      state.model.push_back(
          Tensor::allocate(fmt::format("{}_{}", dtype_name(dtype), i), dtype, shapes[i]));
    }
  }
  state.optim.push_back(Tensor::allocate("step_count", DType::kI64, {}));
  state.optim.push_back(Tensor::allocate("moments/exp_avg", DType::kF32, {33, 3}));
  return state;
}

// A model whose rank files hold mostly tensor data (for corruption tests).
inline TestModel large_model() {
  TestModel state;
  state.model.push_back(Tensor::allocate("weight", DType::kF32, {1 << 18}));
  state.model.push_back(Tensor::allocate("bias", DType::kF32, {17}));
  state.optim.push_back(Tensor::allocate("exp_avg", DType::kBF16, {1 << 17}));
  return state;
}

inline std::vector<std::int64_t> steps(std::initializer_list<std::int64_t> values) {
  return values;
}

// The names in `dir`, sorted.
inline std::vector<std::string> directory_entries(const std::filesystem::path& dir) {
  std::vector<std::string> entries;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    entries.push_back(entry.path().filename().string());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

}  // namespace lockstep::testing
