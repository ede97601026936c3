#include "metadata.h"

#include <fmt/format.h>

#include "crc32c.h"

namespace lockstep::checkpoint {

namespace {

using nlohmann::json;

constexpr char kFormatName[] = "lockstep-checkpoint";

std::uint32_t text_checksum(const std::string& text) {
  return crc32c(std::as_bytes(std::span(text.data(), text.size())));
}

json file_json(const FileRecord& file) {
  return {{"name", file.name}, {"size", file.size}, {"crc32c", file.crc32c}};
}

FileRecord file_from_json(const json& value) {
  return {.name = value.at("name").get<std::string>(),
          .size = value.at("size").get<std::uint64_t>(),
          .crc32c = value.at("crc32c").get<std::uint32_t>()};
}

}  // namespace

std::string rank_file_name(int rank) { return fmt::format("rank-{:05d}.h5", rank); }

json to_json(const Metadata& metadata) {
  json tensors = json::array();
  for (const auto& tensor : metadata.tensors) {
    json pieces = json::array();
    for (const auto& piece : tensor.pieces) {
      json entry = {{"file", piece.file},
                    {"begin", piece.begin},
                    {"count", piece.count},
                    {"crc32c", piece.crc32c}};
      if (piece.offset != Piece::kUnknownOffset) entry["offset"] = piece.offset;
      pieces.push_back(std::move(entry));
    }
    tensors.push_back({{"path", tensor.layout.path},
                       {"dtype", std::string(dtype_name(tensor.layout.dtype))},
                       {"shape", tensor.layout.shape},
                       {"pieces", std::move(pieces)}});
  }
  return {{"format", kFormatName},
          {"format_version", metadata.format_version},
          {"library_version", metadata.library_version},
          {"step", metadata.step},
          {"world_size", metadata.world_size},
          {"wall_time", metadata.wall_time},
          {"unix_time", metadata.unix_time},
          {"tensors", std::move(tensors)},
          {"values", metadata.values}};
}

std::string serialize(const Metadata& metadata) {
  json document = to_json(metadata);
  json files = json::array();
  for (const auto& file : metadata.rank_files) files.push_back(file_json(file));
  document["rank_files"] = std::move(files);
  document["master_file"] = file_json(metadata.master_file);
  const std::string body = document.dump();
  document["checksum"] = text_checksum(body);
  return document.dump(1) + "\n";
}

Metadata parse_metadata(const std::string& text, const std::string& where) {
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception& error) {
    throw CorruptCheckpoint(fmt::format("{} is not valid JSON: {}", where, error.what()));
  }
  try {
    if (!document.is_object() || document.value("format", "") != kFormatName) {
      throw CorruptCheckpoint(fmt::format("{} is not lockstep checkpoint metadata", where));
    }
    const int version = document.at("format_version").get<int>();
    if (version > kFormatVersion) {
      throw UsageError(fmt::format(
          "{} has format version {}, but this lockstep ({}) reads versions up to {}; restore "
          "it with a newer lockstep",
          where, version, document.value("library_version", "?"), kFormatVersion));
    }
    const auto stored_checksum = document.at("checksum").get<std::uint32_t>();
    document.erase("checksum");
    if (text_checksum(document.dump()) != stored_checksum) {
      throw CorruptCheckpoint(fmt::format("{} fails its checksum", where));
    }

    Metadata metadata;
    metadata.format_version = version;
    metadata.library_version = document.at("library_version").get<std::string>();
    metadata.step = document.at("step").get<std::int64_t>();
    metadata.world_size = document.at("world_size").get<int>();
    metadata.wall_time = document.at("wall_time").get<std::string>();
    metadata.unix_time = document.at("unix_time").get<double>();
    for (const auto& file : document.at("rank_files")) {
      metadata.rank_files.push_back(file_from_json(file));
    }
    metadata.master_file = file_from_json(document.at("master_file"));
    for (const auto& entry : document.at("tensors")) {
      TensorRecord tensor;
      tensor.layout.path = entry.at("path").get<std::string>();
      tensor.layout.dtype = parse_dtype(entry.at("dtype").get<std::string>());
      tensor.layout.shape = entry.at("shape").get<Shape>();
      tensor.layout.numel = checked_numel(tensor.layout.shape, tensor.layout.path);
      for (const auto& piece : entry.at("pieces")) {
        tensor.pieces.push_back({.file = piece.at("file").get<int>(),
                                 .begin = piece.at("begin").get<std::int64_t>(),
                                 .count = piece.at("count").get<std::int64_t>(),
                                 .crc32c = piece.at("crc32c").get<std::uint32_t>(),
                                 .offset = piece.value("offset", Piece::kUnknownOffset)});
      }
      metadata.tensors.push_back(std::move(tensor));
    }
    metadata.values = document.at("values");
    if (metadata.world_size < 1 ||
        metadata.rank_files.size() != static_cast<std::size_t>(metadata.world_size)) {
      throw CorruptCheckpoint(fmt::format("{} lists {} rank files for world size {}", where,
                                          metadata.rank_files.size(), metadata.world_size));
    }
    return metadata;
  } catch (const json::exception& error) {
    throw CorruptCheckpoint(fmt::format("{} is incomplete: {}", where, error.what()));
  }
}

}  // namespace lockstep::checkpoint
