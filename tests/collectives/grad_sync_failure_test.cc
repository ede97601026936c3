// GradSync when a collective fails part-way through a step: the step is
// abandoned as a whole, every bucket starts the next step afresh, and that
// step averages again.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <lockstep/communicator.h>
#include <lockstep/error.h>
#include <lockstep/grad_sync.h>

#include "mpi_test.h"
#include "tensor_values.h"

namespace lockstep {
namespace {

using testing::element;
using testing::runtime;
using testing::set_element;

Communicator& real_communicator() {
  static std::unique_ptr<Communicator> comm =
      make_communicator(runtime().comm(), Device::cpu(), communicator_options(runtime()));
  return *comm;
}

// A Work whose wait() first finishes the real collective (so that every rank
// stays in step), then fails.
class FailingWork final : public Work {
 public:
  explicit FailingWork(std::shared_ptr<Work> inner) : inner_(std::move(inner)) {}
  bool test() override {
    if (inner_->test()) throw BackendError("test", 1, "injected failure of " + describe());
    return false;
  }
  void wait(std::chrono::duration<double> timeout) override {
    inner_->wait(timeout);
    throw BackendError("test", 1, "injected failure of " + describe());
  }
  std::uint64_t sequence_number() const override { return inner_->sequence_number(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::shared_ptr<Work> inner_;
};

// The mpi backend, except that all-reduce number `fail_at` (from 0, counted
// over the communicator's life) fails: in its Work's wait(), or, with
// `fail_to_start`, by throwing before it starts (on every rank alike).
class FailureInjectingCommunicator final : public Communicator {
 public:
  FailureInjectingCommunicator(Communicator& inner, int fail_at, bool fail_to_start)
      : inner_(inner), fail_at_(fail_at), fail_to_start_(fail_to_start) {}

  std::string_view backend_name() const override { return inner_.backend_name(); }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void allreduce(Tensor& tensor, const AllreduceOptions& options) override {
    inner_.allreduce(tensor, options);
  }
  std::shared_ptr<Work> allreduce_async(Tensor tensor, const AllreduceOptions& options) override {
    return maybe_fail([&] { return inner_.allreduce_async(std::move(tensor), options); });
  }
  std::shared_ptr<Work> allreduce_coalesced_async(std::vector<Tensor> tensors,
                                                  const AllreduceOptions& options) override {
    return maybe_fail(
        [&] { return inner_.allreduce_coalesced_async(std::move(tensors), options); });
  }
  void broadcast(Tensor& tensor, const BroadcastOptions& options) override {
    inner_.broadcast(tensor, options);
  }
  std::shared_ptr<Work> broadcast_async(Tensor tensor, const BroadcastOptions& options) override {
    return inner_.broadcast_async(std::move(tensor), options);
  }
  void allgather(const Tensor& input, Tensor& output, const AllgatherOptions& options) override {
    inner_.allgather(input, output, options);
  }
  std::shared_ptr<Work> allgather_async(Tensor input, Tensor output,
                                        const AllgatherOptions& options) override {
    return inner_.allgather_async(std::move(input), std::move(output), options);
  }
  void reduce_scatter(const Tensor& input, Tensor& output,
                      const ReduceScatterOptions& options) override {
    inner_.reduce_scatter(input, output, options);
  }
  std::shared_ptr<Work> reduce_scatter_async(Tensor input, Tensor output,
                                             const ReduceScatterOptions& options) override {
    return inner_.reduce_scatter_async(std::move(input), std::move(output), options);
  }
  void barrier(const BarrierOptions& options) override { inner_.barrier(options); }
  std::shared_ptr<Work> barrier_async(const BarrierOptions& options) override {
    return inner_.barrier_async(options);
  }
  std::vector<std::string> exchange_metadata(const std::string& mine) override {
    return inner_.exchange_metadata(mine);
  }

 private:
  template <typename Start>
  std::shared_ptr<Work> maybe_fail(const Start& start) {
    const bool fail = allreduces_++ == fail_at_;
    if (fail && fail_to_start_)
      throw BackendError("test", 1, "injected failure to start an all-reduce");
    std::shared_ptr<Work> work = start();
    if (fail) return std::make_shared<FailingWork>(std::move(work));
    return work;
  }

  Communicator& inner_;
  int allreduces_ = 0;
  const int fail_at_;
  const bool fail_to_start_;
};

constexpr std::int64_t kCount = 300;  // f32: 1200 bytes, one gradient per 1 KiB bucket
constexpr int kGradients = 4;

double value(int rank, int gradient, std::int64_t index, int step) {
  return rank * 1000.0 + gradient * 100.0 + static_cast<double>(index % 17) + step * 0.5;
}

std::vector<Tensor> make_gradients() {
  std::vector<Tensor> gradients;
  for (int g = 0; g < kGradients; ++g) {
    gradients.push_back(Tensor::allocate("g" + std::to_string(g), DType::kF32, {kCount}));
  }
  return gradients;
}

void fill(std::vector<Tensor>& gradients, int rank, int step) {
  for (int g = 0; g < kGradients; ++g) {
    for (std::int64_t i = 0; i < kCount; ++i) {
      set_element(gradients[static_cast<std::size_t>(g)], static_cast<std::size_t>(i),
                  value(rank, g, i, step));
    }
  }
}

void expect_averaged(const std::vector<Tensor>& gradients, int size, int step) {
  for (int g = 0; g < kGradients; ++g) {
    for (std::int64_t i = 0; i < kCount; ++i) {
      double sum = 0;
      for (int rank = 0; rank < size; ++rank) sum += value(rank, g, i, step);
      const double found =
          element(gradients[static_cast<std::size_t>(g)], static_cast<std::size_t>(i));
      if (std::abs(found - sum / size) > 1e-3) {
        ADD_FAILURE() << "g" << g << "[" << i << "] = " << found << ", expected " << sum / size
                      << " (step " << step << ")";
        return;
      }
    }
  }
}

// One gradient per bucket, so that a failure in the middle leaves buckets on
// both sides of it.
GradSyncOptions small_buckets() {
  return {.bucket_mb = 1.0 / 1024, .first_bucket_mb = 1.0 / 1024, .in_place_min_mb = 1.0 / 1024};
}

// After the failed step, a whole step must average as if nothing happened.
void expect_next_step_averages(GradSync& sync, std::vector<Tensor>& gradients, int size) {
  fill(gradients, real_communicator().rank(), 1);
  for (Tensor& g : gradients) sync.ready(g);
  sync.wait();
  expect_averaged(gradients, size, 1);
}

TEST(GradSyncFailure, WaitThatFailsHalfWayAbandonsTheWholeStep) {
  FailureInjectingCommunicator comm(real_communicator(), /*fail_at=*/1, /*fail_to_start=*/false);
  std::vector<Tensor> gradients = make_gradients();
  GradSync sync(comm, gradients, small_buckets());
  ASSERT_EQ(sync.bucket_layout().size(), static_cast<std::size_t>(kGradients));
  fill(gradients, comm.rank(), 0);
  for (Tensor& g : gradients) sync.ready(g);
  EXPECT_THROW(sync.wait(), BackendError);
  // Every bucket is back at the start of a step: none of its gradients is
  // still marked ready, and a second wait() names the first one.
  try {
    sync.wait();
    ADD_FAILURE() << "wait() after a failed step did not throw";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'g0' was never marked ready"), std::string::npos)
        << error.what();
  }
  expect_next_step_averages(sync, gradients, comm.size());
}

TEST(GradSyncFailure, AllReduceThatFailsToStartAbandonsTheWholeStep) {
  // Buckets launch in reverse registration order: the second to launch
  // holds g2, the third to launch g1.
  FailureInjectingCommunicator comm(real_communicator(), /*fail_at=*/1, /*fail_to_start=*/true);
  std::vector<Tensor> gradients = make_gradients();
  GradSync sync(comm, gradients, small_buckets());
  fill(gradients, comm.rank(), 0);
  sync.ready(gradients[3]);
  EXPECT_THROW(sync.ready(gradients[2]), BackendError);
  try {
    sync.wait();
    ADD_FAILURE() << "wait() after a failed step did not throw";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("'g0' was never marked ready"), std::string::npos)
        << error.what();
  }
  expect_next_step_averages(sync, gradients, comm.size());
}

}  // namespace
}  // namespace lockstep
