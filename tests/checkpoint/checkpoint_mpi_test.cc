// Multi-rank tests of saving and restoring: every dtype and awkward shapes,
// asynchronous snapshots, resharding, corruption fallback, retention, the
// order of asynchronous commits, and errors for bad input.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <lockstep/checkpoint_policy.h>

#include "checkpoint_test_util.h"
#include "crc32c.h"
#include "fault_injection_env.h"
#include "layout.h"
#include "metadata.h"
#include "restore.h"

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;

MPI_Comm world() { return runtime().comm(); }
int world_rank() { return runtime().rank(); }
int world_size() { return runtime().world_size(); }

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(no error)";
}

void round_trip(bool async) {
  const auto dir = fresh_dir(async ? "round-trip-async" : "round-trip-sync", world());
  TestModel saved = every_dtype_model();
  saved.fill_all(7);
  {
    Checkpointer checkpointer(world(), {.dir = dir, .async = async});
    auto state = saved.state();
    checkpointer.save(3, state);
    // The snapshot was taken when save() returned: later changes are not saved.
    saved.fill_all(8);
    checkpointer.wait();
    EXPECT_EQ(checkpointer.last_save_stats().step, 3);
    EXPECT_GT(checkpointer.last_save_stats().bytes_written, 0U);
  }
  TestModel loaded = every_dtype_model();
  Checkpointer checkpointer(world(), {.dir = dir});
  auto state = loaded.state();
  EXPECT_EQ(checkpointer.restore_latest(state), 3);
  EXPECT_EQ(loaded.mismatch(7), "");
  EXPECT_TRUE(checkpointer.skipped_checkpoints().empty());
}

TEST(CheckpointRoundTrip, EveryDtypeAndShapeSynchronously) { round_trip(false); }
TEST(CheckpointRoundTrip, EveryDtypeAndShapeAsynchronously) { round_trip(true); }

TEST(CheckpointRoundTrip, NothingToRestoreGivesNullopt) {
  const auto dir = fresh_dir("empty", world());
  Checkpointer checkpointer(world(), {.dir = dir});
  TestModel model = every_dtype_model();
  auto state = model.state();
  EXPECT_EQ(checkpointer.restore_latest(state), std::nullopt);
}

// Large enough that the staging copy (a rank's share) and the restore (the
// whole state) are split over several threads; the bytes must come out the
// same, and a change after save() returned must not reach the checkpoint.
TEST(CheckpointRoundTrip, SeveralCopyThreadsMoveEveryByte) {
  const auto dir = fresh_dir("copy-threads", world());
  const auto big_model = [] {
    TestModel state;
    state.model.push_back(Tensor::allocate("weight", DType::kF32, {12 << 20}));
    state.model.push_back(Tensor::allocate("bias", DType::kF32, {4097}));
    state.optim.push_back(Tensor::allocate("exp_avg", DType::kBF16, {8 << 20}));
    state.optim.push_back(Tensor::allocate("odd", DType::kU8, {12345}));
    return state;
  };
  {
    TestModel saved = big_model();
    saved.fill_all(11);
    Checkpointer checkpointer(world(), {.dir = dir, .async = true, .copy_threads = 3});
    checkpointer.save(1, saved.state());
    saved.fill_all(12);
    checkpointer.wait();
  }
  TestModel loaded = big_model();
  Checkpointer checkpointer(world(), {.dir = dir, .copy_threads = 3});
  auto state = loaded.state();
  EXPECT_EQ(checkpointer.restore_latest(state), 1);
  EXPECT_EQ(loaded.mismatch(11), "");
}

TEST(CheckpointErrors, NegativeCopyThreadsAreRefused) {
  EXPECT_THROW(Checkpointer(world(), {.dir = fresh_dir("threads", world()), .copy_threads = -1}),
               UsageError);
}

// The first `ranks` ranks of the world, or MPI_COMM_NULL on the others.
MpiComm first_ranks(int ranks) {
  return MpiComm::split(world(), world_rank() < ranks ? 0 : MPI_UNDEFINED, world_rank());
}

// Flips one bit in the middle of `path`.
void flip_byte(const fs::path& path) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto middle = static_cast<std::streamoff>(fs::file_size(path) / 2);
  file.seekg(middle);
  const char byte = static_cast<char>(file.get());
  file.seekp(middle);
  file.put(static_cast<char>(byte ^ 0x01));
}

// Ranks on one node each read every file; across nodes the readers
// broadcast. Both must give every rank the whole state. A truncated file
// is found before anything is written; a checksum mismatch is found while
// one node's ranks fill their tensors (and says so), before the broadcast
// across nodes (which leaves the tensors untouched).
TEST(CheckpointRoundTrip, BothExchangesFillEveryRankAndReportDamage) {
  const auto dir = fresh_dir("exchanges", world());
  {
    TestModel model = large_model();
    Checkpointer checkpointer(world(), {.dir = dir, .async = false});
    for (const std::int64_t step : {1, 2, 3}) {
      model.fill_all(static_cast<std::uint64_t>(step) + 3);
      checkpointer.save(step, model.state());
    }
  }
  const auto last_file = fmt::format("rank-{:05d}.h5", world_size() - 1);
  if (world_rank() == 0) {
    flip_byte(dir / "step-2" / last_file);
    fs::resize_file(dir / "step-3" / last_file, fs::file_size(dir / "step-3" / last_file) / 2);
  }
  MPI_Barrier(world());
  for (const auto exchange : {checkpoint::Exchange::kReadAll, checkpoint::Exchange::kBroadcast}) {
    const auto restore = [&](std::int64_t step, State& state) {
      checkpoint::restore_step(*posix_file_env(), dir / fmt::format("step-{}", step), step, state,
                               world(), 1, exchange);
    };
    TestModel model = large_model();
    model.fill_all(5);
    auto state = model.state();
    restore(1, state);
    EXPECT_EQ(model.mismatch(4), "");

    model.fill_all(5);
    try {
      restore(3, state);
      ADD_FAILURE() << "a truncated file was restored";
    } catch (const checkpoint::CorruptCheckpoint& corrupt) {
      EXPECT_NE(std::string(corrupt.what()).find("truncated"), std::string::npos) << corrupt.what();
      EXPECT_FALSE(corrupt.state_modified());
    }
    EXPECT_EQ(model.mismatch(5), "");

    try {
      restore(2, state);
      ADD_FAILURE() << "a flipped byte was restored";
    } catch (const checkpoint::CorruptCheckpoint& corrupt) {
      EXPECT_NE(std::string(corrupt.what()).find("checksum mismatch"), std::string::npos)
          << corrupt.what();
      EXPECT_EQ(corrupt.state_modified(), exchange == checkpoint::Exchange::kReadAll);
    }
    if (exchange == checkpoint::Exchange::kBroadcast) {
      EXPECT_EQ(model.mismatch(5), "");
    }
  }
}

TEST(CheckpointResharding, LoadsAtEveryWorldSize) {
  std::vector<int> save_sizes = {world_size()};
  if (world_size() > 2) save_sizes.push_back(2);
  for (const int saved_at : save_sizes) {
    const auto dir = fresh_dir(fmt::format("reshard-from-{}", saved_at), world());
    {
      MpiComm savers = first_ranks(saved_at);
      if (savers.get() != MPI_COMM_NULL) {
        TestModel model = every_dtype_model();
        model.fill_all(static_cast<std::uint64_t>(saved_at));
        Checkpointer checkpointer(savers.get(), {.dir = dir, .async = false});
        checkpointer.save(saved_at, model.state());
      }
    }
    for (int loaded_at = 1; loaded_at <= world_size(); ++loaded_at) {
      MPI_Barrier(world());
      MpiComm loaders = first_ranks(loaded_at);
      if (loaders.get() == MPI_COMM_NULL) continue;
      TestModel model = every_dtype_model();
      Checkpointer checkpointer(loaders.get(), {.dir = dir});
      auto state = model.state();
      EXPECT_EQ(checkpointer.restore_latest(state), saved_at);
      EXPECT_EQ(model.mismatch(static_cast<std::uint64_t>(saved_at)), "")
          << "saved at " << saved_at << " ranks, loaded at " << loaded_at;
    }
  }
}

// Checkpoints written before the metadata recorded where each piece lies in
// its rank file restore as before: HDF5's headers say where.
TEST(CheckpointRoundTrip, StepsWithoutRecordedOffsetsStillLoad) {
  const auto dir = fresh_dir("no-offsets", world());
  TestModel model = every_dtype_model();
  model.fill_all(7);
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  checkpointer.save(7, model.state());
  if (world_rank() == 0) {
    const auto path = dir / "step-7" / "metadata.json";
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    checkpoint::Metadata metadata = checkpoint::parse_metadata(text, path.string());
    int recorded = 0;
    for (auto& tensor : metadata.tensors) {
      for (auto& piece : tensor.pieces) {
        recorded += piece.offset != checkpoint::Piece::kUnknownOffset ? 1 : 0;
        piece.offset = checkpoint::Piece::kUnknownOffset;
      }
    }
    EXPECT_GT(recorded, 0);
    const std::string rewritten = checkpoint::serialize(metadata);
    EXPECT_EQ(rewritten.find("\"offset\""), std::string::npos);
    std::ofstream(path, std::ios::trunc) << rewritten;
  }
  MPI_Barrier(world());
  for (const auto exchange : {checkpoint::Exchange::kReadAll, checkpoint::Exchange::kBroadcast}) {
    model.fill_all(8);
    auto state = model.state();
    checkpoint::restore_step(*posix_file_env(), dir / "step-7", 7, state, world(), 1, exchange);
    EXPECT_EQ(model.mismatch(7), "");
  }
}

// Saves steps 1 and 2 of large_model(), filled with 1 and 2, synchronously.
void save_steps_1_and_2(const fs::path& dir) {
  TestModel model = large_model();
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  model.fill_all(1);
  checkpointer.save(1, model.state());
  model.fill_all(2);
  checkpointer.save(2, model.state());
}

// Saves steps 1 and 2, damages step 2 with `damage` (run on rank 0), and
// expects restore_latest() to fall back to step 1 with a warning naming
// `expected_in_warning`. Restoring step 2 alone fails; it leaves the state
// as it was when `found_before_writing` (damage found before any tensor is
// written), and says that the state is partly overwritten otherwise.
void expect_fallback(const std::string& name, const std::function<void(const fs::path&)>& damage,
                     const std::string& expected_in_warning, bool found_before_writing) {
  const auto dir = fresh_dir(name, world());
  save_steps_1_and_2(dir);
  if (world_rank() == 0) damage(dir / "step-2");
  MPI_Barrier(world());

  TestModel model = large_model();
  model.fill_all(5);
  Checkpointer checkpointer(world(), {.dir = dir});
  auto state = model.state();
  const std::string error = error_of([&] { checkpointer.restore(2, state); });
  EXPECT_NE(error.find(expected_in_warning), std::string::npos) << error;
  if (found_before_writing) {
    EXPECT_EQ(model.mismatch(5), "");
    EXPECT_EQ(error.find("partly overwritten"), std::string::npos) << error;
  } else {
    EXPECT_NE(error.find("partly overwritten"), std::string::npos) << error;
  }
  EXPECT_EQ(checkpointer.restore_latest(state), 1);
  EXPECT_EQ(model.mismatch(1), "");
  ASSERT_EQ(checkpointer.skipped_checkpoints().size(), 1U);
  EXPECT_NE(checkpointer.skipped_checkpoints()[0].find(expected_in_warning), std::string::npos)
      << checkpointer.skipped_checkpoints()[0];
}

std::string last_rank_file() { return fmt::format("rank-{:05d}.h5", world_size() - 1); }

TEST(CheckpointVerification, OneFlippedByteFallsBackToTheOlderStep) {
  // All ranks of these tests share one node: the checksums are checked while
  // the tensors are filled.
  expect_fallback(
      "flipped-byte", [](const fs::path& step_dir) { flip_byte(step_dir / last_rank_file()); },
      last_rank_file(), false);
}

TEST(CheckpointVerification, TruncatedFileFallsBackToTheOlderStep) {
  expect_fallback(
      "truncated",
      [](const fs::path& step_dir) {
        const auto path = step_dir / last_rank_file();
        fs::resize_file(path, fs::file_size(path) / 2);
      },
      "truncated", true);
}

TEST(CheckpointVerification, MissingMetadataFallsBackToTheOlderStep) {
  expect_fallback(
      "no-metadata", [](const fs::path& step_dir) { fs::remove(step_dir / "metadata.json"); },
      "incomplete", true);
}

TEST(CheckpointVerification, MissingRankFileFallsBackToTheOlderStep) {
  expect_fallback(
      "no-rank-file", [](const fs::path& step_dir) { fs::remove(step_dir / last_rank_file()); },
      "missing", true);
}

// Rewrites metadata.json of `step_dir` changed by `edit`, with its checksum
// recomputed, as anyone who can write the file can do.
void edit_metadata(const fs::path& step_dir, const std::function<void(nlohmann::json&)>& edit) {
  const auto path = step_dir / "metadata.json";
  std::ifstream in(path);
  auto document = nlohmann::json::parse(in);
  document.erase("checksum");
  edit(document);
  const std::string body = document.dump();
  document["checksum"] = checkpoint::crc32c(std::as_bytes(std::span(body.data(), body.size())));
  std::ofstream(path, std::ios::trunc) << document.dump(1);
}

// Names read from disk are untrusted: a rank file named outside the step
// (relative or absolute), a tensor path that a save would refuse, and a
// step or file that is a symbolic link to elsewhere make the step corrupt,
// skipped with a warning, even when the bytes they lead to are intact.
TEST(CheckpointVerification, NamesOnDiskCannotLeadOutOfTheStep) {
  const auto moved_out = [](const fs::path& step_dir, const std::string& to) {
    const auto outside = step_dir.parent_path().parent_path() / "outside";
    fs::create_directories(outside);
    fs::rename(step_dir / last_rank_file(), outside / to);
    return outside / to;
  };
  const auto rank_index = [] { return static_cast<std::size_t>(world_size() - 1); };
  expect_fallback(
      "name-relative",
      [&](const fs::path& step_dir) {
        moved_out(step_dir, last_rank_file());
        edit_metadata(step_dir, [&](nlohmann::json& metadata) {
          metadata["rank_files"][rank_index()]["name"] = "../../outside/" + last_rank_file();
        });
      },
      "is named '../../outside/", true);
  expect_fallback(
      "name-absolute",
      [&](const fs::path& step_dir) {
        const auto target = moved_out(step_dir, "absolute.h5");
        edit_metadata(step_dir, [&](nlohmann::json& metadata) {
          metadata["rank_files"][rank_index()]["name"] = target.string();
        });
      },
      "absolute.h5', expected", true);
  expect_fallback(
      "tensor-path",
      [&](const fs::path& step_dir) {
        edit_metadata(step_dir, [&](nlohmann::json& metadata) {
          for (auto& tensor : metadata["tensors"]) {
            if (tensor["path"] == "model/weight") tensor["path"] = "model/../model/weight";
          }
        });
      },
      "would leave its place in the checkpoint", true);
  expect_fallback(
      "rank-file-link",
      [&](const fs::path& step_dir) {
        const auto target = moved_out(step_dir, last_rank_file());
        fs::create_symlink(target, step_dir / last_rank_file());
      },
      "is a symbolic link", true);
  expect_fallback(
      "step-link",
      [&](const fs::path& step_dir) {
        const auto outside = step_dir.parent_path().parent_path() / "outside-step-2";
        fs::remove_all(outside);
        fs::rename(step_dir, outside);
        fs::create_directory_symlink(outside, step_dir);
      },
      "is a symbolic link", true);
}

// With nothing left to fall back on, a state that holds bytes of a damaged
// checkpoint must not pass for a fresh one: restore_latest() throws, naming
// every skipped step. Damage found before writing still gives nullopt.
TEST(CheckpointVerification, NoIntactStepAfterAWrittenStateIsAnError) {
  const auto dir = fresh_dir("nothing-intact", world());
  save_steps_1_and_2(dir);
  if (world_rank() == 0) {
    const auto path = dir / "step-1" / last_rank_file();
    fs::resize_file(path, fs::file_size(path) / 2);
  }
  MPI_Barrier(world());
  {
    // Only step 1 is damaged, and before anything is written: step 2 loads.
    TestModel model = large_model();
    Checkpointer checkpointer(world(), {.dir = dir});
    auto state = model.state();
    EXPECT_EQ(checkpointer.restore_latest(state), 2);
  }
  if (world_rank() == 0) fs::remove(dir / "step-2" / last_rank_file());
  MPI_Barrier(world());
  {
    TestModel model = large_model();
    model.fill_all(5);
    Checkpointer checkpointer(world(), {.dir = dir});
    auto state = model.state();
    EXPECT_EQ(checkpointer.restore_latest(state), std::nullopt);
    EXPECT_EQ(checkpointer.skipped_checkpoints().size(), 2U);
    EXPECT_EQ(model.mismatch(5), "");
  }
  const auto fresh = fresh_dir("nothing-intact-flipped", world());
  save_steps_1_and_2(fresh);
  if (world_rank() == 0) {
    flip_byte(fresh / "step-2" / last_rank_file());
    fs::remove(fresh / "step-1" / last_rank_file());
  }
  MPI_Barrier(world());
  TestModel model = large_model();
  Checkpointer checkpointer(world(), {.dir = fresh});
  auto state = model.state();
  const std::string error = error_of([&] { checkpointer.restore_latest(state); });
  EXPECT_NE(error.find("no checkpoint in"), std::string::npos) << error;
  EXPECT_NE(error.find("step 2 failed a check after part of it"), std::string::npos) << error;
  EXPECT_NE(error.find("checkpoint of step 1"), std::string::npos) << error;
  EXPECT_NE(error.find("move the damaged steps out"), std::string::npos) << error;
}

TEST(CheckpointRetention, KeepsTheNewestKByStepNumber) {
  const auto dir = fresh_dir("retention", world());
  TestModel model = large_model();
  Checkpointer checkpointer(world(), {.dir = dir, .keep_last = 2, .async = true});
  for (const std::int64_t step : {9, 10, 100}) {
    model.fill_all(static_cast<std::uint64_t>(step));
    checkpointer.save(step, model.state());
  }
  checkpointer.wait();
  EXPECT_EQ(checkpointer.committed_steps(), steps({10, 100}));
  if (world_rank() == 0) {
    EXPECT_EQ(directory_entries(dir), (std::vector<std::string>{"step-10", "step-100"}));
  }
  auto state = model.state();
  EXPECT_EQ(checkpointer.restore_latest(state), 100);
  EXPECT_EQ(model.mismatch(100), "");
}

TEST(CheckpointRetention, AlsoKeepsEveryMthStep) {
  const auto dir = fresh_dir("retention-every", world());
  TestModel model = large_model();
  Checkpointer checkpointer(world(),
                            {.dir = dir, .keep_last = 1, .keep_every = 10, .async = false});
  for (const std::int64_t step : {5, 10, 15, 20, 25}) checkpointer.save(step, model.state());
  // Dropped steps are out of every rank's sight when a synchronous save
  // returns; their files go in the background, finished by wait().
  EXPECT_EQ(checkpointer.committed_steps(), steps({10, 20, 25}));
  checkpointer.wait();
  if (world_rank() == 0) {
    EXPECT_EQ(directory_entries(dir), (std::vector<std::string>{"step-10", "step-20", "step-25"}));
  }
}

TEST(CheckpointRetention, SavingAStepAgainReplacesIt) {
  const auto dir = fresh_dir("save-again", world());
  TestModel model = large_model();
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  model.fill_all(1);
  checkpointer.save(4, model.state());
  model.fill_all(2);
  checkpointer.save(4, model.state());
  EXPECT_EQ(checkpointer.committed_steps(), steps({4}));
  model.fill_all(3);
  auto state = model.state();
  EXPECT_EQ(checkpointer.restore_latest(state), 4);
  EXPECT_EQ(model.mismatch(2), "");
}

TEST(CheckpointAsync, StepNPlusOneCannotCommitBeforeStepN) {
  const auto dir = fresh_dir("async-order", world());
  auto env = std::make_shared<FaultInjectionEnv>();
  // Slow writes keep step 1 in flight when step 2 is requested.
  env->set_append_delay(std::chrono::milliseconds(100));
  TestModel model = large_model();
  Checkpointer checkpointer(world(), {.dir = dir, .async = true, .env = env});
  model.fill_all(1);
  checkpointer.save(1, model.state());
  model.fill_all(2);
  checkpointer.save(2, model.state());
  // save(2) returned, so step 1 is committed already; step 2 may still be in flight.
  EXPECT_EQ(checkpointer.committed_steps().front(), 1);
  checkpointer.wait();
  if (world_rank() == 0) {
    std::vector<std::string> commits;
    for (const auto& name : env->renamed_to()) {
      if (name.find('.') == std::string::npos) commits.push_back(name);
    }
    EXPECT_EQ(commits, (std::vector<std::string>{"step-1", "step-2"}));
  }
  auto state = model.state();
  EXPECT_EQ(checkpointer.restore_latest(state), 2);
  EXPECT_EQ(model.mismatch(2), "");
}

TEST(CheckpointErrors, MismatchedStateNamesTheTensorAndBothShapes) {
  const auto dir = fresh_dir("mismatch", world());
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  std::vector<Tensor> saved = {Tensor::allocate("w", DType::kF32, {2, 3})};
  checkpointer.save(1, State{{"model", saved}});

  State other_shape{{"model", {Tensor::allocate("w", DType::kF32, {3, 2})}}};
  std::string error = error_of([&] { checkpointer.restore_latest(other_shape); });
  EXPECT_NE(error.find("model/w"), std::string::npos) << error;
  EXPECT_NE(error.find("[3, 2]"), std::string::npos) << error;
  EXPECT_NE(error.find("[2, 3]"), std::string::npos) << error;

  State other_dtype{{"model", {Tensor::allocate("w", DType::kF64, {2, 3})}}};
  error = error_of([&] { checkpointer.restore_latest(other_dtype); });
  EXPECT_NE(error.find("f64[2, 3]"), std::string::npos) << error;

  State missing{
      {"model",
       {Tensor::allocate("w", DType::kF32, {2, 3}), Tensor::allocate("b", DType::kF32, {3})}}};
  error = error_of([&] { checkpointer.restore_latest(missing); });
  EXPECT_NE(error.find("model/b"), std::string::npos) << error;
  EXPECT_THROW(checkpointer.restore_latest(missing), UsageError);
}

TEST(CheckpointErrors, NewerFormatVersionIsRefused) {
  const auto dir = fresh_dir("newer-format", world());
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  TestModel model = large_model();
  checkpointer.save(1, model.state());
  if (world_rank() == 0) {
    const auto path = dir / "step-1" / "metadata.json";
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.replace(text.find("\"format_version\": 1"), 19, "\"format_version\": 99");
    std::ofstream(path, std::ios::trunc) << text;
  }
  MPI_Barrier(world());
  auto state = model.state();
  const std::string error = error_of([&] { checkpointer.restore_latest(state); });
  EXPECT_NE(error.find("format version 99"), std::string::npos) << error;
}

TEST(CheckpointErrors, NamesThatLeaveTheCheckpointAreRefused) {
  const auto dir = fresh_dir("escape", world());
  Checkpointer checkpointer(world(), {.dir = dir, .async = false});
  State escaping{{"model", {Tensor::allocate("../../escape", DType::kF32, {2})}}};
  EXPECT_THROW(checkpointer.save(1, escaping), UsageError);
  State absolute{{"/etc", {Tensor::allocate("w", DType::kF32, {2})}}};
  const std::string error = error_of([&] { checkpointer.save(1, absolute); });
  EXPECT_NE(error.find("'/etc'"), std::string::npos) << error;
  EXPECT_TRUE(checkpointer.committed_steps().empty());
}

TEST(CheckpointErrors, UnwritableDirectoryIsAnIoError) {
  const auto dir = fresh_dir("unwritable", world());
  if (world_rank() == 0) {
    fs::create_directories(dir);
    std::ofstream(dir / "a-file") << "not a directory";
  }
  MPI_Barrier(world());
  const std::string error =
      error_of([&] { Checkpointer checkpointer(world(), {.dir = dir / "a-file" / "ckpt"}); });
  EXPECT_NE(error.find("a-file/ckpt"), std::string::npos) << error;
  EXPECT_THROW(Checkpointer(world(), {.dir = dir / "a-file" / "ckpt"}), IoError);
}

// A checkpoint directory another user could write into could hold a step
// of theirs, which a restore would load: refused on every rank, before any
// step is read, with the reason.
TEST(CheckpointErrors, DirectoriesOthersCouldWriteToAreRefused) {
  const auto dir = fresh_dir("others", world());
  std::vector<std::pair<fs::path, std::string>> cases = {
      {dir / "open", "every user (mode 0777)"}, {dir / "open" / "ckpt", "without the sticky bit"}};
  // A directory of another user (nobody): only root can make one, and only
  // where uid 65534 is mapped.
  int given = 0;
  if (world_rank() == 0) {
    fs::create_directories(dir / "open" / "ckpt");
    fs::permissions(dir / "open", fs::perms::all);  // 0777, no sticky bit
    fs::create_directories(dir / "theirs");
    given = ::geteuid() == 0 && ::chown((dir / "theirs").c_str(), 65534, 65534) == 0 ? 1 : 0;
  }
  MPI_Bcast(&given, 1, MPI_INT, 0, world());
  if (given == 1) cases.emplace_back(dir / "theirs", "uid 65534");
  for (const auto& [path, reason] : cases) {
    const std::string error = error_of([&] { Checkpointer checkpointer(world(), {.dir = path}); });
    EXPECT_NE(error.find("checkpoint directory: " + path.string()), std::string::npos) << error;
    EXPECT_NE(error.find(reason), std::string::npos) << error;
    EXPECT_THROW(Checkpointer(world(), {.dir = path}), IoError);
  }
  MPI_Barrier(world());
  if (world_rank() == 0) {  // not even the probe of writability went in
    EXPECT_EQ(directory_entries(dir / "open"), std::vector<std::string>{"ckpt"});
    EXPECT_TRUE(directory_entries(dir / "open" / "ckpt").empty());
    EXPECT_TRUE(directory_entries(dir / "theirs").empty());
  }
}

TEST(CheckpointPolicyDecision, EveryRankGetsRankZerosAnswer) {
  // Clocks disagree between ranks; the decision must not.
  auto policy = CheckpointPolicy::every_seconds(10).agree_over(world());
  EXPECT_TRUE(policy.should_checkpoint(0, world_rank() == 0 ? 20 : 0));
  EXPECT_FALSE(policy.should_checkpoint(1, world_rank() == 0 ? 5 : 50));
  auto automatic = CheckpointPolicy::automatic(3600).agree_over(world());
  automatic.record_save(0, world_rank() == 0 ? 1 : 1000);  // rank 0's stall decides
  const double interval = std::sqrt(2.0 * 1 * 3600);
  EXPECT_TRUE(automatic.should_checkpoint(2, world_rank() == 0 ? interval + 1 : 1));
}

// Rank 0 decides for all; when its decision fails (here: a negative stall
// that only rank 0 recorded makes the Young/Daly interval throw), every rank
// throws rank 0's error instead of waiting for its answer.
TEST(CheckpointPolicyDecision, AFailureOfRankZerosDecisionReachesEveryRank) {
  auto policy = CheckpointPolicy::automatic(3600).agree_over(world());
  policy.record_save(0, world_rank() == 0 ? -5 : 1);
  std::string type = "(nothing)";
  std::string message;
  try {
    policy.should_checkpoint(1, 10);
  } catch (const UsageError& error) {
    type = "UsageError";
    message = error.what();
  }
  EXPECT_EQ(type, "UsageError");
  EXPECT_NE(message.find("rank 0: "), std::string::npos) << message;
  EXPECT_NE(message.find("Young/Daly"), std::string::npos) << message;
  // A decision that does not fail works as before.
  auto healthy = CheckpointPolicy::automatic(3600).agree_over(world());
  healthy.record_save(0, 1);
  EXPECT_TRUE(healthy.should_checkpoint(2, std::sqrt(2.0 * 3600) + 1));
}

}  // namespace
}  // namespace lockstep::testing
