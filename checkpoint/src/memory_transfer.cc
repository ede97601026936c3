#include "memory_transfer.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "collective_text.h"
#include "crc32c.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"

namespace lockstep::checkpoint {

namespace fs = std::filesystem;

namespace {

// Parts small enough to keep one buffer per transfer, large enough that a
// message costs little next to its bytes.
constexpr std::uint64_t kPartBytes = 8U << 20;
// The size a sender announces when it cannot read its file.
constexpr std::uint64_t kUnreadable = std::numeric_limits<std::uint64_t>::max();
constexpr int kTag = 0x4c53;

// One side of a transfer, on this rank.
struct Side {
  const FileTransfer* transfer = nullptr;
  bool sending = false;
  std::uint64_t size = 0;
  std::uint64_t done = 0;
  std::unique_ptr<ReadableFile> in = nullptr;
  std::unique_ptr<WritableFile> out = nullptr;
  std::vector<std::byte> buffer = {};    // a part received, or read or gathered to send
  std::span<const std::byte> part = {};  // sender: the part to send (in `buffer` or in place)
  std::size_t segment = 0;               // sender with contents: where the next part begins
  std::size_t segment_offset = 0;
  std::uint32_t crc = 0;
  std::uint64_t trailer = 0;  // the sender's verdict (bit 32) and CRC-32C
  std::string error = {};

  bool moving() const { return size != kUnreadable && done < size; }
  int peer() const { return sending ? transfer->to : transfer->from; }
};

void post(Side& side, void* data, int bytes, MPI_Comm comm, std::vector<MPI_Request>& requests) {
  MPI_Request& request = requests.emplace_back(MPI_REQUEST_NULL);
  if (side.sending) {
    LOCKSTEP_CHECK_MPI(MPI_Isend(data, bytes, MPI_BYTE, side.peer(), kTag, comm, &request));
  } else {
    LOCKSTEP_CHECK_MPI(MPI_Irecv(data, bytes, MPI_BYTE, side.peer(), kTag, comm, &request));
  }
}

// The part in `side.part` (sender) or into `side.buffer` (receiver).
void post_part(Side& side, MPI_Comm comm, std::vector<MPI_Request>& requests) {
  MPI_Request& request = requests.emplace_back(MPI_REQUEST_NULL);
  const int bytes = static_cast<int>(side.part.size());
  if (side.sending) {
    LOCKSTEP_CHECK_MPI(
        MPI_Isend(side.part.data(), bytes, MPI_BYTE, side.peer(), kTag, comm, &request));
  } else {
    LOCKSTEP_CHECK_MPI(
        MPI_Irecv(side.buffer.data(), bytes, MPI_BYTE, side.peer(), kTag, comm, &request));
  }
}

void open_ends(Side& side, FileEnv& env) {
  const FileTransfer& transfer = *side.transfer;
  try {
    if (side.sending && !transfer.contents.empty()) {
      side.size = 0;
      for (const auto& segment : transfer.contents) side.size += segment.size();
      side.crc = transfer.crc32c;
    } else if (side.sending) {
      side.size = env.file_size(transfer.source);
      side.in = env.new_readable_file(transfer.source);
    } else {
      side.out = env.new_writable_file(transfer.target);
    }
  } catch (const std::exception& failure) {
    side.error = failure.what();
    if (side.sending) side.size = kUnreadable;
  }
}

// A sender's next part from the bytes it holds: in place when the part
// lies inside one of them, else gathered into the buffer.
void take_part(Side& side, std::size_t bytes) {
  const auto& contents = side.transfer->contents;
  while (side.segment_offset == contents[side.segment].size()) {
    ++side.segment;
    side.segment_offset = 0;
  }
  const auto here = contents[side.segment].subspan(side.segment_offset);
  if (here.size() >= bytes) {
    side.part = here.first(bytes);
    side.segment_offset += bytes;
    return;
  }
  side.buffer.resize(bytes);
  for (std::size_t filled = 0; filled < bytes;) {
    const auto from = contents[side.segment].subspan(side.segment_offset);
    const std::size_t take = std::min(from.size(), bytes - filled);
    std::copy_n(from.begin(), take, side.buffer.begin() + static_cast<std::ptrdiff_t>(filled));
    filled += take;
    side.segment_offset += take;
    if (side.segment_offset == contents[side.segment].size() && filled < bytes) {
      ++side.segment;
      side.segment_offset = 0;
    }
  }
  side.part = side.buffer;
}

// Reads (sender) the next part into the buffer, or takes it from the bytes
// it holds, or makes room for it (receiver); a sender that cannot read
// sends the part anyway, so that its receiver is not left waiting, and
// fails the transfer at the end.
void next_part(Side& side) {
  const auto bytes = static_cast<std::size_t>(std::min(kPartBytes, side.size - side.done));
  if (side.sending && !side.transfer->contents.empty()) {
    take_part(side, bytes);
    return;
  }
  side.buffer.resize(bytes);
  side.part = side.buffer;
  if (!side.sending || !side.error.empty()) return;
  try {
    side.in->read_at(side.done, side.buffer);
    side.crc = crc32c(side.buffer, side.crc);
  } catch (const std::exception& failure) {
    side.error = failure.what();
  }
}

// The receiver's half of a part that arrived: checksum and write.
void store_part(Side& side) {
  side.crc = crc32c(side.buffer, side.crc);
  if (side.out && side.error.empty()) {
    try {
      side.out->append(side.buffer);
    } catch (const std::exception& failure) {
      side.error = failure.what();
    }
  }
}

// The receiver's verdict once the trailer arrived; removes a file that did
// not arrive whole.
void finish_receiving(Side& side, FileEnv& env, std::uint64_t& bytes_written) {
  const FileTransfer& transfer = *side.transfer;
  if (side.size == kUnreadable) {
    side.error = fmt::format("rank {} cannot read {}", transfer.from, transfer.source.string());
  } else if ((side.trailer >> 32) == 0) {
    side.error = fmt::format("rank {} failed reading {}", transfer.from, transfer.source.string());
  } else if (static_cast<std::uint32_t>(side.trailer) != side.crc && side.error.empty()) {
    side.error = fmt::format("{} from rank {} arrived damaged (CRC-32C {:08x}, sent {:08x})",
                             transfer.target.string(), transfer.from, side.crc,
                             static_cast<std::uint32_t>(side.trailer));
  }
  if (side.error.empty() && side.out) {
    try {
      side.out->sync();
      side.out->close();
      bytes_written += side.size;
      return;
    } catch (const std::exception& failure) {
      side.error = failure.what();
    }
  }
  side.out.reset();
  try {
    env.remove_all(transfer.target);
  } catch (const std::exception& cleanup) {
    log::warn("cannot remove {}: {}", transfer.target.string(), cleanup.what());
  }
}

}  // namespace

std::string memory_node_name(const std::string& requested) {
  const bool plain = !requested.empty() && requested.size() <= 64 && requested.front() != '.' &&
                     std::all_of(requested.begin(), requested.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
                     });
  if (plain) return requested;
  return fmt::format("node-{:016x}", std::hash<std::string>{}(requested));
}

int NodeMap::partner(int rank) const {
  if (nodes() < 2) return -1;
  const int node = node_of[static_cast<std::size_t>(rank)];
  const auto& here = ranks[static_cast<std::size_t>(node)];
  const auto place = std::find(here.begin(), here.end(), rank) - here.begin();
  const auto& next = ranks[static_cast<std::size_t>((node + 1) % nodes())];
  return next[static_cast<std::size_t>(place) % next.size()];
}

std::vector<int> NodeMap::partners_of(int rank) const {
  std::vector<int> sources;
  for (int r = 0; r < static_cast<int>(node_of.size()); ++r) {
    if (partner(r) == rank) sources.push_back(r);
  }
  return sources;
}

NodeMap node_map(MPI_Comm comm, const std::string& node_name) {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  const auto names = gather_text(comm, 0, node_name);
  std::string text;
  if (rank == 0) {
    std::vector<std::string> seen;
    std::vector<int> node_of;
    for (const auto& name : names) {
      const auto found = std::find(seen.begin(), seen.end(), name);
      node_of.push_back(static_cast<int>(found - seen.begin()));
      if (found == seen.end()) seen.push_back(name);
    }
    text = nlohmann::json(node_of).dump();
  }
  broadcast_text(comm, 0, text);
  NodeMap map;
  map.node_of = nlohmann::json::parse(text).get<std::vector<int>>();
  for (int r = 0; r < static_cast<int>(map.node_of.size()); ++r) {
    const auto node = static_cast<std::size_t>(map.node_of[static_cast<std::size_t>(r)]);
    if (map.ranks.size() <= node) map.ranks.resize(node + 1);
    map.ranks[node].push_back(r);
  }
  return map;
}

std::string move_files(MPI_Comm comm, FileEnv& env, const std::vector<FileTransfer>& transfers,
                       std::uint64_t& bytes_written) {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  std::vector<Side> sides;
  for (const FileTransfer& transfer : transfers) {
    if (transfer.from == transfer.to) continue;  // nothing to move
    if (transfer.from == rank) sides.push_back({.transfer = &transfer, .sending = true});
    if (transfer.to == rank) sides.push_back({.transfer = &transfer, .sending = false});
  }
  std::vector<MPI_Request> requests;
  // The sizes first: both ends then know how many parts follow.
  for (Side& side : sides) {
    open_ends(side, env);
    post(side, &side.size, sizeof side.size, comm, requests);
  }
  wait_idly(requests);
  for (;;) {
    requests.clear();
    for (Side& side : sides) {
      if (!side.moving()) continue;
      next_part(side);
      post_part(side, comm, requests);
    }
    if (requests.empty()) break;
    wait_idly(requests);
    for (Side& side : sides) {
      if (!side.moving()) continue;
      if (!side.sending) store_part(side);
      side.done += side.part.size();
    }
  }
  requests.clear();
  for (Side& side : sides) {
    side.buffer = {};
    if (side.size == kUnreadable) continue;
    if (side.sending) side.trailer = (side.error.empty() ? 1ULL << 32 : 0) | side.crc;
    post(side, &side.trailer, sizeof side.trailer, comm, requests);
  }
  wait_idly(requests);
  std::string errors;
  for (Side& side : sides) {
    if (!side.sending) finish_receiving(side, env, bytes_written);
    if (side.error.empty()) continue;
    errors += fmt::format("{}rank {}: {}", errors.empty() ? "" : "; ", rank, side.error);
  }
  return errors;
}

}  // namespace lockstep::checkpoint
