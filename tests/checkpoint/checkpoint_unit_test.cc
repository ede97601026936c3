// Single-process tests of the checkpoint layer's pure parts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <lockstep/checkpoint_inspect.h>
#include <lockstep/checkpoint_policy.h>
#include <lockstep/error.h>
#include <lockstep/file_env.h>

#include "crc32c.h"
#include "directory.h"
#include "hdf5_files.h"
#include "layout.h"
#include "lockstep/build_config.h"
#include "metadata.h"
#include "parallel_copy.h"

namespace lockstep::checkpoint {
namespace {

std::uint32_t crc_of(std::string_view text) {
  return crc32c(std::as_bytes(std::span(text.data(), text.size())));
}

TEST(Crc32c, MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc_of("123456789"), 0xE3069283U);  // RFC 3720 / iSCSI check value
  EXPECT_EQ(crc_of(""), 0U);
}

TEST(Crc32c, IsIncrementalAndDetectsOneFlippedBit) {
  std::string text(1000, '\0');
  for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 7 + 3);
  const auto whole = crc_of(text);
  const auto bytes = std::as_bytes(std::span(text.data(), text.size()));
  EXPECT_EQ(crc32c(bytes.subspan(333), crc32c(bytes.first(333))), whole);
  text[517] = static_cast<char>(text[517] ^ 0x10);
  EXPECT_NE(crc_of(text), whole);
}

// Bit by bit, straight from the definition: the reference for the fast paths.
std::uint32_t crc32c_bitwise(std::span<const std::byte> bytes) {
  std::uint32_t crc = ~0U;
  for (const auto byte : bytes) {
    crc ^= static_cast<std::uint32_t>(byte);
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1U) != 0 ? 0x82F63B78U : 0U);
  }
  return ~crc;
}

TEST(Crc32c, LongBuffersAndCombinedPartsMatchTheDefinition) {
  std::vector<std::byte> data(200'003);
  std::uint32_t state = 12345;
  for (auto& byte : data) {
    state = state * 1103515245U + 12345U;
    byte = static_cast<std::byte>(state >> 24);
  }
  const std::span<const std::byte> bytes(data);
  const auto whole = crc32c_bitwise(bytes);
  EXPECT_EQ(crc32c(bytes), whole);
  for (const std::size_t split : {0UL, 1UL, 4095UL, 24'576UL, 100'000UL, 200'003UL}) {
    EXPECT_EQ(crc32c(bytes.subspan(split), crc32c(bytes.first(split))), whole) << split;
    EXPECT_EQ(crc32c_combine(crc32c(bytes.first(split)), crc32c(bytes.subspan(split)),
                             bytes.size() - split),
              whole)
        << split;
  }
}

TEST(CheckName, AcceptsNestedNamesAndRejectsEscapes) {
  EXPECT_NO_THROW(check_name("layers.0/weight", "tensor"));
  EXPECT_NO_THROW(check_name("a..b", "tensor"));
  for (const std::string& bad : std::initializer_list<std::string>{
           "", "/abs", "../up", "a/../../b", "a//b", "a/", ".", "a\\b", std::string("a\nb")}) {
    try {
      check_name(bad, "tensor name");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const UsageError& error) {
      EXPECT_NE(std::string(error.what()).find("tensor name"), std::string::npos);
    }
  }
}

TEST(SplitBytes, GivesEveryRankAboutItsShareAndTilesEveryTensor) {
  std::vector<TensorLayout> layouts = {
      {.path = "a", .dtype = DType::kF32, .shape = {1000}, .numel = 1000},
      {.path = "b", .dtype = DType::kU8, .shape = {3}, .numel = 3},
      {.path = "c", .dtype = DType::kF64, .shape = {}, .numel = 1},
      {.path = "d", .dtype = DType::kI64, .shape = {0, 5}, .numel = 0},
      {.path = "e", .dtype = DType::kBF16, .shape = {17, 3}, .numel = 51},
  };
  std::size_t total = 0;
  for (const auto& layout : layouts) total += layout.nbytes();
  for (int files : {1, 2, 3, 4, 7}) {
    const auto pieces = split_bytes(layouts, files);
    std::vector<std::size_t> per_file(static_cast<std::size_t>(files), 0);
    for (std::size_t t = 0; t < layouts.size(); ++t) {
      std::int64_t next = 0;
      int last_file = -1;
      for (const auto& piece : pieces[t]) {
        EXPECT_EQ(piece.begin, next) << layouts[t].path << " files=" << files;
        EXPECT_GT(piece.count, 0);
        EXPECT_GT(piece.file, last_file);
        last_file = piece.file;
        next += piece.count;
        per_file[static_cast<std::size_t>(piece.file)] +=
            static_cast<std::size_t>(piece.count) * dtype_size(layouts[t].dtype);
      }
      EXPECT_EQ(next, layouts[t].numel) << layouts[t].path << " files=" << files;
    }
    for (const auto bytes : per_file) {
      // Within one element of the largest dtype of an even share.
      EXPECT_LE(bytes, total / static_cast<std::size_t>(files) + 8) << "files=" << files;
      EXPECT_GE(bytes + 8, total / static_cast<std::size_t>(files)) << "files=" << files;
    }
  }
}

// Marks every element a box covers and checks that the boxes cover exactly
// the range, in order.
void expect_boxes_tile(const Shape& shape, std::int64_t begin, std::int64_t count) {
  const auto boxes = flat_range_boxes(shape, begin, count);
  EXPECT_LE(boxes.size(), 2 * shape.size() - 1);
  std::vector<std::int64_t> covered;
  for (const auto& box : boxes) {
    ASSERT_EQ(box.start.size(), shape.size());
    std::int64_t box_numel = 1;
    for (const auto extent : box.count) box_numel *= extent;
    for (std::int64_t i = 0; i < box_numel; ++i) {
      // The i-th element of the box in row-major order, as a flat index.
      std::int64_t rest = i;
      std::vector<std::int64_t> index(shape.size());
      for (std::size_t d = shape.size(); d-- > 0;) {
        index[d] = box.start[d] + rest % box.count[d];
        rest /= box.count[d];
      }
      std::int64_t flat = 0;
      for (std::size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + index[d];
      covered.push_back(flat);
    }
  }
  ASSERT_EQ(covered.size(), static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i)
    EXPECT_EQ(covered[static_cast<std::size_t>(i)], begin + i);
}

// A FlatState of one replicated tensor of 10 elements and two sharded ones
// of 7 and 0 elements.
FlatState sharded_state() {
  FlatState flat;
  flat.layouts = {{.path = "model/w", .dtype = DType::kF32, .shape = {10}, .numel = 10},
                  {.path = "optim/m", .dtype = DType::kF32, .shape = {7}, .numel = 7},
                  {.path = "optim/e", .dtype = DType::kF64, .shape = {0}, .numel = 0}};
  flat.parts = {{}, {.sharded = true}, {.sharded = true}};
  return flat;
}

std::string plan_error(const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>>& c) {
  try {
    plan_pieces(sharded_state(), c, static_cast<int>(c.size()));
  } catch (const UsageError& error) {
    return error.what();
  }
  return "accepted";
}

TEST(PlanPieces, ShardedTensorsAreTheRanksChunksInElementOrder) {
  // Rank 2 holds the start, rank 0 the end, rank 1 nothing of "optim/m".
  const auto pieces =
      plan_pieces(sharded_state(), {{{4, 3}, {0, 0}}, {{0, 0}, {0, 0}}, {{0, 4}, {0, 0}}}, 3);
  ASSERT_EQ(pieces.size(), 3U);
  ASSERT_EQ(pieces[1].size(), 2U);
  EXPECT_EQ(pieces[1][0].file, 2);
  EXPECT_EQ(pieces[1][0].begin, 0);
  EXPECT_EQ(pieces[1][0].count, 4);
  EXPECT_EQ(pieces[1][1].file, 0);
  EXPECT_EQ(pieces[1][1].begin, 4);
  EXPECT_TRUE(pieces[2].empty());
  // The replicated tensor is split over the ranks as split_bytes() does.
  EXPECT_EQ(pieces[0].size(), 3U);
}

TEST(PlanPieces, OverlapsAndHolesNameTheTensorAndTheRanks) {
  EXPECT_EQ(plan_error({{{0, 4}, {0, 0}}, {{3, 4}, {0, 0}}}),
            "the chunks of tensor 'optim/m' overlap: rank 0 holds elements up to 4, rank 1 from "
            "3; each element must be saved by one rank");
  EXPECT_EQ(plan_error({{{0, 3}, {0, 0}}, {{4, 3}, {0, 0}}}),
            "the chunks of tensor 'optim/m' leave elements [3, 4) to no rank (between rank 0 and "
            "rank 1); the ranks' chunks must cover the tensor");
  EXPECT_EQ(plan_error({{{0, 3}, {0, 0}}, {{3, 3}, {0, 0}}}),
            "the chunks of tensor 'optim/m' leave elements [6, 7) to no rank (after rank 1); the "
            "ranks' chunks must cover the tensor");
  EXPECT_EQ(plan_error({{{0, 0}, {0, 0}}, {{0, 0}, {0, 0}}}),
            "the chunks of tensor 'optim/m' leave elements [0, 7) to no rank (after its start); "
            "the ranks' chunks must cover the tensor");
}

TEST(FlatRangeBoxes, TileAnyRangeInOrder) {
  const Shape shape = {4, 3, 5};
  for (std::int64_t begin = 0; begin < 60; begin += 7) {
    for (std::int64_t end = begin + 1; end <= 60; end += 5) {
      SCOPED_TRACE(::testing::Message() << "[" << begin << ", " << end << ")");
      expect_boxes_tile(shape, begin, end - begin);
    }
  }
  expect_boxes_tile({10}, 3, 4);
  expect_boxes_tile({1, 1, 13}, 2, 9);
}

TEST(Directory, ParsesOnlyCommittedNames) {
  EXPECT_EQ(parse_step_directory("step-42"), 42);
  EXPECT_EQ(parse_step_directory("step-0"), 0);
  EXPECT_FALSE(parse_step_directory("step-042"));
  EXPECT_FALSE(parse_step_directory("step-42.tmp-00ff"));
  EXPECT_FALSE(parse_step_directory("step-"));
  EXPECT_FALSE(parse_step_directory("steps-4"));
  EXPECT_TRUE(is_leftover("step-42.tmp-00ff"));
  EXPECT_TRUE(is_leftover("step-7.deleted-1"));
  EXPECT_FALSE(is_leftover("step-42"));
  EXPECT_FALSE(is_leftover("notes.txt"));
  // A committed copy moved aside by a save of the same step.
  EXPECT_EQ(replaced_step("step-7.replaced-00ff"), 7);
  EXPECT_TRUE(is_leftover("step-7.replaced-00ff"));
  EXPECT_FALSE(replaced_step("step-7.deleted-00ff"));
  EXPECT_FALSE(replaced_step("step-7.tmp-1.replaced-2"));
  EXPECT_FALSE(replaced_step("step-07.replaced-1"));
  EXPECT_FALSE(replaced_step("step-7"));
}

TEST(Retention, KeepsTheNewestByNumberAndEveryMth) {
  EXPECT_EQ(steps_to_remove({100, 9, 10}, 2, 0), (std::vector<std::int64_t>{9}));
  EXPECT_EQ(steps_to_remove({9, 10, 100}, 3, 0), (std::vector<std::int64_t>{}));
  EXPECT_EQ(steps_to_remove({5, 10, 15, 20, 25}, 1, 10), (std::vector<std::int64_t>{5, 15}));
  EXPECT_EQ(steps_to_remove({1, 2, 3}, 0, 0), (std::vector<std::int64_t>{}));
}

Metadata sample_metadata() {
  Metadata metadata;
  metadata.library_version = "0.1.0";
  metadata.step = 12;
  metadata.world_size = 2;
  metadata.wall_time = "2026-01-01T00:00:00Z";
  metadata.rank_files = {{"rank-00000.h5", 10000, 1}, {"rank-00001.h5", 20000, 2}};
  metadata.master_file = {"checkpoint.h5", 30, 3};
  metadata.tensors.push_back(
      {.layout = {.path = "model/w", .dtype = DType::kBF16, .shape = {2, 3}, .numel = 6},
       .pieces = {{0, 0, 4, 77, 8192}, {1, 4, 2, 88}}});
  metadata.values = {{"data", {{"position", 5}}}};
  return metadata;
}

TEST(Metadata, RoundTripsAndRejectsDamage) {
  const std::string text = serialize(sample_metadata());
  const Metadata parsed = parse_metadata(text, "m");
  EXPECT_EQ(parsed.step, 12);
  EXPECT_EQ(parsed.tensors.at(0).layout.shape, (Shape{2, 3}));
  EXPECT_EQ(parsed.tensors.at(0).pieces.at(1).crc32c, 88U);
  // Where a piece lies in its file, when recorded.
  EXPECT_EQ(parsed.tensors.at(0).pieces.at(0).offset, 8192U);
  EXPECT_EQ(parsed.tensors.at(0).pieces.at(1).offset, Piece::kUnknownOffset);
  EXPECT_EQ(parsed.values["data"]["position"], 5);

  std::string damaged = text;
  damaged.replace(damaged.find("\"step\": 12"), 10, "\"step\": 13");
  EXPECT_THROW(parse_metadata(damaged, "m"), CorruptCheckpoint);
  EXPECT_THROW(parse_metadata(text.substr(0, text.size() / 2), "m"), CorruptCheckpoint);
}

// The text of `metadata` changed by `edit`, with its checksum recomputed, as
// anyone who can write the file can do.
std::string resealed(const Metadata& metadata, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json document = nlohmann::json::parse(serialize(metadata));
  document.erase("checksum");
  edit(document);
  const std::string body = document.dump();
  document["checksum"] = crc_of(body);
  return document.dump(1);
}

// Every field of metadata.json is untrusted: a name that leads out of the
// step, a count, offset, size, dtype or shape out of range, or a field of
// the wrong kind makes the checkpoint corrupt (skipped by a restore), never
// a usage error, a crash or an allocation sized by the file.
TEST(Metadata, HostileFieldsAreCorruption) {
  using nlohmann::json;
  const std::uint64_t huge = std::uint64_t{1} << 62;
  const std::vector<std::pair<const char*, std::function<void(json&)>>> edits = {
      {"rank file outside the step",
       [](json& d) { d["rank_files"][0]["name"] = "../../elsewhere/rank-00000.h5"; }},
      {"absolute rank file", [](json& d) { d["rank_files"][0]["name"] = "/tmp/rank-00000.h5"; }},
      {"another rank's file", [](json& d) { d["rank_files"][0]["name"] = "rank-00001.h5"; }},
      {"unpadded rank file", [](json& d) { d["rank_files"][1]["name"] = "rank-1.h5"; }},
      {"master file outside", [](json& d) { d["master_file"]["name"] = "../checkpoint.h5"; }},
      {"tensor path escapes", [](json& d) { d["tensors"][0]["path"] = "../../etc/w"; }},
      {"absolute tensor path", [](json& d) { d["tensors"][0]["path"] = "/model/w"; }},
      {"sharded not a boolean", [](json& d) { d["tensors"][0]["sharded"] = "yes"; }},
      {"control character", [](json& d) { d["tensors"][0]["path"] = "model/\x1b[2Jw"; }},
      {"tensor twice", [](json& d) { d["tensors"].push_back(d["tensors"][0]); }},
      {"unknown dtype", [](json& d) { d["tensors"][0]["dtype"] = "f128"; }},
      {"negative dimension",
       [](json& d) {
         d["tensors"][0]["shape"] = {-2, -3};
       }},
      {"elements overflow",
       [&](json& d) {
         d["tensors"][0]["shape"] = {huge, 8};
       }},
      {"bytes overflow",
       [&](json& d) {
         d["tensors"][0]["shape"] = {huge};
         d["tensors"][0]["pieces"][1]["count"] = huge - 4;
       }},
      {"too many dimensions",
       [](json& d) { d["tensors"][0]["shape"] = json(std::vector<int>(40, 1)); }},
      {"shape not a list", [](json& d) { d["tensors"][0]["shape"] = "2x3"; }},
      {"fractional dimension",
       [](json& d) {
         d["tensors"][0]["shape"] = {2.5, 3};
       }},
      {"dimension beyond any integer",
       [](json& d) {
         d["tensors"][0]["shape"] = {1e300, 3};
       }},
      {"piece of no rank", [](json& d) { d["tensors"][0]["pieces"][1]["file"] = 2; }},
      {"negative piece file", [](json& d) { d["tensors"][0]["pieces"][1]["file"] = -1; }},
      {"piece file truncated to int",
       [](json& d) { d["tensors"][0]["pieces"][1]["file"] = (std::uint64_t{1} << 32) + 1; }},
      {"empty piece", [](json& d) { d["tensors"][0]["pieces"][1]["count"] = 0; }},
      {"piece past the tensor", [](json& d) { d["tensors"][0]["pieces"][1]["count"] = 3; }},
      {"gap between pieces", [](json& d) { d["tensors"][0]["pieces"][1]["begin"] = 5; }},
      {"fractional count", [](json& d) { d["tensors"][0]["pieces"][1]["count"] = 2.5; }},
      {"offset wraps around",
       [](json& d) { d["tensors"][0]["pieces"][0]["offset"] = ~std::uint64_t{0} - 4; }},
      {"offset past the file", [](json& d) { d["tensors"][0]["pieces"][0]["offset"] = 9995; }},
      {"piece larger than its file", [](json& d) { d["rank_files"][1]["size"] = 3; }},
      {"negative size", [](json& d) { d["rank_files"][1]["size"] = -1; }},
      {"world size without files", [](json& d) { d["world_size"] = 3; }},
      {"world size zero", [](json& d) { d["world_size"] = 0; }},
      {"world size truncated to int",
       [](json& d) { d["world_size"] = (std::uint64_t{1} << 32) + 2; }},
      {"negative step", [](json& d) { d["step"] = -1; }},
      {"format version zero", [](json& d) { d["format_version"] = 0; }},
      {"time out of range", [](json& d) { d["unix_time"] = 1e300; }},
      {"negative time", [](json& d) { d["unix_time"] = -5.0; }},
      {"version with escapes", [](json& d) { d["library_version"] = "0.1\x1b[31m"; }},
      {"values not an object",
       [](json& d) {
         d["values"] = json::array({1, 2});
       }},
      {"key/values not an object", [](json& d) { d["values"]["data"] = 5; }},
  };
  // The unchanged text, resealed, parses: the edits alone make it corrupt.
  EXPECT_NO_THROW(parse_metadata(resealed(sample_metadata(), [](json&) {}), "m"));
  for (const auto& [name, edit] : edits) {
    SCOPED_TRACE(name);
    const std::string text = resealed(sample_metadata(), edit);
    try {
      parse_metadata(text, "step-12/metadata.json");
      ADD_FAILURE() << "accepted";
    } catch (const CorruptCheckpoint& error) {
      EXPECT_NE(std::string(error.what()).find("step-12/metadata.json"), std::string::npos)
          << error.what();
    } catch (const std::exception& error) {
      ADD_FAILURE() << "not reported as corruption: " << error.what();
    }
  }
}

// The checksum is an integer like every other count: a float, even one
// equal to the right value, or one beyond any integer, is damage.
TEST(Metadata, ChecksumMustBeAnInteger) {
  const std::string text = serialize(sample_metadata());
  const std::size_t start = text.find("\"checksum\": ") + 12;
  const std::size_t end = text.find(',', start);
  const std::string checksum = text.substr(start, end - start);
  ASSERT_NO_THROW(parse_metadata(text, "m"));
  for (const std::string& bad :
       {checksum + ".0", std::string("1e300"), std::string("-1"), "\"" + checksum + "\""}) {
    SCOPED_TRACE(bad);
    std::string damaged = text;
    damaged.replace(start, end - start, bad);
    EXPECT_THROW(parse_metadata(damaged, "m"), CorruptCheckpoint);
  }
}

// Copying and printing JSON recurse once per level: a file that nests
// deeper than kMaxMetadataDepth is corrupt, not a stack overflow, while
// key/values nested within the limit still load.
TEST(Metadata, DeepNestingIsCorruptionNotAStackOverflow) {
  const auto nested = [](std::size_t depth) {
    return std::string(depth, '[') + std::string(depth, ']');
  };
  std::string deep = serialize(sample_metadata());
  deep.insert(deep.find('{') + 1, "\"deep\": " + nested(100000) + ",");
  try {
    parse_metadata(deep, "step-12/metadata.json");
    FAIL() << "accepted";
  } catch (const CorruptCheckpoint& error) {
    EXPECT_NE(std::string(error.what()).find("more than 1000 deep"), std::string::npos)
        << error.what();
  }
  const std::string within = resealed(sample_metadata(), [&](nlohmann::json& document) {
    document["values"]["data"]["nested"] = nlohmann::json::parse(nested(kMaxMetadataDepth - 3));
  });
  EXPECT_EQ(parse_metadata(within, "m").values["data"]["position"], 5);
}

TEST(Metadata, NewerFormatIsAUsageError) {
  std::string text = serialize(sample_metadata());
  text.replace(text.find("\"format_version\": 1"), 19, "\"format_version\": 9");
  const std::string written_by = "\"library_version\": \"0.1.0\"";
  ASSERT_NE(text.find(written_by), std::string::npos) << text;
  text.replace(text.find(written_by), written_by.size(), "\"library_version\": \"9.9.9\"");
  try {
    parse_metadata(text, "step-12/metadata.json");
    FAIL() << "accepted a newer format";
  } catch (const CorruptCheckpoint&) {
    FAIL() << "a newer format is not corruption";
  } catch (const UsageError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("format version 9"), std::string::npos) << what;
    // The writer's version and this program's, each named as what it is.
    EXPECT_NE(what.find("written by lockstep 9.9.9"), std::string::npos) << what;
    EXPECT_NE(what.find(fmt::format("this lockstep ({})", LOCKSTEP_VERSION)), std::string::npos)
        << what;
  }
}

TEST(Policy, EveryStepsAndEverySeconds) {
  const auto steps = CheckpointPolicy::every_steps(5);
  EXPECT_FALSE(steps.due(3, 0));
  EXPECT_TRUE(steps.due(4, 0));
  EXPECT_TRUE(steps.due(9, 0));
  auto seconds = CheckpointPolicy::every_seconds(10);
  EXPECT_FALSE(seconds.due(0, 5));
  EXPECT_TRUE(seconds.due(0, 10));
  seconds.record_save(10, 0.5);
  EXPECT_FALSE(seconds.due(1, 19));
  EXPECT_TRUE(seconds.due(2, 20.5));
  EXPECT_THROW(CheckpointPolicy::every_steps(0), UsageError);
}

TEST(Policy, AutomaticUsesYoungDalyWithMeasuredStallAndLearnedMtbf) {
  EXPECT_DOUBLE_EQ(young_daly_interval(2, 3600), std::sqrt(2.0 * 2 * 3600));
  auto policy = CheckpointPolicy::automatic(0, 10000);
  EXPECT_TRUE(policy.due(0, 0)) << "the first save measures the cost";
  policy.record_save(0, 4);
  policy.record_save(1, 8);  // mean stall 6 s
  EXPECT_DOUBLE_EQ(policy.interval_seconds(), std::sqrt(2.0 * 6 * 10000));
  policy.observe_restarts(7200, 3);  // MTBF 2400 s learned
  EXPECT_DOUBLE_EQ(policy.mtbf_seconds(), 2400);
  const double interval = std::sqrt(2.0 * 6 * 2400);
  EXPECT_DOUBLE_EQ(policy.interval_seconds(), interval);
  EXPECT_FALSE(policy.due(5, 1 + interval * 0.9));
  EXPECT_TRUE(policy.due(6, 1 + interval));
  EXPECT_DOUBLE_EQ(CheckpointPolicy::automatic(100).mtbf_seconds(), 100);
  EXPECT_FALSE(estimate_mtbf(1000, 0).has_value());
}

TEST(Policy, NeverAndStepsNeedNoCommunicator) {
  auto never = CheckpointPolicy::never();
  EXPECT_FALSE(never.should_checkpoint(0, 1e9));
  auto steps = CheckpointPolicy::every_steps(3);
  EXPECT_FALSE(steps.should_checkpoint(0, 0));
  EXPECT_TRUE(steps.should_checkpoint(2, 0));
}

std::filesystem::path scratch_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("lockstep-unit-{}-{}", name, ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(Policy, LearnsTheMtbfFromTheAttemptsLog) {
  const auto dir = scratch_dir("attempts");
  EXPECT_FALSE(read_run_history(dir / "attempts.jsonl").has_value());
  std::ofstream(dir / "attempts.jsonl")
      << R"({"index":0,"outcome":"failed","start_s":0,"end_s":1000})"
      << "\n"
      << R"({"index":1,"outcome":"hang","start_s":1010,"end_s":3010})"
      << "\n"
      << "{not json\n"
      << R"({"index":2,"outcome":"stopped","start_s":3020,"end_s":4020})"
      << "\n";
  const auto history = read_run_history(dir / "attempts.jsonl");
  ASSERT_TRUE(history.has_value());
  EXPECT_DOUBLE_EQ(history->seconds, 4000);
  EXPECT_EQ(history->failures, 2);

  auto policy = CheckpointPolicy::automatic(0, 1e6);
  policy.set_history(*history);
  policy.record_save(990, 2);
  // (4000 s before + 1000 s now) / 2 failures.
  const double interval = std::sqrt(2.0 * 2 * 2500);
  EXPECT_FALSE(policy.should_checkpoint(10, 1000));
  EXPECT_DOUBLE_EQ(policy.mtbf_seconds(), 2500);
  EXPECT_DOUBLE_EQ(policy.interval_seconds(), interval);
  EXPECT_TRUE(policy.should_checkpoint(11, 990 + interval + 1));

  // Only a restart count: earlier attempts are taken to be as long as this one.
  auto counted = CheckpointPolicy::automatic(0, 1e6);
  counted.set_history({.seconds = 0, .failures = 2, .seconds_unknown = true});
  counted.record_save(0, 1);
  counted.should_checkpoint(1, 300);
  EXPECT_DOUBLE_EQ(counted.mtbf_seconds(), 450);  // 3 × 300 s / 2
  // A fixed MTBF wins over the history.
  auto fixed = CheckpointPolicy::automatic(5000);
  fixed.set_history(*history);
  fixed.should_checkpoint(0, 10);
  EXPECT_DOUBLE_EQ(fixed.mtbf_seconds(), 5000);
  std::filesystem::remove_all(dir);
}

struct AlignedFree {
  void operator()(std::byte* bytes) const { std::free(bytes); }
};

// Writes `size` patterned bytes through `env` in appends of odd sizes and
// returns what the file holds afterwards. The bytes start `shift` bytes past
// a 4 KiB boundary: at 0, every byte's address has the remainder of its file
// offset, so a direct writer can send whole blocks from where they are.
std::string write_and_read_back(FileEnv& env, const std::filesystem::path& path, std::size_t size,
                                std::size_t shift = 1) {
  constexpr std::size_t kBlock = kDirectIoAlignment;
  const std::size_t capacity = (size + shift + kBlock) / kBlock * kBlock;
  std::unique_ptr<std::byte, AlignedFree> memory(
      static_cast<std::byte*>(std::aligned_alloc(kBlock, capacity)));
  const std::span<std::byte> bytes(memory.get() + shift, size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 131) % 251);
  auto file = env.new_writable_file(path);
  std::size_t offset = 0;
  for (std::size_t piece = 1; offset < size; piece = piece * 3 + 4093) {
    const std::size_t take = std::min(piece, size - offset);
    file->append(bytes.subspan(offset, take));
    offset += take;
  }
  file->sync();
  file->close();
  std::ifstream in(path, std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string expected(reinterpret_cast<const char*>(bytes.data()), size);
  return back == expected ? "same" : fmt::format("{} bytes, not the {} written", back.size(), size);
}

TEST(PosixFileEnv, DirectAndBufferedWritesKeepEveryByte) {
  const auto dir = scratch_dir("posix-env");
  // Sizes around the 4 KiB block and the 4 MiB buffer of direct writes.
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{4096}, std::size_t{4097},
        (std::size_t{4} << 20) - 1, (std::size_t{4} << 20) + 4097, std::size_t{9} << 20}) {
    for (const bool direct : {true, false}) {
      // Bytes at their file offset's remainder modulo 4 KiB, and at others.
      for (const std::size_t shift : {std::size_t{0}, std::size_t{1}, std::size_t{512}}) {
        SCOPED_TRACE(
            fmt::format("{} bytes, direct {}, {} bytes past a block", size, direct, shift));
        EXPECT_EQ(write_and_read_back(*posix_file_env(direct), dir / "file.bin", size, shift),
                  "same");
      }
    }
  }
  // A file system without O_DIRECT (tmpfs) gets buffered writes instead.
  if (std::filesystem::is_directory("/dev/shm")) {
    const auto shm = std::filesystem::path("/dev/shm") / fmt::format("lockstep-{}", ::getpid());
    std::filesystem::create_directories(shm);
    EXPECT_EQ(write_and_read_back(*posix_file_env(true), shm / "file.bin", 10000), "same");
    std::filesystem::remove_all(shm);
  }
  std::filesystem::remove_all(dir);
}

// Reads `size` bytes at `offset` into a buffer `shift` bytes past a 4 KiB
// boundary, with read_direct_at, and compares them with `expected`.
std::string read_direct_and_compare(const std::filesystem::path& path, bool direct_io,
                                    std::span<const std::byte> expected, std::size_t offset,
                                    std::size_t size, std::size_t shift) {
  auto file = posix_file_env(direct_io)->new_readable_file(path);
  std::unique_ptr<std::byte, decltype(&std::free)> buffer(
      static_cast<std::byte*>(std::aligned_alloc(4096, (size + shift + 4095) / 4096 * 4096 + 4096)),
      &std::free);
  file->read_direct_at(offset, std::span(buffer.get() + shift, size));
  return std::memcmp(buffer.get() + shift, expected.data() + offset, size) == 0 ? "same"
                                                                                : "different";
}

TEST(PosixFileEnv, DirectReadsGiveTheBytesOfBufferedOnes) {
  const auto dir = scratch_dir("posix-env-read");
  std::filesystem::create_directories(dir);
  const std::size_t size = (std::size_t{9} << 20) + 4097;
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = static_cast<std::byte>((i * 131 + i / 4099) & 0xFF);
  const auto path = dir / "file.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(size));
  }
  struct Read {
    std::size_t offset;
    std::size_t size;
    std::size_t shift;
  };
  // Aligned reads (blocks straight from the disk, then a tail through the
  // page cache), the whole file up to its last partial block, and reads
  // whose offset or buffer is not aligned (all through the page cache).
  for (const Read read :
       {Read{0, size, 0}, Read{4096, (std::size_t{8} << 20) + 5, 0}, Read{8192, 4096, 0},
        Read{4096, 100, 0}, Read{1, 70000, 0}, Read{4096, 70000, 1}, Read{size - 4097, 4097, 0}}) {
    for (const bool direct_io : {true, false}) {
      SCOPED_TRACE(fmt::format("{} bytes at {}, buffer {} past a block, direct {}", read.size,
                               read.offset, read.shift, direct_io));
      EXPECT_EQ(read_direct_and_compare(path, direct_io, bytes, read.offset, read.size, read.shift),
                "same");
    }
  }
  // A read past the end is an error naming the file.
  auto file = posix_file_env(true)->new_readable_file(path);
  std::vector<std::byte> past(8192);
  try {
    file->read_direct_at(size - 4096, past);
    FAIL() << "read past the end of the file";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("file.bin"), std::string::npos) << error.what();
  }
  // A file system without O_DIRECT (tmpfs) reads through the page cache.
  if (std::filesystem::is_directory("/dev/shm")) {
    const auto shm = std::filesystem::path("/dev/shm") / fmt::format("lockstep-r-{}", ::getpid());
    std::filesystem::create_directories(shm);
    std::filesystem::copy_file(path, shm / "file.bin");
    EXPECT_EQ(read_direct_and_compare(shm / "file.bin", true, bytes, 0, size, 0), "same");
    std::filesystem::remove_all(shm);
  }
  std::filesystem::remove_all(dir);
}

TEST(RankFilePlan, LargePiecesStartOnBlocksAndStageAtTheirFileOffsetsRemainder) {
  // Small, odd and large tensors, split over 3 files; the plan of file 1.
  std::vector<TensorLayout> layouts;
  for (const std::int64_t numel : {std::int64_t{3}, std::int64_t{70001}, std::int64_t{17},
                                   std::int64_t{1} << 20, std::int64_t{40000}}) {
    layouts.push_back({.path = fmt::format("model/t{}", layouts.size()),
                       .dtype = layouts.size() % 2 == 0 ? DType::kF32 : DType::kBF16,
                       .shape = {numel},
                       .numel = numel});
  }
  const auto pieces = split_bytes(layouts, 3);
  std::vector<std::vector<Piece>> own(layouts.size());
  std::size_t data_bytes = 0;
  std::size_t count = 0;
  for (std::size_t t = 0; t < layouts.size(); ++t) {
    for (const auto& piece : pieces[t]) {
      if (piece.file != 1) continue;
      own[t].push_back(piece);
      data_bytes += static_cast<std::size_t>(piece.count) * dtype_size(layouts[t].dtype);
      ++count;
    }
  }
  const RankFilePlan plan = plan_rank_file(layouts, own);
  ASSERT_EQ(plan.staged_offsets.size(), count);
  std::uint64_t file_offset = 0;
  std::size_t seen = 0;
  std::vector<std::pair<std::size_t, std::size_t>> staged;  // [begin, end) per piece
  for (const auto& segment : plan.segments) {
    if (segment.data) {
      ++seen;
      ASSERT_LT(segment.piece, count);
      const std::size_t at = plan.staged_offsets[segment.piece];
      EXPECT_EQ(at % kDataAlignment, file_offset % kDataAlignment) << "piece " << segment.piece;
      if (segment.size >= kAlignedDataThreshold) {
        EXPECT_EQ(file_offset % kDataAlignment, 0U) << "piece " << segment.piece;
      }
      staged.emplace_back(at, at + segment.size);
    }
    file_offset += segment.size;
  }
  EXPECT_EQ(seen, count);
  EXPECT_EQ(file_offset, plan.file_size);
  // The pieces do not overlap in the staging buffer, which wastes less than
  // a block per piece.
  std::sort(staged.begin(), staged.end());
  for (std::size_t i = 1; i < staged.size(); ++i) EXPECT_LE(staged[i - 1].second, staged[i].first);
  EXPECT_LE(staged.back().second, plan.staged_size);
  EXPECT_GE(plan.staged_size, data_bytes);
  EXPECT_LT(plan.staged_size, data_bytes + count * kDataAlignment);
}

// metadata.json is read whole: one larger than any the writer makes is
// refused before it is read, and neither the step nor the file may be a
// symbolic link.
TEST(Metadata, ReadingRefusesLinksAndHugeFiles) {
  const auto dir = scratch_dir("metadata-read");
  const auto env = posix_file_env();
  std::filesystem::create_directories(dir / "real");
  std::ofstream(dir / "real" / "metadata.json") << serialize(sample_metadata());
  EXPECT_EQ(read_metadata_text(*env, dir / "real"), serialize(sample_metadata()));
  std::filesystem::create_directory_symlink(dir / "real", dir / "linked");
  EXPECT_THROW(read_metadata_text(*env, dir / "linked"), CorruptCheckpoint);
  std::filesystem::create_directories(dir / "file-link");
  std::filesystem::create_symlink(dir / "real" / "metadata.json",
                                  dir / "file-link" / "metadata.json");
  EXPECT_THROW(read_metadata_text(*env, dir / "file-link"), CorruptCheckpoint);
  std::filesystem::create_directories(dir / "huge");
  std::ofstream(dir / "huge" / "metadata.json").close();
  std::filesystem::resize_file(dir / "huge" / "metadata.json", kMaxMetadataBytes + 1);
  try {
    read_metadata_text(*env, dir / "huge");
    ADD_FAILURE() << "read a metadata file larger than any the writer makes";
  } catch (const CorruptCheckpoint& error) {
    EXPECT_NE(std::string(error.what()).find("more than"), std::string::npos) << error.what();
  }
  EXPECT_THROW(read_metadata_text(*env, dir / "missing"), CorruptCheckpoint);
  std::filesystem::remove_all(dir);
}

TEST(Inspect, ListsCommittedAndTornEntriesByStep) {
  const auto dir = scratch_dir("inspect");
  std::filesystem::create_directories(dir / "step-10");
  std::filesystem::create_directories(dir / "step-9");
  std::filesystem::create_directories(dir / "step-10.tmp-abc");
  std::ofstream(dir / "step-10.tmp-abc" / "rank-00000.h5") << "12345";
  std::ofstream(dir / ".write-probe-1") << "";
  const auto entries = list_checkpoint_entries(dir);
  ASSERT_EQ(entries.size(), 3U);
  EXPECT_EQ(entries[0].name, "step-9");
  EXPECT_EQ(entries[1].name, "step-10");
  EXPECT_TRUE(entries[1].committed);
  EXPECT_EQ(entries[2].name, "step-10.tmp-abc");
  EXPECT_FALSE(entries[2].committed);
  EXPECT_EQ(entries[2].step, 10);
  EXPECT_EQ(entries[2].bytes, 5U);
  // A step without metadata fails verification instead of throwing.
  const auto report = verify_checkpoint(dir / "step-9");
  EXPECT_FALSE(report.ok());
  EXPECT_THROW(list_checkpoint_entries(dir / "missing"), UsageError);
  std::ofstream(dir / "step-9" / "notes.txt") << "x";
  EXPECT_THROW(list_checkpoint_entries(dir / "step-9"), UsageError);
  std::filesystem::remove_all(dir);
}

// Every byte of every item covered exactly once, by the thread its run was
// given to, for item sizes around the 4 KiB cut alignment and runs both
// inside items and only between them.
TEST(SplitOverThreads, CoversEveryByteOnceAndUsesTheThreadsItMay) {
  const std::vector<std::vector<std::size_t>> cases = {
      {1U << 20}, {3, 4096, 4097, 100000, 1, 0, 65536, 12345}, {0, 0}, {}, {7U << 20, 5, 9U << 20}};
  for (const auto& sizes : cases) {
    for (const bool whole : {false, true}) {
      for (const int threads : {1, 2, 3, 8}) {
        std::vector<std::vector<int>> covered;
        for (const auto size : sizes) covered.emplace_back(size, 0);
        std::set<int> used;
        std::mutex mutex;
        split_over_threads(sizes, threads, 1000, whole,
                           [&](int thread, std::size_t item, std::size_t begin, std::size_t end) {
                             const std::lock_guard lock(mutex);
                             used.insert(thread);
                             if (whole) {
                               EXPECT_EQ(begin, 0U);
                               EXPECT_EQ(end, sizes[item]);
                             }
                             ASSERT_LT(begin, end);
                             ASSERT_LE(end, sizes[item]);
                             for (auto b = begin; b < end; ++b) ++covered[item][b];
                           });
        for (std::size_t i = 0; i < sizes.size(); ++i) {
          EXPECT_EQ(std::count(covered[i].begin(), covered[i].end(), 1),
                    static_cast<std::ptrdiff_t>(sizes[i]))
              << "item " << i << " threads " << threads << " whole " << whole;
        }
        EXPECT_LE(used.size(), static_cast<std::size_t>(threads));
        if (!used.empty()) {
          EXPECT_LT(*used.rbegin(), threads);
        }
        if (!whole && threads == 8 && sizes.size() == 5 && sizes[0] == (7U << 20)) {
          EXPECT_EQ(used.size(), 8U) << "16 MiB in runs of at least 1000 bytes: every thread works";
        }
      }
    }
  }
}

TEST(SplitOverThreads, RethrowsAThreadsErrorAfterAllFinish) {
  const std::vector<std::size_t> sizes = {1U << 20, 1U << 20};
  std::atomic<int> calls = 0;
  EXPECT_THROW(split_over_threads(sizes, 2, 4096, true,
                                  [&](int thread, std::size_t, std::size_t, std::size_t) {
                                    ++calls;
                                    if (thread == 1) throw IoError("disk gone");
                                  }),
               IoError);
  EXPECT_EQ(calls.load(), 2);
}

TEST(SplitOverThreads, AutomaticCountSharesTheCoresAmongTheNodesRanks) {
  EXPECT_EQ(copy_threads(3, 1), 3);
  EXPECT_EQ(copy_threads(100, 1), kMaxCopyThreads);
  EXPECT_EQ(copy_threads(0, 1 << 20), 1);
  const int alone = copy_threads(0, 1);
  EXPECT_GE(alone, 1);
  EXPECT_LE(alone, kMaxCopyThreads);
  EXPECT_LE(copy_threads(0, 2), std::max(1, alone));
}

}  // namespace
}  // namespace lockstep::checkpoint
