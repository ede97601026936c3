// Sharded state in checkpoints: chunks saved at one world size restore at
// another, into chunks cut differently or into whole tensors, and whole
// tensors restore into chunks. One job of 8 ranks runs every pair of world
// sizes on sub-communicators.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lockstep/checkpointer.h>
#include <lockstep/shard.h>

#include "checkpoint_test_util.h"
#include "mpi_test.h"

namespace lockstep {
namespace {

using testing::fill;
using testing::runtime;

// The first `ranks` ranks of the job; MPI_COMM_NULL on the others.
class SubComm {
 public:
  explicit SubComm(int ranks) {
    const int color = runtime().rank() < ranks ? 0 : MPI_UNDEFINED;
    MPI_Comm_split(runtime().comm(), color, runtime().rank(), &comm_);
  }
  ~SubComm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  SubComm(const SubComm&) = delete;
  SubComm& operator=(const SubComm&) = delete;
  MPI_Comm get() const { return comm_; }
  bool member() const { return comm_ != MPI_COMM_NULL; }
  int rank() const {
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    return rank;
  }
  int size() const {
    int size = 0;
    MPI_Comm_size(comm_, &size);
    return size;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

struct Global {
  std::string name;
  DType dtype;
  Shape shape;
};

// Awkward sizes: empty tensors, one element, sizes no world size divides.
const std::vector<Global> kGlobals = {
    {"embed", DType::kF32, {97, 31}}, {"empty", DType::kF32, {0}},
    {"bias", DType::kF32, {1}},       {"scale", DType::kBF16, {129}},
    {"proj", DType::kF64, {7, 73}},   {"hollow", DType::kF64, {4, 0, 3}},
    {"head", DType::kF32, {1021}},
};

// The whole tensors with the values of `seed`.
std::vector<Tensor> whole_tensors(std::uint64_t seed) {
  std::vector<Tensor> tensors;
  for (const Global& global : kGlobals) {
    tensors.push_back(Tensor::allocate(global.name, global.dtype, global.shape));
    fill(tensors.back(), seed);
  }
  return tensors;
}

// Rank `rank` of `ranks`' chunks, cut as ShardedGradSync cuts a stream: the
// tensors back to back (plus `skew` elements of nothing in front, so that
// layouts differ), in shares of ceil(total / ranks). With `values`, each
// chunk holds that whole tensor's elements; else zeros.
std::vector<ShardChunk> chunks_of(int rank, int ranks, std::int64_t skew,
                                  const std::vector<Tensor>* values) {
  std::int64_t total = skew;
  for (const Global& global : kGlobals) total += checked_numel(global.shape, global.name);
  const std::int64_t share = (total + ranks - 1) / ranks;
  const std::int64_t low = std::min(total, rank * share);
  const std::int64_t high = std::min(total, low + share);
  std::vector<ShardChunk> chunks;
  std::int64_t offset = skew;
  for (std::size_t t = 0; t < kGlobals.size(); ++t) {
    const Global& global = kGlobals[t];
    const std::int64_t numel = checked_numel(global.shape, global.name);
    const std::int64_t first = std::clamp(low, offset, offset + numel);
    const std::int64_t last = std::clamp(high, offset, offset + numel);
    ShardChunk chunk{.local = Tensor::allocate(global.name, global.dtype, {last - first}),
                     .global_shape = global.shape,
                     .begin = first - offset};
    if (values != nullptr) {
      const std::size_t element = dtype_size(global.dtype);
      std::memcpy(chunk.local.data(),
                  static_cast<const char*>((*values)[t].data()) +
                      static_cast<std::size_t>(chunk.begin) * element,
                  chunk.local.nbytes());
    }
    chunks.push_back(std::move(chunk));
    offset += numel;
  }
  return chunks;
}

// Names the first chunk that does not hold the whole tensors' elements.
std::string chunk_mismatch(const std::vector<ShardChunk>& chunks,
                           const std::vector<Tensor>& whole) {
  for (std::size_t t = 0; t < chunks.size(); ++t) {
    const std::size_t element = dtype_size(whole[t].dtype());
    if (std::memcmp(chunks[t].local.data(),
                    static_cast<const char*>(whole[t].data()) +
                        static_cast<std::size_t>(chunks[t].begin) * element,
                    chunks[t].local.nbytes()) != 0) {
      return fmt::format("{} [{}, +{})", chunks[t].local.name(), chunks[t].begin,
                         chunks[t].local.numel());
    }
  }
  return {};
}

std::string whole_mismatch(const std::vector<Tensor>& restored, const std::vector<Tensor>& whole) {
  for (std::size_t t = 0; t < restored.size(); ++t) {
    if (std::memcmp(restored[t].data(), whole[t].data(), whole[t].nbytes()) != 0) {
      return restored[t].name();
    }
  }
  return {};
}

std::filesystem::path shared_dir(const std::string& name) {
  const auto dir = runtime().run_dir() / "checkpoint-sharded" / name;
  if (runtime().rank() == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(runtime().comm());
  return dir;
}

// Saves step 7 at `saved` ranks (chunks, or whole tensors), then restores at
// `loaded` ranks into chunks cut another way, or into whole tensors.
void round_trip(int saved, int loaded, bool save_sharded, bool load_sharded) {
  const auto dir = shared_dir(
      fmt::format("{}{}-{}{}", saved, save_sharded ? "s" : "w", loaded, load_sharded ? "s" : "w"));
  const std::vector<Tensor> whole = whole_tensors(42);
  KeyValues data = {{"next_step", 8}};
  {
    SubComm comm(saved);
    if (comm.member()) {
      Checkpointer checkpointer(comm.get(), {.dir = dir, .async = true});
      State state;
      state.add({"data", data});
      if (save_sharded) {
        state.add({"optim.m", chunks_of(comm.rank(), comm.size(), 0, &whole)});
      } else {
        state.add({"optim.m", whole});
      }
      checkpointer.save(7, state);
      checkpointer.wait();
    }
  }
  MPI_Barrier(runtime().comm());
  SubComm comm(loaded);
  if (!comm.member()) return;
  Checkpointer checkpointer(comm.get(), {.dir = dir});
  KeyValues restored_data;
  State state;
  state.add({"data", restored_data});
  std::vector<ShardChunk> chunks;
  std::vector<Tensor> tensors;
  if (load_sharded) {
    chunks = chunks_of(comm.rank(), comm.size(), 5, nullptr);
    state.add({"optim.m", chunks});
  } else {
    tensors = whole_tensors(1);
    state.add({"optim.m", tensors});
  }
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(7));
  EXPECT_EQ(restored_data, data);
  const std::string wrong =
      load_sharded ? chunk_mismatch(chunks, whole) : whole_mismatch(tensors, whole);
  EXPECT_EQ(wrong, "") << "saved at " << saved << " ranks, restored at " << loaded << " on rank "
                       << comm.rank();
}

TEST(ShardedCheckpoint, ChunksRestoreAtOtherWorldSizesIntoOtherChunks) {
  ASSERT_GE(runtime().world_size(), 8) << "run under mpiexec -n 8";
  for (const auto& [saved, loaded] :
       std::vector<std::pair<int, int>>{{4, 1}, {4, 3}, {4, 5}, {3, 8}, {2, 4}, {4, 2}, {4, 4}}) {
    round_trip(saved, loaded, true, true);
  }
}

TEST(ShardedCheckpoint, ChunksRestoreIntoWholeTensorsAndBack) {
  ASSERT_GE(runtime().world_size(), 8);
  round_trip(4, 1, true, false);  // consolidation on one process
  round_trip(4, 3, true, false);
  round_trip(4, 3, false, true);  // a replicated checkpoint into a sharded run
  round_trip(1, 8, false, true);
}

// Rank 0 restores whole tensors while the others restore chunks (rank 0
// holds every element, so the chunks need not cover anything): a mix of
// the two in one restore loads, and no rank waits for another.
TEST(ShardedCheckpoint, OneRankWholeTheOthersChunks) {
  const auto dir = shared_dir("mixed");
  const std::vector<Tensor> whole = whole_tensors(11);
  Checkpointer checkpointer(runtime().comm(), {.dir = dir, .async = false});
  State saved{{"optim.m", chunks_of(runtime().rank(), runtime().world_size(), 0, &whole)}};
  checkpointer.save(3, saved);
  std::vector<Tensor> tensors;
  std::vector<ShardChunk> chunks;
  State state;
  if (runtime().rank() == 0) {
    tensors = whole_tensors(1);
    state.add({"optim.m", tensors});
  } else {
    chunks = chunks_of(runtime().rank() - 1, runtime().world_size() - 1, 3, nullptr);
    state.add({"optim.m", chunks});
  }
  checkpointer.restore(3, state);
  EXPECT_EQ(runtime().rank() == 0 ? whole_mismatch(tensors, whole) : chunk_mismatch(chunks, whole),
            "");
}

// Flips one bit of element `element` of tensor `path`'s piece that starts
// in `file`, found through the step's metadata.
void flip_in_piece(const std::filesystem::path& step_dir, const std::string& path, int file,
                   std::int64_t element) {
  const auto metadata = nlohmann::json::parse(std::ifstream(step_dir / "metadata.json"));
  for (const auto& tensor : metadata.at("tensors")) {
    if (tensor.at("path") != path) continue;
    for (const auto& piece : tensor.at("pieces")) {
      if (piece.at("file") != file) continue;
      ASSERT_LT(element, piece.at("count").get<std::int64_t>());
      const auto at = piece.at("offset").get<std::int64_t>() + element * 4;
      std::fstream data(step_dir / fmt::format("rank-{:05d}.h5", file),
                        std::ios::in | std::ios::out | std::ios::binary);
      data.seekg(at);
      const char byte = static_cast<char>(data.get());
      data.seekp(at);
      data.put(static_cast<char>(byte ^ 0x10));
      return;
    }
  }
  FAIL() << "no piece of " << path << " in file " << file;
}

// A flipped bit in a piece that lies inside a chunk (read straight into
// it) and in one that reaches beyond a chunk (read into scratch): each
// step is skipped with a warning naming the tensor, the restore falls back
// to the intact step, and restoring a damaged step by number says so.
TEST(ShardedCheckpoint, FlippedBitsInChunksFallBackToTheIntactStep) {
  const auto dir = shared_dir("flipped");
  {
    SubComm comm(4);
    if (comm.member()) {
      Checkpointer checkpointer(comm.get(), {.dir = dir, .async = false});
      for (const std::int64_t step : {1, 2, 3}) {
        const std::vector<Tensor> whole = whole_tensors(static_cast<std::uint64_t>(step));
        checkpointer.save(step, State{{"optim.m", chunks_of(comm.rank(), 4, 0, &whole)}});
      }
    }
  }
  if (runtime().rank() == 0) {
    // At 3 ranks (skew 5), rank 0's chunk of "embed" holds saved piece 0
    // whole and part of piece 1.
    flip_in_piece(dir / "step-3", "optim.m/embed", 0, 100);
    flip_in_piece(dir / "step-2", "optim.m/embed", 1, 100);
  }
  MPI_Barrier(runtime().comm());
  SubComm comm(3);
  if (!comm.member()) return;
  Checkpointer checkpointer(comm.get(), {.dir = dir});
  std::vector<ShardChunk> chunks = chunks_of(comm.rank(), 3, 5, nullptr);
  State state{{"optim.m", chunks}};
  ASSERT_EQ(checkpointer.restore_latest(state), std::optional<std::int64_t>(1));
  EXPECT_EQ(chunk_mismatch(chunks, whole_tensors(1)), "");
  ASSERT_EQ(checkpointer.skipped_checkpoints().size(), 2U);
  for (const std::string& warning : checkpointer.skipped_checkpoints()) {
    EXPECT_NE(warning.find("checksum mismatch in tensor 'optim.m/embed'"), std::string::npos)
        << warning;
  }
  for (const std::int64_t step : {2, 3}) {
    try {
      checkpointer.restore(step, state);
      ADD_FAILURE() << "step " << step << " restored despite a flipped bit";
    } catch (const IoError& error) {
      EXPECT_NE(std::string(error.what()).find("checksum mismatch"), std::string::npos)
          << error.what();
    }
  }
}

// Every rank of the job saves chunks cut by `cut`; the save must fail on
// every rank with a message holding `needle`, and commit nothing.
template <class Cut>
void expect_refused_save(const std::string& name, const Cut& cut, const std::string& needle) {
  const auto dir = shared_dir(name);
  Checkpointer checkpointer(runtime().comm(), {.dir = dir, .async = false});
  const std::vector<Tensor> whole = whole_tensors(3);
  std::vector<ShardChunk> chunks = chunks_of(runtime().rank(), runtime().world_size(), 0, &whole);
  cut(chunks);
  State state{{"optim.m", chunks}};
  try {
    checkpointer.save(1, state);
    ADD_FAILURE() << "the save was accepted; expected: " << needle;
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
  }
  EXPECT_TRUE(checkpointer.committed_steps().empty());
}

TEST(ShardedCheckpoint, OverlapsHolesAndStrayChunksAreRefusedAtSave) {
  const int last = runtime().world_size() - 1;
  // Rank 1 also claims the first element of "head", which rank 0 or another
  // rank already holds.
  expect_refused_save(
      "overlap",
      [&](std::vector<ShardChunk>& chunks) {
        if (runtime().rank() == 1) {
          chunks[6] = {.local = Tensor::allocate("head", DType::kF32, {1}),
                       .global_shape = {1021},
                       .begin = 0};
        }
      },
      "the chunks of tensor 'optim.m/head' overlap");
  // The last rank drops its chunk of "head": its tail belongs to no rank.
  expect_refused_save(
      "hole",
      [&](std::vector<ShardChunk>& chunks) {
        if (runtime().rank() == last) {
          chunks[6] = {.local = Tensor::allocate("head", DType::kF32, {0}),
                       .global_shape = {1021},
                       .begin = 0};
        }
      },
      "the chunks of tensor 'optim.m/head' leave elements");
  expect_refused_save(
      "outside",
      [&](std::vector<ShardChunk>& chunks) {
        chunks[2] = {
            .local = Tensor::allocate("bias", DType::kF32, {2}), .global_shape = {1}, .begin = 0};
      },
      "outside its global shape");
  // Ranks that disagree on a global shape.
  expect_refused_save(
      "shape",
      [&](std::vector<ShardChunk>& chunks) {
        if (runtime().rank() == 0) chunks[0].global_shape = {31, 97};
      },
      "the ranks passed different steps or states");
}

TEST(ShardedCheckpoint, ChunksThatDoNotCoverATensorAreRefusedAtRestore) {
  const auto dir = shared_dir("uncovered");
  const std::vector<Tensor> whole = whole_tensors(9);
  Checkpointer checkpointer(runtime().comm(), {.dir = dir, .async = false});
  std::vector<ShardChunk> chunks = chunks_of(runtime().rank(), runtime().world_size(), 0, &whole);
  State saved{{"optim.m", chunks}};
  checkpointer.save(2, saved);
  std::vector<ShardChunk> targets = chunks_of(runtime().rank(), runtime().world_size(), 0, nullptr);
  if (runtime().rank() == 0) {
    targets[0] = {
        .local = Tensor::allocate("embed", DType::kF32, {0}), .global_shape = {97, 31}, .begin = 0};
  }
  State state{{"optim.m", targets}};
  try {
    checkpointer.restore(2, state);
    ADD_FAILURE() << "a restore into chunks with a hole was accepted";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what())
                  .find("chunks of tensor 'optim.m/embed' (f32[97, 31]) "
                        "leave elements [0, "),
              std::string::npos)
        << error.what();
  }
  // Another global shape: the message names the tensor and both shapes.
  std::vector<ShardChunk> reshaped =
      chunks_of(runtime().rank(), runtime().world_size(), 0, nullptr);
  reshaped[4].global_shape = {73, 7};
  State other{{"optim.m", reshaped}};
  try {
    checkpointer.restore(2, other);
    ADD_FAILURE() << "a restore into another global shape was accepted";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("tensor 'optim.m/proj' does not match"),
              std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("f64[73, 7]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("f64[7, 73]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace lockstep
