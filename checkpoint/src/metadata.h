// metadata.json of a checkpoint: everything a loader needs besides the
// data, with a checksum over its own canonical text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "layout.h"
#include "lockstep/file_env.h"

namespace lockstep::checkpoint {

// Bumped when a reader of the previous version could misread a checkpoint.
inline constexpr int kFormatVersion = 1;
inline constexpr char kMetadataFile[] = "metadata.json";
inline constexpr char kMasterFile[] = "checkpoint.h5";
// metadata.json is read whole into memory; a file larger than this is not
// one the writer produced (100,000 ranks and thousands of tensors take a few
// tens of MiB) and is refused before anything is allocated for it.
inline constexpr std::uint64_t kMaxMetadataBytes = 256ULL << 20;
// The deepest nesting of arrays and objects that metadata.json may have.
// The writer's own fields are a few levels deep, and the key/values saved
// beside the tensors are small; copying and printing a JSON document
// recurse once per level, so a deeper file is refused before it is parsed,
// where it could otherwise exhaust the stack.
inline constexpr std::size_t kMaxMetadataDepth = 1000;
// HDF5's limit on the rank of a dataset (H5S_MAX_RANK).
inline constexpr std::size_t kMaxTensorRank = 32;

// "rank-00003.h5"
std::string rank_file_name(int rank);

struct FileRecord {
  std::string name;
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;  // over the whole file
};

struct TensorRecord {
  TensorLayout layout;
  std::vector<Piece> pieces;
  // Saved from the ranks' chunks (sharded state), not split from whole
  // tensors; the pieces are read alike either way.
  bool sharded = false;
};

struct Metadata {
  int format_version = kFormatVersion;
  std::string library_version;
  std::int64_t step = 0;
  int world_size = 0;
  std::string wall_time;  // UTC, ISO 8601
  double unix_time = 0;
  std::vector<FileRecord> rank_files;  // index = saving rank
  FileRecord master_file;              // size and checksum; filled last
  std::vector<TensorRecord> tensors;
  nlohmann::json values = nlohmann::json::object();  // state name -> key/values
};

// The JSON text, with a "checksum" member over the rest of it.
std::string serialize(const Metadata& metadata);
// Parses and checks the text; throws CorruptCheckpoint when it is damaged and
// UsageError when it comes from a newer format version. Every field is
// untrusted (anyone who can edit the file can recompute its checksum), so
// everything is checked before a reader uses it to name a file, size memory
// or index anything: file names are exactly the writer's (rank-NNNNN.h5 for
// its index, checkpoint.h5), tensor paths pass the checks a save applies,
// dtypes and shapes are known and their bytes fit in 63 bits, the pieces
// tile each tensor and lie inside the file sizes recorded, counts and the
// world size agree, the times and version text are plain, every integer is
// an integer in range (never a float converted), and arrays and objects
// nest at most kMaxMetadataDepth deep.
Metadata parse_metadata(const std::string& text, const std::string& where);

// Reads metadata.json of `step_dir` through `env`. Throws CorruptCheckpoint
// when the step directory or the file is a symbolic link (the writer makes
// neither), when the file is larger than kMaxMetadataBytes, or when it
// cannot be read.
std::string read_metadata_text(FileEnv& env, const std::filesystem::path& step_dir);

// The JSON of the data only (no files or checksums), for HDF5 attributes.
nlohmann::json to_json(const Metadata& metadata);

}  // namespace lockstep::checkpoint
