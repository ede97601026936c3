// metadata.json of a checkpoint: everything a loader needs besides the
// data, with a checksum over its own canonical text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "layout.h"

namespace lockstep::checkpoint {

// Bumped when a reader of the previous version could misread a checkpoint.
inline constexpr int kFormatVersion = 1;
inline constexpr char kMetadataFile[] = "metadata.json";
inline constexpr char kMasterFile[] = "checkpoint.h5";

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
// UsageError when it comes from a newer format version.
Metadata parse_metadata(const std::string& text, const std::string& where);

// The JSON of the data only (no files or checksums), for HDF5 attributes.
nlohmann::json to_json(const Metadata& metadata);

}  // namespace lockstep::checkpoint
