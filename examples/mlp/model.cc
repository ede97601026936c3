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
    : step_(Tensor::allocate("adam.step", DType::kI64, {})), device_(device) {
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
    layers_.push_back(std::move(layer));
  }
  set_owned(whole_layout());
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

lockstep::ShardLayout Model::whole_layout() {
  lockstep::ShardLayout layout;
  for (const Tensor& parameter : parameters()) {
    layout.append({.name = parameter.name(),
                   .shape = parameter.shape(),
                   .dtype = parameter.dtype(),
                   .begin = 0,
                   .count = parameter.numel()});
  }
  return layout;
}

void Model::set_owned(const lockstep::ShardLayout& owned) {
  owned_ = owned;
  sharded_ = owned.size > 1;
  m_ = Tensor::allocate("adam.m", DType::kF32, {owned.local_elements}, device_);
  v_ = Tensor::allocate("adam.v", DType::kF32, {owned.local_elements}, device_);
}

std::vector<lockstep::State::Item> Model::optimizer_state() {
  const auto group = [&](const std::string& name, const Tensor& moments) {
    if (sharded_) return lockstep::State::Item(name, owned_.chunks(moments));
    // Whole tensors: views of the moments in the parameters' shapes.
    std::vector<Tensor> whole;
    for (const lockstep::ShardSlice& slice : owned_.slices) {
      whole.push_back(moments.view(slice.name,
                                   static_cast<std::size_t>(slice.local_offset) * sizeof(float),
                                   DType::kF32, slice.shape));
    }
    return lockstep::State::Item(name, whole);
  };
  return {group("optim.m", m_), group("optim.v", v_), {"optim", std::vector<Tensor>{step_}}};
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
