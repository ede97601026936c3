// Fuzzes parse_metadata(), the reader of a checkpoint's metadata.json.
//
// A bad file must end in CorruptCheckpoint, or UsageError for a newer format
// version; any other exception, a crash or a sanitizer report fails the run.
// The checksum would stop almost every mutation at the door, so each input
// that is a JSON object is also parsed resealed, with its checksum
// recomputed as anyone who can edit the file can do: that reaches the field
// checks behind it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "crc32c.h"
#include "metadata.h"

namespace {

using lockstep::UsageError;
using lockstep::checkpoint::CorruptCheckpoint;
using lockstep::checkpoint::Metadata;
using lockstep::checkpoint::parse_metadata;
using lockstep::checkpoint::serialize;

constexpr char kWhere[] = "step-1/metadata.json";

// What is accepted is what the writer could have written: its own
// serialization must be accepted again.
void check_round_trip(const Metadata& metadata) {
  try {
    parse_metadata(serialize(metadata), kWhere);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "accepted metadata does not parse after serialize(): %s\n", error.what());
    std::abort();
  }
}

void parse_expecting_typed_errors(const std::string& text) {
  try {
    check_round_trip(parse_metadata(text, kWhere));
  } catch (const CorruptCheckpoint&) {
    // Damage, reported as such: the expected outcome.
  } catch (const UsageError&) {
    // A newer format version.
  }
}

// Whether `text` nests arrays or objects deeper than parse_metadata()
// accepts. Such a text is not resealed: nlohmann prints recursively, and
// this harness must not overflow the stack where the parser refuses.
bool too_deep(std::string_view text) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (in_string) {
      if (text[i] == '\\') {
        ++i;
      } else if (text[i] == '"') {
        in_string = false;
      }
    } else if (text[i] == '"') {
      in_string = true;
    } else if (text[i] == '[' || text[i] == '{') {
      if (++depth > lockstep::checkpoint::kMaxMetadataDepth) return true;
    } else if ((text[i] == ']' || text[i] == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// `text` with its "checksum" member set to the one its other members have.
std::string resealed(const std::string& text) {
  if (too_deep(text)) return {};
  nlohmann::json document = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return {};
  document.erase("checksum");
  const std::string body = document.dump();
  document["checksum"] =
      lockstep::checkpoint::crc32c(std::as_bytes(std::span(body.data(), body.size())));
  return document.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  parse_expecting_typed_errors(text);
  if (const std::string sealed = resealed(text); !sealed.empty()) {
    parse_expecting_typed_errors(sealed);
  }
  return 0;
}
