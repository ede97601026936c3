#include "metadata.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "crc32c.h"
#include "lockstep/build_config.h"

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

// A non-negative integer in [low, high]; a JSON number of another kind or
// range (a float, a negative size, a value that a narrower type would
// truncate) is damage, not something to convert. nlohmann's get<T>() would
// convert it, and converting a float out of T's range is undefined.
// `what` names the value in the message.
template <typename T>
T integer_value(const json& value, std::string_view what, std::uint64_t low, std::uint64_t high,
                const std::string& where) {
  std::uint64_t number = 0;
  bool fits = value.is_number_integer();
  if (value.is_number_unsigned()) {
    number = value.get<std::uint64_t>();
  } else if (fits) {
    const auto signed_number = value.get<std::int64_t>();
    fits = signed_number >= 0;
    number = static_cast<std::uint64_t>(signed_number);
  }
  if (!fits || number < low || number > high) {
    throw CorruptCheckpoint(fmt::format("{}: {} is {}, not an integer in [{}, {}]", where, what,
                                        value.dump(), low, high));
  }
  return static_cast<T>(number);
}

// The member `key` of `object`, as integer_value() reads it.
template <typename T>
T integer_field(const json& object, const char* key, std::uint64_t low, std::uint64_t high,
                const std::string& where) {
  return integer_value<T>(object.at(key), fmt::format("'{}'", key), low, high, where);
}

// The shape of the tensor at `path`: a list of at most kMaxTensorRank
// dimensions, each an integer that fits in 63 bits.
Shape shape_value(const json& dimensions, std::string_view path, const std::string& where) {
  if (!dimensions.is_array() || dimensions.size() > kMaxTensorRank) {
    throw CorruptCheckpoint(
        fmt::format("{}: the shape of tensor '{}' is not a list of up to {} dimensions", where,
                    path, kMaxTensorRank));
  }
  Shape shape;
  for (const json& dimension : dimensions) {
    shape.push_back(integer_value<std::int64_t>(dimension, "a dimension", 0,
                                                std::numeric_limits<std::int64_t>::max(), where));
  }
  return shape;
}

// Whether the arrays and objects of the JSON `text` nest deeper than
// `limit`; brackets inside strings do not count. Exact for valid JSON, and
// invalid JSON fails to parse whatever this says.
bool nests_deeper_than(std::string_view text, std::size_t limit) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, which may be a quote
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// Text that is printed (versions, times) holds no control characters,
// which could rewrite a terminal, and is short.
std::string plain_text_field(const json& object, const char* key, const std::string& where) {
  auto text = object.at(key).get<std::string>();
  const bool control = std::any_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (control || text.size() > 256) {
    throw CorruptCheckpoint(
        fmt::format("{}: '{}' is not a plain line of text up to 256 bytes", where, key));
  }
  return text;
}

FileRecord file_from_json(const json& value, const std::string& where) {
  constexpr auto kMaxSize = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return {.name = value.at("name").get<std::string>(),
          .size = integer_field<std::uint64_t>(value, "size", 0, kMaxSize, where),
          .crc32c = integer_field<std::uint32_t>(value, "crc32c", 0,
                                                 std::numeric_limits<std::uint32_t>::max(), where)};
}

// The checks of parse_metadata() that span fields: names, tensors, pieces.
void check_consistency(const Metadata& metadata, const std::string& where) {
  const auto corrupt = [&](const std::string& why) {
    throw CorruptCheckpoint(fmt::format("{}: {}", where, why));
  };
  if (metadata.rank_files.size() != static_cast<std::size_t>(metadata.world_size)) {
    corrupt(fmt::format("lists {} rank files for world size {}", metadata.rank_files.size(),
                        metadata.world_size));
  }
  // Only the names the writer gives: nothing else can lead outside the step.
  for (std::size_t r = 0; r < metadata.rank_files.size(); ++r) {
    const std::string expected = rank_file_name(static_cast<int>(r));
    if (metadata.rank_files[r].name != expected) {
      corrupt(fmt::format("rank file {} is named '{}', expected '{}'", r,
                          metadata.rank_files[r].name, expected));
    }
  }
  if (metadata.master_file.name != kMasterFile) {
    corrupt(fmt::format("the master file is named '{}', expected '{}'", metadata.master_file.name,
                        kMasterFile));
  }
  std::set<std::string, std::less<>> paths;
  std::uint64_t total = 0;
  constexpr auto kMaxBytes = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  for (const auto& record : metadata.tensors) {
    const auto& layout = record.layout;
    if (!paths.insert(layout.path).second) {
      corrupt(fmt::format("tensor '{}' is listed twice", layout.path));
    }
    const std::uint64_t element = dtype_size(layout.dtype);
    const auto numel = static_cast<std::uint64_t>(layout.numel);
    if (numel > kMaxBytes / element || numel * element > kMaxBytes - total) {
      corrupt(fmt::format("tensor '{}' of shape {} holds more bytes than fit in 63 bits",
                          layout.path, shape_str(layout.shape)));
    }
    total += numel * element;
    // The pieces tile the tensor, each inside the file it names as recorded.
    std::int64_t next = 0;
    for (const auto& piece : record.pieces) {
      if (piece.file < 0 || piece.file >= metadata.world_size || piece.begin != next ||
          piece.count <= 0 || piece.count > layout.numel - next) {
        corrupt(fmt::format("the pieces of tensor '{}' do not tile it", layout.path));
      }
      next += piece.count;
      const std::uint64_t bytes = static_cast<std::uint64_t>(piece.count) * element;
      const std::uint64_t file_size =
          metadata.rank_files[static_cast<std::size_t>(piece.file)].size;
      const bool outside =
          bytes > file_size || (piece.offset != Piece::kUnknownOffset &&
                                (piece.offset > file_size || bytes > file_size - piece.offset));
      if (outside) {
        corrupt(fmt::format(
            "a piece of tensor '{}' ({} bytes) lies outside {} ({} bytes)", layout.path, bytes,
            metadata.rank_files[static_cast<std::size_t>(piece.file)].name, file_size));
      }
    }
    if (next != layout.numel) {
      corrupt(fmt::format("the pieces of tensor '{}' cover {} of {} elements", layout.path, next,
                          layout.numel));
    }
  }
  if (!metadata.values.is_object()) corrupt("'values' is not an object");
  for (const auto& [name, values] : metadata.values.items()) {
    if (!values.is_object()) corrupt(fmt::format("key/values '{}' are not an object", name));
  }
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
    json entry = {{"path", tensor.layout.path},
                  {"dtype", std::string(dtype_name(tensor.layout.dtype))},
                  {"shape", tensor.layout.shape},
                  {"pieces", std::move(pieces)}};
    if (tensor.sharded) entry["sharded"] = true;
    tensors.push_back(std::move(entry));
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
  if (nests_deeper_than(text, kMaxMetadataDepth)) {
    throw CorruptCheckpoint(
        fmt::format("{} nests arrays or objects more than {} deep; lockstep's metadata is a few "
                    "levels deep, so it is not lockstep checkpoint metadata",
                    where, kMaxMetadataDepth));
  }
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
    const json& version_field = document.at("format_version");
    if (!version_field.is_number_integer() || version_field.get<std::int64_t>() < 1) {
      throw CorruptCheckpoint(
          fmt::format("{}: format version {} is not one", where, version_field.dump()));
    }
    if (version_field.get<std::int64_t>() > kFormatVersion) {
      throw UsageError(fmt::format(
          "{} has format version {} (written by lockstep {}), but this lockstep ({}) reads "
          "versions up to {}; restore it with a newer lockstep",
          where, version_field.dump(), document.value("library_version", "?"), LOCKSTEP_VERSION,
          kFormatVersion));
    }
    const int version = version_field.get<int>();
    const auto stored_checksum = integer_field<std::uint32_t>(
        document, "checksum", 0, std::numeric_limits<std::uint32_t>::max(), where);
    document.erase("checksum");
    if (text_checksum(document.dump()) != stored_checksum) {
      throw CorruptCheckpoint(fmt::format("{} fails its checksum", where));
    }

    Metadata metadata;
    metadata.format_version = version;
    metadata.library_version = plain_text_field(document, "library_version", where);
    metadata.step = integer_field<std::int64_t>(document, "step", 0,
                                                std::numeric_limits<std::int64_t>::max(), where);
    metadata.world_size =
        integer_field<int>(document, "world_size", 1, std::numeric_limits<int>::max(), where);
    metadata.wall_time = plain_text_field(document, "wall_time", where);
    metadata.unix_time = document.at("unix_time").get<double>();
    // From 1970 to the end of year 9999: a time that tools can print.
    if (!std::isfinite(metadata.unix_time) || metadata.unix_time < 0 ||
        metadata.unix_time > 253402300799.0) {
      throw CorruptCheckpoint(
          fmt::format("{}: 'unix_time' {} is not a time", where, document.at("unix_time").dump()));
    }
    // Counts before anything is sized by them.
    const auto& rank_files = document.at("rank_files");
    if (!rank_files.is_array() ||
        rank_files.size() != static_cast<std::size_t>(metadata.world_size)) {
      throw CorruptCheckpoint(fmt::format("{} lists {} rank files for world size {}", where,
                                          rank_files.size(), metadata.world_size));
    }
    for (const auto& file : rank_files) {
      metadata.rank_files.push_back(file_from_json(file, where));
    }
    metadata.master_file = file_from_json(document.at("master_file"), where);
    constexpr auto kMaxElement = std::numeric_limits<std::int64_t>::max();
    for (const auto& entry : document.at("tensors")) {
      TensorRecord tensor;
      tensor.layout.path = entry.at("path").get<std::string>();
      try {
        // The checks of a save: a path that a save refuses is damage here.
        check_name(tensor.layout.path, "tensor path");
        tensor.layout.dtype = parse_dtype(entry.at("dtype").get<std::string>());
        tensor.layout.shape = shape_value(entry.at("shape"), tensor.layout.path, where);
        tensor.layout.numel = checked_numel(tensor.layout.shape, tensor.layout.path);
      } catch (const UsageError& error) {
        throw CorruptCheckpoint(fmt::format("{}: {}", where, error.what()));
      }
      if (entry.contains("sharded")) {
        if (!entry.at("sharded").is_boolean()) {
          throw CorruptCheckpoint(fmt::format("{}: 'sharded' of tensor '{}' is not true or false",
                                              where, tensor.layout.path));
        }
        tensor.sharded = entry.at("sharded").get<bool>();
      }
      for (const auto& piece : entry.at("pieces")) {
        Piece read{
            .file = integer_field<int>(piece, "file", 0,
                                       static_cast<std::uint64_t>(metadata.world_size) - 1, where),
            .begin = integer_field<std::int64_t>(piece, "begin", 0, kMaxElement, where),
            .count = integer_field<std::int64_t>(piece, "count", 1, kMaxElement, where),
            .crc32c = integer_field<std::uint32_t>(
                piece, "crc32c", 0, std::numeric_limits<std::uint32_t>::max(), where)};
        if (piece.contains("offset")) {
          read.offset = integer_field<std::uint64_t>(
              piece, "offset", 0, std::numeric_limits<std::uint64_t>::max(), where);
        }
        tensor.pieces.push_back(read);
      }
      metadata.tensors.push_back(std::move(tensor));
    }
    metadata.values = document.at("values");
    check_consistency(metadata, where);
    return metadata;
  } catch (const json::exception& error) {
    throw CorruptCheckpoint(fmt::format("{} is incomplete: {}", where, error.what()));
  }
}

std::string read_metadata_text(FileEnv& env, const std::filesystem::path& step_dir) {
  const std::filesystem::path path = step_dir / kMetadataFile;
  for (const auto& link : {step_dir, path}) {
    if (env.is_symlink(link)) {
      throw CorruptCheckpoint(fmt::format(
          "{} is a symbolic link; a checkpoint's steps and files are never links, so it is not "
          "read (copy the step into the checkpoint directory instead)",
          link.string()));
    }
  }
  try {
    const std::uint64_t size = env.file_size(path);
    if (size > kMaxMetadataBytes) {
      throw CorruptCheckpoint(
          fmt::format("{} has {} bytes, more than a checkpoint's metadata "
                      "can have ({})",
                      path.string(), size, kMaxMetadataBytes));
    }
    return env.read_file(path);
  } catch (const CorruptCheckpoint&) {
    throw;
  } catch (const std::exception& failure) {
    throw CorruptCheckpoint(fmt::format("incomplete checkpoint: {}", failure.what()));
  }
}

}  // namespace lockstep::checkpoint
