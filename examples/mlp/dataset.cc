#include "dataset.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace mlp {

namespace {
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

double uniform(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  const std::uint64_t bits = splitmix64(splitmix64(splitmix64(seed) ^ a) ^ b);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

float normal(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  // Box-Muller from two independent uniforms.
  const double u1 = uniform(seed, a, 2 * b) + 1e-300;
  const double u2 = uniform(seed, a, 2 * b + 1);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2));
}

TeacherDataset::TeacherDataset(std::uint64_t seed, int input_dim, int classes)
    : seed_(seed), input_dim_(input_dim), classes_(classes) {
  if (input_dim <= 0 || classes < 2) {
    throw std::invalid_argument("the data set needs input_dim > 0 and at least 2 classes");
  }
  const auto hidden = static_cast<std::size_t>(teacher_hidden_);
  teacher_w1_.resize(hidden * static_cast<std::size_t>(input_dim));
  teacher_w2_.resize(static_cast<std::size_t>(classes) * hidden);
  const std::uint64_t teacher_seed = seed ^ 0x7EAC4E5ULL;
  const float scale1 = 1.0f / std::sqrt(static_cast<float>(input_dim));
  const float scale2 = 1.0f / std::sqrt(static_cast<float>(teacher_hidden_));
  for (std::size_t i = 0; i < teacher_w1_.size(); ++i)
    teacher_w1_[i] = scale1 * normal(teacher_seed, 1, i);
  for (std::size_t i = 0; i < teacher_w2_.size(); ++i)
    teacher_w2_[i] = scale2 * normal(teacher_seed, 2, i);
}

int TeacherDataset::sample(std::uint64_t index, float* x) const {
  for (int k = 0; k < input_dim_; ++k) x[k] = normal(seed_, index, static_cast<std::uint64_t>(k));
  std::vector<float> hidden(static_cast<std::size_t>(teacher_hidden_));
  for (int h = 0; h < teacher_hidden_; ++h) {
    float sum = 0;
    for (int k = 0; k < input_dim_; ++k) {
      sum += teacher_w1_[static_cast<std::size_t>(h * input_dim_ + k)] * x[k];
    }
    hidden[static_cast<std::size_t>(h)] = std::tanh(sum);
  }
  int best = 0;
  float best_score = -1e30f;
  for (int c = 0; c < classes_; ++c) {
    float score = 0;
    for (int h = 0; h < teacher_hidden_; ++h) {
      score += teacher_w2_[static_cast<std::size_t>(c * teacher_hidden_ + h)] *
               hidden[static_cast<std::size_t>(h)];
    }
    if (score > best_score) {
      best_score = score;
      best = c;
    }
  }
  return best;
}

Sampler::Sampler(std::uint64_t dataset_size, int global_batch, int rank, int world_size)
    : dataset_size_(dataset_size), global_batch_(global_batch), rank_(rank) {
  if (global_batch % world_size != 0) {
    throw std::invalid_argument("the global batch (" + std::to_string(global_batch) +
                                ") must be a multiple of the number of ranks (" +
                                std::to_string(world_size) + ")");
  }
  local_batch_ = global_batch / world_size;
}

std::uint64_t Sampler::index(std::int64_t step, int j) const {
  const auto position =
      static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(global_batch_) +
      static_cast<std::uint64_t>(rank_ * local_batch_ + j);
  // Each epoch visits the data set in another order: an affine bijection of
  // the indices modulo a power of two, with an odd multiplier per epoch.
  const std::uint64_t epoch = position / dataset_size_;
  const std::uint64_t multiplier = (static_cast<std::uint64_t>(uniform(17, epoch, 0) * 1e9) | 1);
  return (position * multiplier + epoch) % dataset_size_;
}

}  // namespace mlp
