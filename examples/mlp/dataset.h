// A deterministic synthetic classification task: inputs are Gaussian noise
// drawn from a counter-based generator (sample i is the same on every rank
// and every run), labels come from a fixed random "teacher" network. An MLP
// can learn it; nothing is stored, so any sample is computed on demand.
#pragma once

#include <cstdint>
#include <vector>

namespace mlp {

class TeacherDataset {
 public:
  TeacherDataset(std::uint64_t seed, int input_dim, int classes);

  int input_dim() const { return input_dim_; }
  int classes() const { return classes_; }
  // Writes sample `index` into `x` (input_dim floats) and returns its label.
  int sample(std::uint64_t index, float* x) const;

 private:
  std::uint64_t seed_;
  int input_dim_;
  int classes_;
  int teacher_hidden_ = 32;
  std::vector<float> teacher_w1_;  // teacher_hidden x input_dim
  std::vector<float> teacher_w2_;  // classes x teacher_hidden
};

// Which samples each rank trains on. The global batch of step s is a fixed
// function of s, split evenly across ranks, so the run's result depends on
// the seed and world size only, never on restarts.
class Sampler {
 public:
  Sampler(std::uint64_t dataset_size, int global_batch, int rank, int world_size);
  int local_batch() const { return local_batch_; }
  // Index of the j-th local sample of step `step`.
  std::uint64_t index(std::int64_t step, int j) const;

 private:
  std::uint64_t dataset_size_;
  int global_batch_;
  int local_batch_;
  int rank_;
};

// A uniform double in [0, 1) from (seed, a, b), the same everywhere.
double uniform(std::uint64_t seed, std::uint64_t a, std::uint64_t b);
// A standard normal float from (seed, a, b).
float normal(std::uint64_t seed, std::uint64_t a, std::uint64_t b);

}  // namespace mlp
