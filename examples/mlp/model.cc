// What the CPU and GPU models share: their tensors, and the initial weights.
#include <cmath>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <lockstep/error.h>
#include <lockstep/knobs.h>

#include "dataset.h"
#include "model.h"

namespace mlp {

using lockstep::DType;
using lockstep::Tensor;

Model::Model(const std::vector<int>& widths, lockstep::Device device)
    : step_(Tensor::allocate("adam.step", DType::kI64, {})) {
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    Layer layer;
    layer.in = widths[l];
    layer.out = widths[l + 1];
    const std::string name = "fc" + std::to_string(l);
    const lockstep::Shape w_shape = {layer.out, layer.in};
    const lockstep::Shape b_shape = {layer.out};
    layer.weight = Tensor::allocate(name + ".weight", DType::kF32, w_shape, device);
    layer.bias = Tensor::allocate(name + ".bias", DType::kF32, b_shape, device);
    layer.weight_grad = Tensor::allocate(name + ".weight", DType::kF32, w_shape, device);
    layer.bias_grad = Tensor::allocate(name + ".bias", DType::kF32, b_shape, device);
    layer.weight_m = Tensor::allocate(name + ".weight.m", DType::kF32, w_shape, device);
    layer.weight_v = Tensor::allocate(name + ".weight.v", DType::kF32, w_shape, device);
    layer.bias_m = Tensor::allocate(name + ".bias.m", DType::kF32, b_shape, device);
    layer.bias_v = Tensor::allocate(name + ".bias.v", DType::kF32, b_shape, device);
    layers_.push_back(std::move(layer));
  }
}

std::vector<Tensor> Model::parameters() {
  std::vector<Tensor> all;
  for (Layer& layer : layers_) all.insert(all.end(), {layer.weight, layer.bias});
  return all;
}

std::vector<Tensor> Model::gradients() {
  std::vector<Tensor> all;
  for (Layer& layer : layers_) all.insert(all.end(), {layer.weight_grad, layer.bias_grad});
  return all;
}

std::vector<Tensor> Model::optimizer_state() {
  std::vector<Tensor> all = {step_};
  for (Layer& layer : layers_) {
    all.insert(all.end(), {layer.weight_m, layer.weight_v, layer.bias_m, layer.bias_v});
  }
  return all;
}

std::int64_t Model::parameter_count() {
  std::int64_t total = 0;
  for (const Tensor& tensor : parameters()) total += tensor.numel();
  return total;
}

void draw_initial_weights(std::uint64_t seed, std::size_t layer, int in, float* weights,
                          std::int64_t count) {
  const float scale = std::sqrt(2.0f / static_cast<float>(in));
  for (std::int64_t i = 0; i < count; ++i) {
    weights[i] = scale * normal(seed, 100 + layer, static_cast<std::uint64_t>(i));
  }
}

std::vector<int> layer_widths(int input_dim, const std::string& hidden, int classes) {
  std::vector<int> widths = {input_dim};
  std::stringstream list(hidden);
  std::string item;
  while (std::getline(list, item, ',')) {
    const int width = std::stoi(item);
    if (width <= 0) throw lockstep::UsageError("--hidden widths must be positive, got " + item);
    widths.push_back(width);
  }
  widths.push_back(classes);
  return widths;
}

lockstep::Device model_device(const std::string& device,
                              [[maybe_unused]] const lockstep::Runtime& rt) {
  if (device == "cpu") return lockstep::Device::cpu();
#if LOCKSTEP_EXAMPLE_CUDA
  if (rt.device().is_cuda()) return rt.device();
  if (rt.config().get(lockstep::knobs::device) == "cpu") {
    throw lockstep::UsageError(
        "--device cuda, but LOCKSTEP_DEVICE=cpu (or --lockstep-device cpu) keeps this rank off "
        "the GPUs; unset it or set LOCKSTEP_DEVICE=cuda, or train with --device cpu");
  }
  throw lockstep::UsageError(fmt::format(
      "--device cuda, but no GPU is visible to rank {} on {}; run on a node with GPUs (check "
      "nvidia-smi and CUDA_VISIBLE_DEVICES) or train with --device cpu",
      rt.rank(), rt.hostname()));
#else
  throw lockstep::UsageError(
      "--device cuda, but this lockstep-mlp was built without CUDA (no CUDA toolkit with cuBLAS "
      "and NCCL was found, or -DLOCKSTEP_CUDA=OFF); rebuild with the toolkit in /usr/local/cuda "
      "or train with --device cpu");
#endif
}

std::unique_ptr<Model> make_model([[maybe_unused]] lockstep::Device device,
                                  const std::vector<int>& widths, const AdamOptions& adam) {
#if LOCKSTEP_EXAMPLE_CUDA
  if (device.is_cuda()) return make_cuda_model(widths, adam, device.index);
#endif
  return make_cpu_model(widths, adam);
}

Batch make_batch(const TeacherDataset& data, int size,
                 const std::function<std::uint64_t(int)>& index_of) {
  Batch batch;
  batch.size = size;
  batch.inputs.resize(static_cast<std::size_t>(size * data.input_dim()));
  batch.labels.resize(static_cast<std::size_t>(size));
  for (int j = 0; j < size; ++j) {
    batch.labels[static_cast<std::size_t>(j)] =
        data.sample(index_of(j), &batch.inputs[static_cast<std::size_t>(j * data.input_dim())]);
  }
  return batch;
}

}  // namespace mlp
