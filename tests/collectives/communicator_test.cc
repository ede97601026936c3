// Every operation and dtype of the MPI backend against a reference computed
// in double precision on every rank, at sizes around the segment boundaries
// and at 64 MiB.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <lockstep/communicator.h>

#include "mpi_test.h"
#include "tensor_values.h"

namespace lockstep {
namespace {

using testing::element;
using testing::input_value;
using testing::is_integer;
using testing::precision;
using testing::runtime;
using testing::set_element;

constexpr DType kDTypes[] = {DType::kF32,  DType::kF64, DType::kF16,
                             DType::kBF16, DType::kI32, DType::kI64};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
// Small segments, so that small tensors already straddle segment boundaries.
constexpr std::size_t kSegmentBytes = 256;

Communicator& small_segments() {
  static std::unique_ptr<Communicator> comm =
      make_communicator(runtime().comm(), Device::cpu(),
                        {.timeout = CollectiveTimeout(120), .segment_bytes = kSegmentBytes});
  return *comm;
}

Communicator& default_segments() {
  static std::unique_ptr<Communicator> comm = make_communicator(runtime());
  return *comm;
}

// Sizes 0, 1, odd primes, and one below, at and above segment boundaries of
// every element size.
std::vector<std::size_t> sizes_for(DType dtype) {
  const std::size_t per_segment = kSegmentBytes / dtype_size(dtype);
  return {0, 1, 3, 13, 101, per_segment - 1, per_segment, per_segment + 1, 3 * per_segment + 7};
}

Tensor filled(const std::string& name, DType dtype, std::size_t count, int rank) {
  Tensor tensor = Tensor::allocate(name, dtype, {static_cast<std::int64_t>(count)});
  for (std::size_t i = 0; i < count; ++i) set_element(tensor, i, input_value(rank, i, dtype));
  return tensor;
}

double reference(ReduceOp op, DType dtype, std::size_t index, int size) {
  double sum = 0;
  double max = -1e300;
  double min = 1e300;
  for (int rank = 0; rank < size; ++rank) {
    const double value = input_value(rank, index, dtype);
    sum += value;
    max = std::max(max, value);
    min = std::min(min, value);
  }
  switch (op) {
    case ReduceOp::kSum:
      return sum;
    case ReduceOp::kAvg:
      return is_integer(dtype) ? std::trunc(sum / size) : sum / size;
    case ReduceOp::kMax:
      return max;
    case ReduceOp::kMin:
      return min;
  }
  return 0;
}

// Stops at the first wrong element so that a broken op prints one line.
void expect_reduced(const Tensor& result, ReduceOp op, std::size_t offset, int size,
                    const std::string& context) {
  const auto count = static_cast<std::size_t>(result.numel());
  for (std::size_t i = 0; i < count; ++i) {
    const double expected = reference(op, result.dtype(), offset + i, size);
    const double tolerance =
        op == ReduceOp::kAvg ? precision(result.dtype()) * std::max(1.0, std::abs(expected)) : 0;
    if (std::abs(element(result, i) - expected) > tolerance) {
      ADD_FAILURE() << context << ": element " << i << " is " << element(result, i) << ", expected "
                    << expected;
      return;
    }
  }
}

std::string context_of(std::string_view what, DType dtype, ReduceOp op, std::size_t count) {
  return std::string(what) + " " + std::string(dtype_name(dtype)) + " " +
         std::string(reduce_op_name(op)) + " n=" + std::to_string(count);
}

TEST(Communicator, AllreduceEveryOpDtypeAndSize) {
  Communicator& comm = small_segments();
  for (DType dtype : kDTypes) {
    for (ReduceOp op : kOps) {
      for (std::size_t count : sizes_for(dtype)) {
        Tensor tensor = filled("t", dtype, count, comm.rank());
        comm.allreduce(tensor, {.op = op});
        expect_reduced(tensor, op, 0, comm.size(), context_of("allreduce", dtype, op, count));
      }
    }
  }
}

TEST(Communicator, ReduceScatterEveryOpDtypeAndSize) {
  Communicator& comm = small_segments();
  for (DType dtype : kDTypes) {
    for (ReduceOp op : kOps) {
      for (std::size_t block :
           {std::size_t{0}, std::size_t{1}, std::size_t{13}, std::size_t{101}}) {
        Tensor input =
            filled("in", dtype, block * static_cast<std::size_t>(comm.size()), comm.rank());
        Tensor output = Tensor::allocate("out", dtype, {static_cast<std::int64_t>(block)});
        comm.reduce_scatter(input, output, {.op = op});
        expect_reduced(output, op, block * static_cast<std::size_t>(comm.rank()), comm.size(),
                       context_of("reduce_scatter", dtype, op, block));
      }
    }
  }
}

TEST(Communicator, BroadcastEveryDtypeAndSize) {
  Communicator& comm = small_segments();
  const int root = comm.size() - 1;
  for (DType dtype : kDTypes) {
    for (std::size_t count : sizes_for(dtype)) {
      Tensor tensor = filled("t", dtype, count, comm.rank());
      comm.broadcast(tensor, {.root = root});
      for (std::size_t i = 0; i < count; ++i) {
        ASSERT_EQ(element(tensor, i), input_value(root, i, dtype))
            << dtype_name(dtype) << " n=" << count << " element " << i;
      }
    }
  }
}

TEST(Communicator, AllgatherEveryDtypeAndSize) {
  Communicator& comm = small_segments();
  const auto size = static_cast<std::size_t>(comm.size());
  for (DType dtype : kDTypes) {
    for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{13}, std::size_t{257}}) {
      Tensor input = filled("in", dtype, count, comm.rank());
      Tensor output = Tensor::allocate("out", dtype, {static_cast<std::int64_t>(count * size)});
      comm.allgather(input, output);
      for (std::size_t rank = 0; rank < size; ++rank) {
        for (std::size_t i = 0; i < count; ++i) {
          ASSERT_EQ(element(output, rank * count + i),
                    input_value(static_cast<int>(rank), i, dtype))
              << dtype_name(dtype) << " n=" << count << " block " << rank << " element " << i;
        }
      }
    }
  }
}

// The inputs repeat every kPeriod elements (see input_value), and so do
// exact results: sums of quarters stay exact in every dtype, an average
// divides the same exact sum, and max and min do not round.
constexpr std::size_t kPeriod = 23;

// `count` elements of input_value(rank, i), written as one period copied
// over and over (setting 32M elements one by one takes seconds).
Tensor filled_periodic(const std::string& name, DType dtype, std::size_t count, int rank) {
  Tensor tensor = Tensor::allocate(name, dtype, {static_cast<std::int64_t>(count)});
  const std::size_t first = std::min(count, kPeriod);
  for (std::size_t i = 0; i < first; ++i) set_element(tensor, i, input_value(rank, i, dtype));
  auto* bytes = static_cast<char*>(tensor.data());
  const std::size_t period_bytes = kPeriod * dtype_size(dtype);
  for (std::size_t done = period_bytes; done < tensor.nbytes();) {
    const std::size_t copy = std::min(done - done % period_bytes, tensor.nbytes() - done);
    std::memcpy(bytes + done, bytes, copy);
    done += copy;
  }
  return tensor;
}

// The first period against the double-precision reference, then every
// further element bitwise against the first period.
void expect_reduced_periodic(const Tensor& result, ReduceOp op, int size,
                             const std::string& context) {
  const auto count = static_cast<std::size_t>(result.numel());
  Tensor head = Tensor::borrow("head", const_cast<void*>(result.data()), result.dtype(),
                               {static_cast<std::int64_t>(std::min(count, kPeriod))});
  expect_reduced(head, op, 0, size, context);
  const auto* bytes = static_cast<const char*>(result.data());
  const std::size_t element_size = dtype_size(result.dtype());
  const std::size_t period_bytes = kPeriod * element_size;
  for (std::size_t offset = period_bytes; offset < result.nbytes(); offset += period_bytes) {
    const std::size_t length = std::min(period_bytes, result.nbytes() - offset);
    if (std::memcmp(bytes + offset, bytes, length) != 0) {
      std::size_t i = 0;
      while (std::memcmp(bytes + offset + i * element_size, bytes + i * element_size,
                         element_size) == 0) {
        ++i;
      }
      ADD_FAILURE() << context << ": element " << offset / element_size + i << " is "
                    << element(result, offset / element_size + i) << ", expected "
                    << element(result, i);
      return;
    }
  }
}

// 64 MiB, large enough for the pipelined ring (many chunks per block, on
// every rank count): every op in every dtype, the native MPI reductions and
// the user-defined ones for f16 and bf16.
TEST(Communicator, AllreduceSixtyFourMebibytes) {
  Communicator& comm = default_segments();
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  for (DType dtype : kDTypes) {
    const std::size_t count = kBytes / dtype_size(dtype);
    const Tensor input = filled_periodic("input", dtype, count, comm.rank());
    Tensor tensor = Tensor::allocate("big", dtype, {static_cast<std::int64_t>(count)});
    for (ReduceOp op : kOps) {
      std::memcpy(tensor.data(), input.data(), input.nbytes());
      comm.allreduce(tensor, {.op = op});
      expect_reduced_periodic(tensor, op, comm.size(), context_of("allreduce", dtype, op, count));
    }
  }
}

// Several tensors as one stream: empty ones, ones shorter than a rank's
// block, and a total above and below the size where the ring takes over.
TEST(Communicator, AllreduceCoalescedEveryOp) {
  Communicator& comm = default_segments();
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16, DType::kI64}) {
    for (const std::size_t large : {std::size_t{1000}, std::size_t{700001}}) {
      for (ReduceOp op : kOps) {
        const std::vector<std::size_t> counts = {0, 1, 13, large, 0, 70001, 2};
        std::vector<Tensor> tensors;
        for (std::size_t count : counts) {
          tensors.push_back(filled_periodic("part", dtype, count, comm.rank()));
        }
        comm.allreduce_coalesced_async(tensors, {.op = op})->wait();
        for (const Tensor& tensor : tensors) {
          expect_reduced_periodic(tensor, op, comm.size(),
                                  context_of("allreduce_coalesced", dtype, op,
                                             static_cast<std::size_t>(tensor.numel())));
        }
      }
    }
  }
  EXPECT_THROW(comm.allreduce_coalesced_async({}), UsageError);
  EXPECT_THROW(comm.allreduce_coalesced_async({Tensor::allocate("a", DType::kF32, {1}),
                                               Tensor::allocate("b", DType::kF64, {1})}),
               UsageError);
}

// Shares of a stream: ceil(E / size) elements each, the last shorter or
// empty; stream index `index` of rank `rank` holds input_value(rank, index).
std::vector<Tensor> stream_of(DType dtype, const std::vector<std::size_t>& counts, int rank) {
  std::vector<Tensor> tensors;
  std::size_t first = 0;
  for (const std::size_t count : counts) {
    Tensor tensor = Tensor::allocate("part", dtype, {static_cast<std::int64_t>(count)});
    for (std::size_t i = 0; i < count; ++i) {
      set_element(tensor, i, input_value(rank, first + i, dtype));
    }
    tensors.push_back(tensor);
    first += count;
  }
  return tensors;
}

// Calls check(tensor, index in tensor, index in stream) for the elements of
// share `share` of the stream.
template <class Check>
void for_share(const std::vector<Tensor>& tensors, int share, int shares, const Check& check) {
  std::size_t total = 0;
  for (const Tensor& tensor : tensors) total += static_cast<std::size_t>(tensor.numel());
  const std::size_t length =
      (total + static_cast<std::size_t>(shares) - 1) / static_cast<std::size_t>(shares);
  const std::size_t begin = std::min(total, static_cast<std::size_t>(share) * length);
  const std::size_t end = std::min(total, begin + length);
  std::size_t first = 0;
  for (const Tensor& tensor : tensors) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(tensor.numel()); ++i) {
      if (first + i >= begin && first + i < end) check(tensor, i, first + i);
    }
    first += static_cast<std::size_t>(tensor.numel());
  }
}

// Streams below and above the size where the ring takes over, with empty
// tensors and totals that no rank count divides; shares empty on some ranks.
const std::vector<std::vector<std::size_t>> kStreams = {
    {0}, {1}, {2, 0, 1}, {13, 0, 101, 7}, {300007, 0, 1, 77777}, {5, 262147}};

TEST(Communicator, ReduceScatterStreamLeavesEachRankItsShare) {
  Communicator& comm = default_segments();
  ASSERT_TRUE(comm.has_stream_shares());
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      for (const auto& counts : kStreams) {
        std::vector<Tensor> tensors = stream_of(dtype, counts, comm.rank());
        comm.reduce_scatter_stream_async(tensors, {.op = op})->wait();
        bool failed = false;
        for_share(tensors, comm.rank(), comm.size(),
                  [&](const Tensor& tensor, std::size_t i, std::size_t index) {
                    const double expected = reference(op, dtype, index, comm.size());
                    const double tolerance =
                        op == ReduceOp::kAvg ? precision(dtype) * std::max(1.0, std::abs(expected))
                                             : 0;
                    if (!failed && std::abs(element(tensor, i) - expected) > tolerance) {
                      failed = true;
                      ADD_FAILURE() << context_of("reduce_scatter_stream", dtype, op, index)
                                    << ": stream element " << index << " is " << element(tensor, i)
                                    << ", expected " << expected;
                    }
                  });
      }
    }
  }
}

TEST(Communicator, AllgatherStreamBringsEveryShareEverywhere) {
  Communicator& comm = default_segments();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64}) {
    for (const auto& counts : kStreams) {
      // Every rank holds its own values in its share and garbage elsewhere.
      std::vector<Tensor> tensors = stream_of(dtype, counts, comm.rank() + 100);
      for_share(tensors, comm.rank(), comm.size(),
                [&](const Tensor& tensor, std::size_t i, std::size_t index) {
                  set_element(const_cast<Tensor&>(tensor), i,
                              input_value(comm.rank(), index, dtype));
                });
      comm.allgather_stream_async(tensors)->wait();
      for (int share = 0; share < comm.size(); ++share) {
        bool failed = false;
        for_share(tensors, share, comm.size(),
                  [&](const Tensor& tensor, std::size_t i, std::size_t index) {
                    const double expected = input_value(share, index, dtype);
                    if (!failed && element(tensor, i) != expected) {
                      failed = true;
                      ADD_FAILURE() << "allgather_stream " << dtype_name(dtype) << ": element "
                                    << index << " (share " << share << ") is " << element(tensor, i)
                                    << ", expected " << expected;
                    }
                  });
      }
    }
  }
  EXPECT_THROW(comm.allgather_stream_async({}), UsageError);
}

// Blocks large enough for the ring: the reduce-scatter leaves its input as
// it was unless told it is scratch, and an all-gather may take its input
// from its own block of the output.
TEST(Communicator, LargeReduceScatterAndInPlaceAllgather) {
  Communicator& comm = default_segments();
  const auto size = static_cast<std::size_t>(comm.size());
  constexpr std::size_t kBlock = 300007;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    const Tensor input = filled_periodic("in", DType::kF32, kBlock * size, comm.rank());
    const Tensor before = filled_periodic("copy", DType::kF32, kBlock * size, comm.rank());
    Tensor output = Tensor::allocate("out", DType::kF32, {static_cast<std::int64_t>(kBlock)});
    comm.reduce_scatter(input, output, {.op = op});
    EXPECT_EQ(std::memcmp(input.data(), before.data(), input.nbytes()), 0)
        << "reduce_scatter changed its input";
    const auto rank = static_cast<std::size_t>(comm.rank());
    for (std::size_t i = 0; i < kBlock; i += 997) {
      const double value = reference(op, DType::kF32, (rank * kBlock + i) % kPeriod, comm.size());
      ASSERT_NEAR(element(output, i), value, 1e-6 * std::max(1.0, std::abs(value)))
          << reduce_op_name(op) << " element " << i;
    }
  }
  Tensor whole = Tensor::allocate("whole", DType::kF32, {static_cast<std::int64_t>(kBlock * size)});
  const auto pattern = [](std::size_t rank, std::size_t i) {
    return static_cast<double>(rank * 1000 + i % 100);
  };
  const auto rank = static_cast<std::size_t>(comm.rank());
  Tensor mine = whole.view("mine", rank * kBlock * sizeof(float), DType::kF32,
                           {static_cast<std::int64_t>(kBlock)});
  for (std::size_t i = 0; i < kBlock; ++i) set_element(mine, i, pattern(rank, i));
  comm.allgather(mine, whole);
  for (std::size_t r = 0; r < size; ++r) {
    for (std::size_t i = 0; i < kBlock; i += 101) {
      ASSERT_EQ(element(whole, r * kBlock + i), pattern(r, i)) << "block " << r << " element " << i;
    }
  }
}

TEST(Communicator, NonBlockingOperationsFinishInAnyWaitOrder) {
  Communicator& comm = small_segments();
  constexpr std::size_t kCount = 1000;
  for (int round = 0; round < 3; ++round) {
    std::vector<Tensor> tensors;
    std::vector<std::shared_ptr<Work>> works;
    for (int i = 0; i < 6; ++i) {
      tensors.push_back(filled("t" + std::to_string(i), DType::kF32,
                               kCount + static_cast<std::size_t>(i), comm.rank()));
      works.push_back(comm.allreduce_async(tensors.back(), {.op = ReduceOp::kSum}));
    }
    Tensor gathered = Tensor::allocate("g", DType::kI32, {comm.size()});
    Tensor mine = Tensor::allocate("m", DType::kI32, {1});
    mine.data_as<std::int32_t>()[0] = comm.rank();
    works.push_back(comm.allgather_async(mine, gathered));
    works.push_back(comm.barrier_async());
    // Sequence numbers follow the issue order.
    for (std::size_t i = 1; i < works.size(); ++i) {
      EXPECT_EQ(works[i]->sequence_number(), works[i - 1]->sequence_number() + 1);
    }
    // Wait in reverse on round 0, by polling test() on round 1, rotated on round 2.
    std::vector<std::size_t> order(works.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (round == 0) std::reverse(order.begin(), order.end());
    if (round == 2) std::rotate(order.begin(), order.begin() + 3, order.end());
    for (std::size_t index : order) {
      if (round == 1) {
        while (!works[index]->test()) std::this_thread::yield();
      } else {
        works[index]->wait(std::chrono::seconds(60));
      }
    }
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      expect_reduced(tensors[i], ReduceOp::kSum, 0, comm.size(),
                     "async allreduce " + std::to_string(i));
      EXPECT_TRUE(works[i]->test());
    }
    for (int rank = 0; rank < comm.size(); ++rank) {
      EXPECT_EQ(gathered.data_as<std::int32_t>()[rank], rank);
    }
  }
}

TEST(Communicator, WaitWithTimeoutThrowsAndTheOperationStillFinishes) {
  Communicator& comm = small_segments();
  if (comm.size() < 2) GTEST_SKIP() << "needs two ranks";
  if (comm.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto work = comm.barrier_async();
  if (comm.rank() == 0) {
    EXPECT_THROW(work->wait(std::chrono::milliseconds(50)), TimeoutError);
  }
  work->wait();
  EXPECT_TRUE(work->test());
}

TEST(Communicator, RejectsWhatItCannotDo) {
  Communicator& comm = small_segments();
  EXPECT_EQ(comm.backend_name(), "mpi");
  float value = 1;
  Tensor on_gpu = Tensor::borrow("on_gpu", &value, DType::kF32, {1}, Device::cuda(0));
  try {
    comm.allreduce(on_gpu);
    ADD_FAILURE() << "an allreduce of a CUDA tensor on the mpi backend did not throw";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("backend mpi does not support"), std::string::npos)
        << error.what();
  }
  Tensor input = Tensor::allocate("in", DType::kF32, {3});
  Tensor wrong = Tensor::allocate("out", DType::kF32, {3});
  if (comm.size() > 1) {
    EXPECT_THROW(comm.allgather(input, wrong), UsageError);
  }
  EXPECT_THROW(comm.broadcast(input, {.root = comm.size()}), UsageError);
}

TEST(Communicator, ExchangesMetadata) {
  Communicator& comm = small_segments();
  const std::vector<std::string> all =
      comm.exchange_metadata(std::string(static_cast<std::size_t>(comm.rank()), 'x'));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(comm.size()));
  for (int rank = 0; rank < comm.size(); ++rank) {
    EXPECT_EQ(all[static_cast<std::size_t>(rank)],
              std::string(static_cast<std::size_t>(rank), 'x'));
  }
}

}  // namespace
}  // namespace lockstep
