#include "layout.h"

#include <algorithm>
#include <set>
#include <tuple>

#include <fmt/format.h>

namespace lockstep::checkpoint {

void check_name(std::string_view name, std::string_view what) {
  const auto fail = [&](std::string_view why) {
    throw UsageError(
        fmt::format("{} '{}' {}; use names like 'model' or 'layers.0/weight'", what, name, why));
  };
  if (name.empty()) fail("is empty");
  if (name.front() == '/') fail("is an absolute path");
  for (const char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) fail("holds a control character");
    if (c == '\\') fail("holds a backslash");
  }
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    const std::string_view component = name.substr(start, end - start);
    if (component.empty()) fail("has an empty path component");
    if (component == "." || component == "..") fail("would leave its place in the checkpoint");
    start = end + 1;
  }
}

FlatState flatten(const State& state) {
  FlatState flat;
  std::set<std::string, std::less<>> item_names;
  std::set<std::string, std::less<>> paths;
  for (const auto& item : state.items()) {
    check_name(item.name, "state name");
    if (!item_names.insert(item.name).second) {
      throw UsageError(fmt::format("state name '{}' appears twice", item.name));
    }
    if (!item.tensors.empty() && !item.chunks.empty()) {
      throw UsageError(fmt::format(
          "state '{}' holds both whole tensors and chunks; put them in two groups", item.name));
    }
    const auto add = [&](const Tensor& tensor, const Shape& shape, LocalPart part) {
      check_name(tensor.name(), fmt::format("tensor name in state '{}'", item.name));
      TensorLayout layout{.path = item.name + "/" + tensor.name(),
                          .dtype = tensor.dtype(),
                          .shape = shape,
                          .numel = checked_numel(shape, item.name + "/" + tensor.name())};
      if (!paths.insert(layout.path).second) {
        throw UsageError(fmt::format("tensor '{}' appears twice in the state", layout.path));
      }
      if (!part.sharded) part.count = layout.numel;
      if (part.sharded && shape.empty()) {
        throw UsageError(fmt::format(
            "tensor '{}' is a scalar; a scalar cannot be sharded, save it whole", layout.path));
      }
      if (part.sharded &&
          (part.begin < 0 || part.begin > layout.numel || part.count > layout.numel - part.begin)) {
        throw UsageError(fmt::format(
            "the chunk of tensor '{}' holds elements [{}, {}), outside its global shape {} ({} "
            "elements)",
            layout.path, part.begin, part.begin + part.count, shape_str(shape), layout.numel));
      }
      flat.layouts.push_back(std::move(layout));
      flat.tensors.push_back(tensor);
      flat.parts.push_back(part);
    };
    for (const auto& tensor : item.tensors) add(tensor, tensor.shape(), {});
    for (const auto& chunk : item.chunks) {
      add(chunk.local, chunk.global_shape,
          {.sharded = true, .begin = chunk.begin, .count = chunk.local.numel()});
    }
  }
  // A group may not also be a tensor ("model/a" and "model/a/b").
  for (const auto& path : paths) {
    const auto next = paths.upper_bound(path);
    if (next != paths.end() && next->starts_with(path + "/")) {
      throw UsageError(fmt::format("tensor '{}' is also the group of tensor '{}'", path, *next));
    }
  }
  return flat;
}

std::vector<std::vector<Piece>> split_bytes(const std::vector<TensorLayout>& layouts, int files) {
  std::uint64_t total = 0;
  for (const auto& layout : layouts) total += layout.nbytes();
  const auto file_count = static_cast<std::uint64_t>(files);
  // Byte offset where file r's range starts, without overflowing total * r.
  const auto range_start = [&](int r) {
    const auto rank = static_cast<std::uint64_t>(r);
    return total / file_count * rank + total % file_count * rank / file_count;
  };

  std::vector<std::vector<Piece>> pieces(layouts.size());
  std::uint64_t offset = 0;
  for (std::size_t t = 0; t < layouts.size(); ++t) {
    const auto& layout = layouts[t];
    const std::uint64_t element = dtype_size(layout.dtype);
    const auto numel = static_cast<std::uint64_t>(layout.numel);
    // First element of this tensor that belongs to file r: the first whose
    // byte offset is at or past the start of r's range.
    const auto first_element = [&](int r) -> std::uint64_t {
      if (r >= files) return numel;
      const std::uint64_t start = range_start(r);
      if (start <= offset) return 0;
      return std::min(numel, (start - offset + element - 1) / element);
    };
    for (int r = 0; r < files; ++r) {
      const std::uint64_t begin = first_element(r);
      const std::uint64_t end = first_element(r + 1);
      if (end > begin) {
        pieces[t].push_back({.file = r,
                             .begin = static_cast<std::int64_t>(begin),
                             .count = static_cast<std::int64_t>(end - begin)});
      }
    }
    offset += layout.nbytes();
  }
  return pieces;
}

std::vector<std::vector<Piece>> plan_pieces(
    const FlatState& flat,
    const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>>& chunks, int files) {
  std::vector<TensorLayout> replicated;
  for (std::size_t t = 0; t < flat.layouts.size(); ++t) {
    if (!flat.parts[t].sharded) replicated.push_back(flat.layouts[t]);
  }
  const auto split = split_bytes(replicated, files);
  std::vector<std::vector<Piece>> pieces(flat.layouts.size());
  std::size_t next_replicated = 0;
  std::size_t next_sharded = 0;
  for (std::size_t t = 0; t < flat.layouts.size(); ++t) {
    if (!flat.parts[t].sharded) {
      pieces[t] = split[next_replicated++];
      continue;
    }
    const std::size_t k = next_sharded++;
    const TensorLayout& layout = flat.layouts[t];
    std::vector<Piece>& own = pieces[t];
    for (int r = 0; r < files; ++r) {
      const auto& [begin, count] = chunks[static_cast<std::size_t>(r)][k];
      if (count > 0) own.push_back({.file = r, .begin = begin, .count = count});
    }
    std::sort(own.begin(), own.end(), [](const Piece& a, const Piece& b) {
      return std::tie(a.begin, a.file) < std::tie(b.begin, b.file);
    });
    std::int64_t next = 0;
    int previous = -1;  // the rank whose chunk ends at `next`
    for (const Piece& piece : own) {
      if (piece.begin < next) {
        throw UsageError(fmt::format(
            "the chunks of tensor '{}' overlap: rank {} holds elements up to {}, rank {} from {}; "
            "each element must be saved by one rank",
            layout.path, previous, next, piece.file, piece.begin));
      }
      if (piece.begin > next) {
        throw UsageError(fmt::format(
            "the chunks of tensor '{}' leave elements [{}, {}) to no rank (between {} and rank "
            "{}); the ranks' chunks must cover the tensor",
            layout.path, next, piece.begin,
            previous < 0 ? std::string("its start") : fmt::format("rank {}", previous),
            piece.file));
      }
      next = piece.begin + piece.count;
      previous = piece.file;
    }
    if (next != layout.numel) {
      throw UsageError(fmt::format(
          "the chunks of tensor '{}' leave elements [{}, {}) to no rank (after {}); the ranks' "
          "chunks must cover the tensor",
          layout.path, next, layout.numel,
          previous < 0 ? std::string("its start") : fmt::format("rank {}", previous)));
    }
  }
  return pieces;
}

namespace {

void decompose(const Shape& shape, std::size_t dim, std::vector<std::int64_t>& prefix,
               std::int64_t begin, std::int64_t end, std::vector<Box>& boxes) {
  const std::size_t ndim = shape.size();
  const auto emit = [&](std::int64_t row_start, std::int64_t rows) {
    Box box;
    box.start = prefix;
    box.count.assign(prefix.size(), 1);
    box.start.push_back(row_start);
    box.count.push_back(rows);
    for (std::size_t d = dim + 1; d < ndim; ++d) {
      box.start.push_back(0);
      box.count.push_back(shape[d]);
    }
    boxes.push_back(std::move(box));
  };
  std::int64_t inner = 1;
  for (std::size_t d = dim + 1; d < ndim; ++d) inner *= shape[d];
  const auto recurse = [&](std::int64_t row, std::int64_t sub_begin, std::int64_t sub_end) {
    prefix.push_back(row);
    decompose(shape, dim + 1, prefix, sub_begin, sub_end, boxes);
    prefix.pop_back();
  };

  if (inner == 1) {
    emit(begin, end - begin);
    return;
  }
  const std::int64_t full_begin = (begin + inner - 1) / inner;  // first whole row
  const std::int64_t full_end = end / inner;                    // past the last whole row
  if (full_begin > full_end) {                                  // inside one row
    const std::int64_t row = begin / inner;
    recurse(row, begin - row * inner, end - row * inner);
    return;
  }
  if (begin < full_begin * inner) recurse(full_begin - 1, begin - (full_begin - 1) * inner, inner);
  if (full_end > full_begin) emit(full_begin, full_end - full_begin);
  if (end > full_end * inner) recurse(full_end, 0, end - full_end * inner);
}

}  // namespace

std::vector<Box> flat_range_boxes(const Shape& shape, std::int64_t begin, std::int64_t count) {
  std::vector<Box> boxes;
  if (count <= 0) return boxes;
  if (shape.empty()) {
    boxes.push_back({});
    return boxes;
  }
  std::vector<std::int64_t> prefix;
  decompose(shape, 0, prefix, begin, begin + count, boxes);
  return boxes;
}

}  // namespace lockstep::checkpoint
