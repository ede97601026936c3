// What the CPU and GPU models share: their tensors, and the initial weights.
#include <cmath>
#include <string>

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

}  // namespace mlp
