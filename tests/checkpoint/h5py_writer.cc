// Writes a checkpoint of every dtype and some awkward shapes, whole
// ("model") and sharded across the ranks ("optim"), plus the raw bytes of
// every tensor in expected/, for check_h5py.py to compare.
// Usage: checkpoint_h5py_writer <output dir>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include <lockstep/checkpointer.h>
#include <lockstep/lockstep.h>

namespace {

// Finite values only, so that the check can compare numbers as well as bits.
void fill(lockstep::Tensor& tensor, std::uint32_t seed) {
  const std::size_t element = lockstep::dtype_size(tensor.dtype());
  auto* bytes = static_cast<unsigned char*>(tensor.data());
  std::uint32_t state = seed;
  for (std::size_t i = 0; i < tensor.nbytes(); ++i) {
    state = state * 1664525U + 1013904223U;
    bytes[i] = static_cast<unsigned char>(state >> 24);
    // Clearing the top exponent bit keeps every float finite.
    const bool top_byte = i % element == element - 1;
    if (top_byte &&
        (tensor.dtype() == lockstep::DType::kF32 || tensor.dtype() == lockstep::DType::kF64 ||
         tensor.dtype() == lockstep::DType::kF16)) {
      bytes[i] &= 0xBF;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Runtime runtime(argc, argv);
  if (argc != 2) {
    std::cerr << "usage: checkpoint_h5py_writer <output dir>\n";
    return 2;
  }
  const std::filesystem::path out = argv[1];
  const std::vector<lockstep::Shape> shapes = {{}, {0}, {5}, {3, 7}, {2, 3, 4}, {129, 33}};
  std::vector<lockstep::Tensor> tensors;
  std::uint32_t seed = 1;
  for (const auto dtype : lockstep::all_dtypes()) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      auto tensor = lockstep::Tensor::allocate(
          fmt::format("{}/shape{}", lockstep::dtype_name(dtype), i), dtype, shapes[i]);
      fill(tensor, seed++);
      tensors.push_back(tensor);
    }
  }
  // The same tensors again, but sharded (scalars cannot be): each rank
  // saves its chunk of each, cut from the tensors back to back in shares of
  // ceil(elements / ranks), so that chunks are uneven and some empty.
  std::int64_t total = 0;
  for (const auto& tensor : tensors) total += tensor.shape().empty() ? 0 : tensor.numel();
  const std::int64_t share = (total + runtime.world_size() - 1) / runtime.world_size();
  const std::int64_t low = std::min(total, runtime.rank() * share);
  const std::int64_t high = std::min(total, low + share);
  std::vector<lockstep::ShardChunk> chunks;
  std::vector<lockstep::Tensor> sharded;  // the whole tensors the chunks come from
  std::int64_t offset = 0;
  for (const auto& tensor : tensors) {
    if (tensor.shape().empty()) continue;
    const std::int64_t first = std::clamp(low, offset, offset + tensor.numel());
    const std::int64_t last = std::clamp(high, offset, offset + tensor.numel());
    const std::size_t element = lockstep::dtype_size(tensor.dtype());
    chunks.push_back(
        {.local = tensor.view(tensor.name(), static_cast<std::size_t>(first - offset) * element,
                              tensor.dtype(), {last - first}),
         .global_shape = tensor.shape(),
         .begin = first - offset});
    sharded.push_back(tensor);
    offset += tensor.numel();
  }
  lockstep::KeyValues position = {{"epoch", 2}, {"sample", 12345}};
  lockstep::Checkpointer checkpointer(runtime, {.dir = out / "ckpt", .async = false});
  checkpointer.save(5, lockstep::State{{"model", tensors}, {"optim", chunks}, {"data", position}});

  if (runtime.rank() == 0) {
    std::filesystem::create_directories(out / "expected");
    nlohmann::json manifest = nlohmann::json::object();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const auto file = fmt::format("{}.bin", i);
      std::ofstream(out / "expected" / file, std::ios::binary)
          .write(static_cast<const char*>(tensors[i].data()),
                 static_cast<std::streamsize>(tensors[i].nbytes()));
      manifest["model/" + tensors[i].name()] = {{"dtype", lockstep::dtype_name(tensors[i].dtype())},
                                                {"shape", tensors[i].shape()},
                                                {"file", file}};
      const bool was_sharded = !tensors[i].shape().empty();
      if (was_sharded) {
        manifest["optim/" + tensors[i].name()] = manifest["model/" + tensors[i].name()];
      }
    }
    std::ofstream(out / "expected" / "manifest.json") << manifest.dump(1);
    std::cout << "wrote step 5 with " << runtime.world_size() << " ranks\n";
  }
  return 0;
}
