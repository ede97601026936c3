// The MLP on a GPU: cuBLAS for the matrix products, the kernels of
// cuda_kernels.cu for the rest, all on the legacy default stream, so that
// GradSync (whose copies and the NCCL backend's stream wait for that stream)
// sees every gradient that backward queued before ready().
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <lockstep/cuda_check.h>
#include <lockstep/log.h>

#include "cuda_kernels.h"
#include "model.h"

namespace mlp {

namespace {

using lockstep::Device;
using lockstep::DType;
using lockstep::Tensor;

void check_cublas(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw lockstep::BackendError(
        "cuBLAS", static_cast<int>(status),
        fmt::format("{} failed: {} ({})", call, cublasGetStatusName(status),
                    cublasGetStatusString(status)));
  }
}

#define MLP_CHECK_CUBLAS(call) check_cublas((call), #call)

// Owns a cublasHandle_t bound to the current device.
class CublasHandle {
 public:
  CublasHandle() {
    MLP_CHECK_CUBLAS(cublasCreate(&handle_));
    // Plain float arithmetic, no TF32 or other reduced-precision shortcut,
    // so results stay close to the CPU model's. cuBLAS documents bit-wise
    // repeatable results for one toolkit version on GPUs of the same
    // architecture and SM count, with atomics mode off (the default) and
    // one stream: what this model uses.
    MLP_CHECK_CUBLAS(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH));
    // No cublasSetStream: a new handle works on the legacy default stream,
    // where the kernels and GradSync's copies go too.
  }
  // Not copyable: two owners would destroy the handle twice.
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  // Not movable either: the model owns its one handle for its whole life.
  CublasHandle(CublasHandle&&) = delete;
  CublasHandle& operator=(CublasHandle&&) = delete;
  ~CublasHandle() {
    if (const cublasStatus_t status = cublasDestroy(handle_); status != CUBLAS_STATUS_SUCCESS) {
      lockstep::log::warn("mlp: cublasDestroy failed: {}", cublasGetStatusName(status));
    }
  }

  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// C = alpha * op(A) . op(B) + beta * C for row-major matrices, with the
// arguments of cblas_sgemm(CblasRowMajor, ...). cuBLAS is column-major, where
// a row-major matrix reads as its transpose, so it computes
// C^T = op(B)^T . op(A)^T: the operands swap, the flags stay.
void gemm_row_major(cublasHandle_t handle, bool transpose_a, bool transpose_b, int m, int n, int k,
                    float alpha, const float* a, int lda, const float* b, int ldb, float beta,
                    float* c, int ldc) {
  MLP_CHECK_CUBLAS(cublasSgemm(handle, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                               transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a,
                               lda, &beta, c, ldc));
}

float* floats(Tensor& tensor) { return static_cast<float*>(tensor.data()); }
const float* floats(const Tensor& tensor) { return static_cast<const float*>(tensor.data()); }
std::size_t count_of(const Tensor& tensor) { return static_cast<std::size_t>(tensor.numel()); }

class CudaModel final : public Model {
 public:
  CudaModel(const std::vector<int>& widths, const AdamOptions& adam, int device)
      : Model(widths, Device::cuda(device)), adam_(adam), device_(Device::cuda(device)) {}

  void initialize(std::uint64_t seed) override {
    // Drawn on the host by the CPU model's function: the same first bits.
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      Layer& layer = layers_[l];
      std::vector<float> weights(count_of(layer.weight));
      draw_initial_weights(seed, l, layer.in, weights.data(), layer.weight.numel());
      LOCKSTEP_CHECK_CUDA(cudaMemcpy(layer.weight.data(), weights.data(), layer.weight.nbytes(),
                                     cudaMemcpyHostToDevice));
    }
  }

  double forward_backward(const Batch& batch,
                          const std::function<void(Tensor&)>& on_gradient) override {
    forward(batch);
    const Layer& top = layers_.back();
    Tensor* delta = &deltas_[0];
    Tensor* below = &deltas_[1];
    LOCKSTEP_CHECK_CUDA(cuda::softmax_cross_entropy(
        floats(activations_.back()), static_cast<const int*>(labels_.data()), batch.size, top.out,
        floats(*delta), static_cast<double*>(row_loss_.data())));
    for (std::size_t l = layers_.size(); l-- > 0;) {
      Layer& layer = layers_[l];
      const Tensor& input = activations_[l];
      // dW = delta^T . input, db = column sums of delta.
      gemm_row_major(cublas_.get(), true, false, layer.out, layer.in, batch.size, 1.0f,
                     floats(*delta), layer.out, floats(input), layer.in, 0.0f,
                     floats(layer.weight_grad), layer.in);
      LOCKSTEP_CHECK_CUDA(
          cuda::column_sums(floats(*delta), batch.size, layer.out, floats(layer.bias_grad)));
      on_gradient(layer.weight_grad);
      on_gradient(layer.bias_grad);
      if (l == 0) break;
      // delta_in = (delta . W) masked by the ReLU of the layer below.
      gemm_row_major(cublas_.get(), false, false, batch.size, layer.in, layer.out, 1.0f,
                     floats(*delta), layer.out, floats(layer.weight), layer.in, 0.0f,
                     floats(*below), layer.in);
      LOCKSTEP_CHECK_CUDA(cuda::relu_backward(
          floats(*below), floats(input),
          static_cast<std::size_t>(batch.size) * static_cast<std::size_t>(layer.in)));
      std::swap(delta, below);
    }
    // Synchronous: waits for the loss (and the backward pass queued after it).
    std::vector<double> row_loss(static_cast<std::size_t>(batch.size));
    LOCKSTEP_CHECK_CUDA(cudaMemcpy(row_loss.data(), row_loss_.data(),
                                   row_loss.size() * sizeof(double), cudaMemcpyDeviceToHost));
    double loss = 0;
    for (double value : row_loss) loss += value;  // in row order, like the CPU model
    return loss / batch.size;
  }

  void optimizer_step() override {
    std::int64_t& t = step_.data_as<std::int64_t>()[0];
    ++t;
    const cuda::AdamStep step{
        .learning_rate = adam_.learning_rate,
        .beta1 = adam_.beta1,
        .beta2 = adam_.beta2,
        .epsilon = adam_.epsilon,
        .correction1 = 1.0f - std::pow(adam_.beta1, static_cast<float>(t)),
        .correction2 = 1.0f - std::pow(adam_.beta2, static_cast<float>(t)),
    };
    std::vector<Tensor> params = parameters();
    std::vector<Tensor> grads = gradients();
    for (std::size_t i = 0; i < params.size(); ++i) {
      // The owned elements of parameter i, and their moments.
      const lockstep::ShardSlice& owned = owned_.slices[i];
      if (owned.count == 0) continue;
      LOCKSTEP_CHECK_CUDA(
          cuda::adam_update(floats(params[i]) + owned.begin, floats(grads[i]) + owned.begin,
                            floats(m_) + owned.local_offset, floats(v_) + owned.local_offset,
                            static_cast<std::size_t>(owned.count), step));
    }
  }

  double accuracy(const Batch& batch) override {
    forward(batch);
    Tensor correct = Tensor::allocate("correct", DType::kI32, {1}, device_);
    LOCKSTEP_CHECK_CUDA(cuda::count_correct(floats(activations_.back()),
                                            static_cast<const int*>(labels_.data()), batch.size,
                                            layers_.back().out, static_cast<int*>(correct.data())));
    int count = 0;
    LOCKSTEP_CHECK_CUDA(cudaMemcpy(&count, correct.data(), sizeof(count), cudaMemcpyDeviceToHost));
    return static_cast<double>(count) / batch.size;
  }

 private:
  // Device buffers for batches of `rows`, reallocated when the size changes
  // (training and evaluation batches differ).
  void reserve(int rows) {
    if (rows == reserved_rows_) return;
    const std::int64_t n = rows;
    activations_.clear();
    activations_.push_back(
        Tensor::allocate("activation0", DType::kF32, {n, layers_.front().in}, device_));
    int widest = layers_.front().in;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      activations_.push_back(Tensor::allocate(fmt::format("activation{}", l + 1), DType::kF32,
                                              {n, layers_[l].out}, device_));
      widest = std::max(widest, layers_[l].out);
    }
    for (std::size_t k = 0; k < deltas_.size(); ++k) {
      deltas_[k] = Tensor::allocate(fmt::format("delta{}", k), DType::kF32, {n, widest}, device_);
    }
    labels_ = Tensor::allocate("labels", DType::kI32, {n}, device_);
    row_loss_ = Tensor::allocate("row_loss", DType::kF64, {n}, device_);
    reserved_rows_ = rows;
  }

  // activations_[l] is the input of layer l; the last entry holds logits.
  void forward(const Batch& batch) {
    reserve(batch.size);
    LOCKSTEP_CHECK_CUDA(cudaMemcpy(activations_[0].data(), batch.inputs.data(),
                                   batch.inputs.size() * sizeof(float), cudaMemcpyHostToDevice));
    LOCKSTEP_CHECK_CUDA(cudaMemcpy(labels_.data(), batch.labels.data(),
                                   batch.labels.size() * sizeof(int), cudaMemcpyHostToDevice));
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      Tensor& out = activations_[l + 1];
      LOCKSTEP_CHECK_CUDA(cuda::fill_rows(floats(out), floats(layer.bias), batch.size, layer.out));
      gemm_row_major(cublas_.get(), false, true, batch.size, layer.out, layer.in, 1.0f,
                     floats(activations_[l]), layer.in, floats(layer.weight), layer.in, 1.0f,
                     floats(out), layer.out);
      if (l + 1 < layers_.size()) LOCKSTEP_CHECK_CUDA(cuda::relu(floats(out), count_of(out)));
    }
  }

  AdamOptions adam_;
  Device device_;
  CublasHandle cublas_;
  int reserved_rows_ = -1;
  std::vector<Tensor> activations_;
  std::array<Tensor, 2> deltas_;  // backward's current delta and the one below it
  Tensor labels_;
  Tensor row_loss_;
};

}  // namespace

std::unique_ptr<Model> make_cuda_model(const std::vector<int>& widths, const AdamOptions& adam,
                                       int device) {
  LOCKSTEP_CHECK_CUDA(cudaSetDevice(device));
  return std::make_unique<CudaModel>(widths, adam, device);
}

}  // namespace mlp
