// The example's model: a multi-layer perceptron with ReLU between layers and
// softmax cross-entropy on top, trained with Adam. Parameters, gradients and
// optimiser state are lockstep::Tensors, so GradSync averages the gradients
// and the Checkpointer saves the rest.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <lockstep/checkpointer.h>
#include <lockstep/runtime.h>
#include <lockstep/shard.h>
#include <lockstep/tensor.h>

#include "dataset.h"

namespace mlp {

struct Batch {
  std::vector<float> inputs;  // batch x input_dim, row-major
  std::vector<int> labels;    // batch
  int size = 0;
};

struct AdamOptions {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
};

// One layer's tensors: the weight (out x in) and bias (out), and their
// gradients (named like them, as GradSync expects).
struct Layer {
  int in = 0;
  int out = 0;
  lockstep::Tensor weight, bias;            // out x in, out
  lockstep::Tensor weight_grad, bias_grad;  // same shapes
};

class Model {
 public:
  virtual ~Model() = default;

  // Draws the initial weights from `seed`, identically on every rank. A run
  // that restores a checkpoint skips it.
  virtual void initialize(std::uint64_t seed) = 0;

  // Runs forward and backward on `batch`; calls `on_gradient` for each
  // gradient as soon as backward has produced it (last layer first). Returns
  // the mean loss of the batch.
  virtual double forward_backward(const Batch& batch,
                                  const std::function<void(lockstep::Tensor&)>& on_gradient) = 0;
  // One Adam step with the (averaged) gradients, on the owned elements of
  // every parameter only.
  virtual void optimizer_step() = 0;
  // Fraction of `batch` classified correctly.
  virtual double accuracy(const Batch& batch) = 0;

  // "fc0.weight", "fc0.bias", ... in forward order.
  std::vector<lockstep::Tensor> parameters();
  std::vector<lockstep::Tensor> gradients();
  std::int64_t parameter_count();

  // Every element of every parameter: the layout of replicated training.
  lockstep::ShardLayout whole_layout();
  // Which elements of each parameter this rank's Adam updates: all of them
  // (whole_layout()), or with ZeRO-1 its share (ShardedGradSync::layout()).
  // Allocates Adam's moments for those elements only. Call it once, before
  // a restore.
  void set_owned(const lockstep::ShardLayout& owned);
  // Adam's state for a checkpoint: the moments as groups "optim.m" and
  // "optim.v" (tensors named like the parameters: whole, or this rank's
  // chunks of them when the layout is a share), and the step counter in
  // "optim". The paths are the same either way, so a checkpoint of one
  // mode resumes in the other.
  std::vector<lockstep::State::Item> optimizer_state();
  // The bytes of Adam's moments on this rank.
  std::size_t optimizer_bytes() const { return m_.nbytes() + v_.nbytes(); }

 protected:
  // The layers for `widths` with every tensor on `device`, zero until
  // initialize() or a restore, and Adam's step counter in host memory.
  Model(const std::vector<int>& widths, lockstep::Device device);

  std::vector<Layer> layers_;
  lockstep::Tensor step_;  // host memory: the optimiser reads it on the host
  lockstep::Device device_;
  lockstep::ShardLayout owned_;  // parameters() order
  bool sharded_ = false;         // owned_ is a share, not every element
  lockstep::Tensor m_, v_;       // Adam's moments of the owned elements, back to back
};

// Writes the `count` initial weights of layer `layer` (He initialisation for
// `in` inputs) from the seed alone: every rank, and both models, start from
// the same bits.
void draw_initial_weights(std::uint64_t seed, std::size_t layer, int in, float* weights,
                          std::int64_t count);

// Layer widths, e.g. {64, 256, 256, 10}; the weights are zero until
// initialize() or a restore.
std::unique_ptr<Model> make_cpu_model(const std::vector<int>& widths, const AdamOptions& adam);
#if LOCKSTEP_EXAMPLE_CUDA
// The same model on GPU `device` (which must be the calling thread's
// current device): cuBLAS and small kernels on the legacy default stream,
// with tensors of the same names, shapes and dtypes (the step counter stays
// in host memory).
std::unique_ptr<Model> make_cuda_model(const std::vector<int>& widths, const AdamOptions& adam,
                                       int device);
#endif

// What the trainer and bench/mlp share to set a model up.

// {input_dim, hidden..., classes} from `hidden` ("256,256"). Throws
// lockstep::UsageError for a width that is not positive.
std::vector<int> layer_widths(int input_dim, const std::string& hidden, int classes);
// The device to train on for `device` ("cpu" or "cuda"): the CPU, or the
// GPU the Runtime bound to this rank (LOCKSTEP_DEVICE decides whether it
// binds one). Throws lockstep::UsageError saying why there is none.
lockstep::Device model_device(const std::string& device, const lockstep::Runtime& rt);
// make_cuda_model on a GPU device, make_cpu_model otherwise.
std::unique_ptr<Model> make_model(lockstep::Device device, const std::vector<int>& widths,
                                  const AdamOptions& adam);
// `size` samples of `data`, the j-th being sample index_of(j).
Batch make_batch(const TeacherDataset& data, int size,
                 const std::function<std::uint64_t(int)>& index_of);

}  // namespace mlp
