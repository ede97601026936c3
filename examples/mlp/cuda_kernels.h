// The small kernels of the example's GPU model; cuBLAS does the matrix
// products. Every function queues its kernel on the legacy default stream of
// the current device and returns the launch's error. Each mirrors a loop of
// cpu_model.cc in the same order and precision, and none uses atomics on
// floating-point values, so a run is bit-identical to a run before it.
// Plain C++: the kernels behind it are compiled by nvcc as C++17.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

namespace mlp::cuda {

// out[i][c] = bias[c] for `rows` rows of `columns`.
cudaError_t fill_rows(float* out, const float* bias, int rows, int columns);

// values[i] = max(values[i], 0).
cudaError_t relu(float* values, std::size_t count);

// delta[i] = 0 where input[i] <= 0: the ReLU's backward pass.
cudaError_t relu_backward(float* delta, const float* input, std::size_t count);

// Softmax cross-entropy of `rows` rows of `classes` logits: row_loss[i] (in
// double) and the gradient of the mean loss, (softmax - onehot) / rows.
cudaError_t softmax_cross_entropy(const float* logits, const int* labels, int rows, int classes,
                                  float* delta, double* row_loss);

// sums[c] = the sum over rows of values[i][c], row by row in float.
cudaError_t column_sums(const float* values, int rows, int columns, float* sums);

struct AdamStep {
  float learning_rate, beta1, beta2, epsilon;
  float correction1, correction2;  // 1 - beta^t
};
// One Adam update of `count` parameters with their gradient and moments.
cudaError_t adam_update(float* parameter, const float* gradient, float* m, float* v,
                        std::size_t count, const AdamStep& step);

// Adds to *correct the rows whose first largest logit is their label.
cudaError_t count_correct(const float* logits, const int* labels, int rows, int classes,
                          int* correct);

}  // namespace mlp::cuda
