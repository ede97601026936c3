#include "cuda_kernels.h"

#include <cmath>

#include <lockstep/cuda_grid.cuh>

namespace mlp::cuda {

namespace {

using lockstep::cuda_grid::blocks_for;
using lockstep::cuda_grid::first_index;
using lockstep::cuda_grid::kThreads;
using lockstep::cuda_grid::stride;

__global__ void fill_rows_kernel(float* out, const float* bias, int rows, int columns) {
  const std::size_t count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(columns);
  for (std::size_t i = first_index(); i < count; i += stride()) {
    out[i] = bias[i % static_cast<std::size_t>(columns)];
  }
}

__global__ void relu_kernel(float* values, std::size_t count) {
  // As std::max(value, 0.0f): -0 and NaN stay what they are.
  for (std::size_t i = first_index(); i < count; i += stride()) {
    if (values[i] < 0.0f) values[i] = 0.0f;
  }
}

__global__ void relu_backward_kernel(float* delta, const float* input, std::size_t count) {
  for (std::size_t i = first_index(); i < count; i += stride()) {
    if (input[i] <= 0.0f) delta[i] = 0.0f;
  }
}

// One thread per row (looping with the grid's stride when there are more
// rows than threads): the classes are few, and a sequential loop keeps the
// order of the CPU model's sums.
__global__ void softmax_cross_entropy_kernel(const float* logits, const int* labels, int rows,
                                             int classes, float* delta, double* row_loss) {
  const auto width = static_cast<std::size_t>(classes);
  for (std::size_t i = first_index(); i < static_cast<std::size_t>(rows); i += stride()) {
    const float* row = logits + i * width;
    float peak = row[0];
    for (int c = 1; c < classes; ++c) peak = row[c] > peak ? row[c] : peak;
    double total = 0;
    for (int c = 0; c < classes; ++c) total += exp(static_cast<double>(row[c] - peak));
    const int label = labels[i];
    row_loss[i] = log(total) - static_cast<double>(row[label] - peak);
    float* out = delta + i * width;
    for (int c = 0; c < classes; ++c) {
      const double p = exp(static_cast<double>(row[c] - peak)) / total;
      out[c] = static_cast<float>((p - (c == label ? 1.0 : 0.0)) / rows);
    }
  }
}

// One thread per column, adding the rows in order: no atomics, so the sum
// is the same every time.
__global__ void column_sums_kernel(const float* values, int rows, int columns, float* sums) {
  const auto width = static_cast<std::size_t>(columns);
  for (std::size_t c = first_index(); c < width; c += stride()) {
    float sum = 0.0f;
    for (int i = 0; i < rows; ++i) sum += values[static_cast<std::size_t>(i) * width + c];
    sums[c] = sum;
  }
}

__global__ void adam_kernel(float* parameter, const float* gradient, float* m, float* v,
                            std::size_t count, AdamStep step) {
  for (std::size_t i = first_index(); i < count; i += stride()) {
    const float g = gradient[i];
    m[i] = step.beta1 * m[i] + (1 - step.beta1) * g;
    v[i] = step.beta2 * v[i] + (1 - step.beta2) * g * g;
    parameter[i] -= step.learning_rate * (m[i] / step.correction1) /
                    (sqrtf(v[i] / step.correction2) + step.epsilon);
  }
}

__global__ void count_correct_kernel(const float* logits, const int* labels, int rows, int classes,
                                     int* correct) {
  for (std::size_t i = first_index(); i < static_cast<std::size_t>(rows); i += stride()) {
    const float* row = logits + i * static_cast<std::size_t>(classes);
    int best = 0;
    for (int c = 1; c < classes; ++c) {
      if (row[c] > row[best]) best = c;
    }
    // An integer count is the same whatever order the rows arrive in.
    if (best == labels[i]) atomicAdd(correct, 1);
  }
}

}  // namespace

cudaError_t fill_rows(float* out, const float* bias, int rows, int columns) {
  const std::size_t count = static_cast<std::size_t>(rows) * static_cast<std::size_t>(columns);
  if (count == 0) return cudaSuccess;
  fill_rows_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(out, bias, rows, columns);
  return cudaGetLastError();
}

cudaError_t relu(float* values, std::size_t count) {
  if (count == 0) return cudaSuccess;
  relu_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(values, count);
  return cudaGetLastError();
}

cudaError_t relu_backward(float* delta, const float* input, std::size_t count) {
  if (count == 0) return cudaSuccess;
  relu_backward_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(delta, input, count);
  return cudaGetLastError();
}

cudaError_t softmax_cross_entropy(const float* logits, const int* labels, int rows, int classes,
                                  float* delta, double* row_loss) {
  if (rows == 0) return cudaSuccess;
  softmax_cross_entropy_kernel<<<blocks_for(static_cast<std::size_t>(rows)), kThreads, 0,
                                 cudaStreamLegacy>>>(logits, labels, rows, classes, delta,
                                                     row_loss);
  return cudaGetLastError();
}

cudaError_t column_sums(const float* values, int rows, int columns, float* sums) {
  if (columns == 0) return cudaSuccess;
  column_sums_kernel<<<blocks_for(static_cast<std::size_t>(columns)), kThreads, 0,
                       cudaStreamLegacy>>>(values, rows, columns, sums);
  return cudaGetLastError();
}

cudaError_t adam_update(float* parameter, const float* gradient, float* m, float* v,
                        std::size_t count, const AdamStep& step) {
  if (count == 0) return cudaSuccess;
  adam_kernel<<<blocks_for(count), kThreads, 0, cudaStreamLegacy>>>(parameter, gradient, m, v,
                                                                    count, step);
  return cudaGetLastError();
}

cudaError_t count_correct(const float* logits, const int* labels, int rows, int classes,
                          int* correct) {
  if (rows == 0) return cudaSuccess;
  count_correct_kernel<<<blocks_for(static_cast<std::size_t>(rows)), kThreads, 0,
                         cudaStreamLegacy>>>(logits, labels, rows, classes, correct);
  return cudaGetLastError();
}

}  // namespace mlp::cuda
