// The MLP on the CPU through OpenBLAS.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "model.h"

namespace mlp {

namespace {

using lockstep::DType;
using lockstep::Tensor;

class CpuModel final : public Model {
 public:
  CpuModel(const std::vector<int>& widths, const AdamOptions& adam)
      : Model(widths, lockstep::Device::cpu()), adam_(adam) {}

  void initialize(std::uint64_t seed) override {
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Layer& layer = layers_[l];
      draw_initial_weights(seed, l, layer.in, layer.weight.data_as<float>(), layer.weight.numel());
    }
  }

  double forward_backward(const Batch& batch,
                          const std::function<void(Tensor&)>& on_gradient) override {
    forward(batch);
    // Softmax cross-entropy: the gradient of the mean loss is
    // (softmax - onehot) / batch.
    const Layer& top = layers_.back();
    std::vector<float>& logits = activations_.back();
    std::vector<float> delta(logits.size());
    double loss = 0;
    for (int i = 0; i < batch.size; ++i) {
      float* row = &logits[static_cast<std::size_t>(i * top.out)];
      const float peak = *std::max_element(row, row + top.out);
      double total = 0;
      for (int c = 0; c < top.out; ++c) total += std::exp(static_cast<double>(row[c] - peak));
      const int label = batch.labels[static_cast<std::size_t>(i)];
      loss += std::log(total) - static_cast<double>(row[label] - peak);
      for (int c = 0; c < top.out; ++c) {
        const double p = std::exp(static_cast<double>(row[c] - peak)) / total;
        delta[static_cast<std::size_t>(i * top.out + c)] =
            static_cast<float>((p - (c == label ? 1.0 : 0.0)) / batch.size);
      }
    }
    for (std::size_t l = layers_.size(); l-- > 0;) {
      Layer& layer = layers_[l];
      const std::vector<float>& input = activations_[l];
      // dW = delta^T . input, db = column sums of delta.
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, layer.out, layer.in, batch.size, 1.0f,
                  delta.data(), layer.out, input.data(), layer.in, 0.0f,
                  layer.weight_grad.data_as<float>(), layer.in);
      float* db = layer.bias_grad.data_as<float>();
      std::fill(db, db + layer.out, 0.0f);
      for (int i = 0; i < batch.size; ++i) {
        for (int o = 0; o < layer.out; ++o)
          db[o] += delta[static_cast<std::size_t>(i * layer.out + o)];
      }
      on_gradient(layer.weight_grad);
      on_gradient(layer.bias_grad);
      if (l == 0) break;
      // delta_in = (delta . W) masked by the ReLU of the layer below.
      std::vector<float> below(static_cast<std::size_t>(batch.size * layer.in));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch.size, layer.in, layer.out, 1.0f,
                  delta.data(), layer.out, layer.weight.data_as<float>(), layer.in, 0.0f,
                  below.data(), layer.in);
      for (std::size_t k = 0; k < below.size(); ++k) {
        if (input[k] <= 0.0f) below[k] = 0.0f;
      }
      delta.swap(below);
    }
    return loss / batch.size;
  }

  void optimizer_step() override {
    std::int64_t& t = step_.data_as<std::int64_t>()[0];
    ++t;
    const float correction1 = 1.0f - std::pow(adam_.beta1, static_cast<float>(t));
    const float correction2 = 1.0f - std::pow(adam_.beta2, static_cast<float>(t));
    std::vector<Tensor> params = parameters();
    std::vector<Tensor> grads = gradients();
    for (std::size_t i = 0; i < params.size(); ++i) {
      // The owned elements [begin, begin + count) of parameter i; their
      // moments start at local_offset.
      const lockstep::ShardSlice& owned = owned_.slices[i];
      float* p = params[i].data_as<float>() + owned.begin;
      const float* g = grads[i].data_as<float>() + owned.begin;
      float* mm = m_.data_as<float>() + owned.local_offset;
      float* vv = v_.data_as<float>() + owned.local_offset;
      for (std::int64_t k = 0; k < owned.count; ++k) {
        mm[k] = adam_.beta1 * mm[k] + (1 - adam_.beta1) * g[k];
        vv[k] = adam_.beta2 * vv[k] + (1 - adam_.beta2) * g[k] * g[k];
        p[k] -= adam_.learning_rate * (mm[k] / correction1) /
                (std::sqrt(vv[k] / correction2) + adam_.epsilon);
      }
    }
  }

  double accuracy(const Batch& batch) override {
    forward(batch);
    const int classes = layers_.back().out;
    int correct = 0;
    for (int i = 0; i < batch.size; ++i) {
      const float* row = &activations_.back()[static_cast<std::size_t>(i * classes)];
      const int predicted = static_cast<int>(std::max_element(row, row + classes) - row);
      if (predicted == batch.labels[static_cast<std::size_t>(i)]) ++correct;
    }
    return static_cast<double>(correct) / batch.size;
  }

 private:
  // activations_[l] is the input of layer l; the last entry holds logits.
  void forward(const Batch& batch) {
    activations_.resize(layers_.size() + 1);
    activations_[0] = batch.inputs;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      std::vector<float>& out = activations_[l + 1];
      out.resize(static_cast<std::size_t>(batch.size * layer.out));
      const float* b = layer.bias.data_as<float>();
      for (int i = 0; i < batch.size; ++i) {
        std::copy(b, b + layer.out, &out[static_cast<std::size_t>(i * layer.out)]);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch.size, layer.out, layer.in, 1.0f,
                  activations_[l].data(), layer.in, layer.weight.data_as<float>(), layer.in, 1.0f,
                  out.data(), layer.out);
      if (l + 1 < layers_.size()) {
        for (float& value : out) value = std::max(value, 0.0f);
      }
    }
  }

  AdamOptions adam_;
  std::vector<std::vector<float>> activations_;
};

}  // namespace

std::unique_ptr<Model> make_cpu_model(const std::vector<int>& widths, const AdamOptions& adam) {
  return std::make_unique<CpuModel>(widths, adam);
}

}  // namespace mlp
