#include "hdf5_files.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "hdf5_check.h"
#include "hdf5_handles.h"

namespace lockstep::checkpoint {

namespace {

// HDF5 has no predefined half types. f16 gets an IEEE binary16 type, which
// h5py and numpy read as float16. bf16 has no numpy type, so it is stored as
// its raw uint16 bits with the attribute lockstep_dtype = "bf16" (see
// docs/CHECKPOINTS.md); widening it would double the bytes written.
H5Datatype file_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_IEEE_F32LE)));
    case DType::kF64:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_IEEE_F64LE)));
    case DType::kI32:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_STD_I32LE)));
    case DType::kI64:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_STD_I64LE)));
    case DType::kU8:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_STD_U8LE)));
    case DType::kBF16:
      return H5Datatype(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_STD_U16LE)));
    case DType::kF16: {
      H5Datatype type(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_IEEE_F32LE)));
      LOCKSTEP_CHECK_HDF5(H5Tset_fields(type.get(), 15, 10, 5, 0, 10));
      LOCKSTEP_CHECK_HDF5(H5Tset_size(type.get(), 2));
      LOCKSTEP_CHECK_HDF5(H5Tset_ebias(type.get(), 15));
      return type;
    }
  }
  throw UsageError(fmt::format("no HDF5 type for dtype {}", static_cast<int>(dtype)));
}

std::vector<hsize_t> to_hsize(const std::vector<std::int64_t>& values) {
  std::vector<hsize_t> result;
  result.reserve(values.size());
  for (const auto value : values) result.push_back(static_cast<hsize_t>(value));
  return result;
}

H5Dataspace simple_space(const Shape& shape) {
  if (shape.empty()) return H5Dataspace(LOCKSTEP_CHECK_HDF5(H5Screate(H5S_SCALAR)));
  const auto dims = to_hsize(shape);
  return H5Dataspace(
      LOCKSTEP_CHECK_HDF5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Datatype type(LOCKSTEP_CHECK_HDF5(H5Tcopy(H5T_C_S1)));
  LOCKSTEP_CHECK_HDF5(H5Tset_size(type.get(), H5T_VARIABLE));
  LOCKSTEP_CHECK_HDF5(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  H5Dataspace space(LOCKSTEP_CHECK_HDF5(H5Screate(H5S_SCALAR)));
  H5Attribute attribute(LOCKSTEP_CHECK_HDF5(
      H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  const char* text = value.c_str();
  LOCKSTEP_CHECK_HDF5(H5Awrite(attribute.get(), type.get(), &text));
}

void write_int_attribute(hid_t object, const char* name, std::int64_t value) {
  H5Dataspace space(LOCKSTEP_CHECK_HDF5(H5Screate(H5S_SCALAR)));
  H5Attribute attribute(LOCKSTEP_CHECK_HDF5(
      H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT)));
  LOCKSTEP_CHECK_HDF5(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value));
}

// HDF5's core driver keeps its file in memory obtained through these
// callbacks, which hand out one reusable buffer (a Tensor, `udata`).
void* grow_image_buffer(void* udata, std::size_t size, const void* old_data) noexcept {
  Tensor& buffer = *static_cast<Tensor*>(udata);
  if (buffer.nbytes() >= size) return buffer.data();
  try {
    Tensor bigger = Tensor::allocate("HDF5 file image", DType::kU8,
                                     {static_cast<std::int64_t>(size + size / 4)});
    if (old_data != nullptr) std::memcpy(bigger.data(), buffer.data(), buffer.nbytes());
    buffer = bigger;
    return buffer.data();
  } catch (const std::exception&) {
    return nullptr;  // HDF5 reports an allocation failure
  }
}

void* image_malloc(std::size_t size, H5FD_file_image_op_t, void* udata) {
  return grow_image_buffer(udata, size, nullptr);
}
void* image_realloc(void* data, std::size_t size, H5FD_file_image_op_t, void* udata) {
  return grow_image_buffer(udata, size, data);
}
void* image_memcpy(void* destination, const void* source, std::size_t size, H5FD_file_image_op_t,
                   void*) {
  return std::memcpy(destination, source, size);
}
herr_t image_free(void*, H5FD_file_image_op_t, void*) { return 0; }  // the buffer is kept
// HDF5 copies the property list, and with it `udata`: the Tensor it points
// to outlives every copy, so a copy is the same pointer.
void* udata_copy(void* udata) { return udata; }
herr_t udata_free(void*) { return 0; }

// A file that lives in memory until its image is taken; in `image_buffer`
// when one is given.
H5File create_in_memory(std::size_t expected_bytes, Tensor* image_buffer = nullptr,
                        std::size_t alignment = 1) {
  H5PropertyList access(LOCKSTEP_CHECK_HDF5(H5Pcreate(H5P_FILE_ACCESS)));
  if (alignment > 1) {
    LOCKSTEP_CHECK_HDF5(H5Pset_alignment(access.get(), kAlignedDataThreshold, alignment));
  }
  if (image_buffer != nullptr) {
    H5FD_file_image_callbacks_t callbacks = {image_malloc, image_memcpy, image_realloc, image_free,
                                             udata_copy,   udata_free,   image_buffer};
    LOCKSTEP_CHECK_HDF5(H5Pset_file_image_callbacks(access.get(), &callbacks));
  }
  // One allocation of the expected size instead of many small growths.
  const std::size_t increment = std::max<std::size_t>(expected_bytes + (1U << 20), 1U << 20);
  LOCKSTEP_CHECK_HDF5(H5Pset_fapl_core(access.get(), increment, 0));
  return H5File(
      LOCKSTEP_CHECK_HDF5(H5Fcreate("in-memory.h5", H5F_ACC_TRUNC, H5P_DEFAULT, access.get())));
}

std::vector<std::byte> take_image(const H5File& file) {
  LOCKSTEP_CHECK_HDF5(H5Fflush(file.get(), H5F_SCOPE_LOCAL));
  const auto size = LOCKSTEP_CHECK_HDF5(H5Fget_file_image(file.get(), nullptr, 0));
  std::vector<std::byte> image(static_cast<std::size_t>(size));
  LOCKSTEP_CHECK_HDF5(H5Fget_file_image(file.get(), image.data(), image.size()));
  return image;
}

H5PropertyList intermediate_groups() {
  H5PropertyList list(LOCKSTEP_CHECK_HDF5(H5Pcreate(H5P_LINK_CREATE)));
  LOCKSTEP_CHECK_HDF5(H5Pset_create_intermediate_group(list.get(), 1));
  return list;
}

[[noreturn]] void fail_on_dataset(const std::filesystem::path& path, const TensorLayout& layout,
                                  std::string_view why) {
  H5Eclear2(H5E_DEFAULT);
  throw CorruptCheckpoint(fmt::format("{}: dataset {} {}", path.string(), layout.path, why));
}

// Opens the piece's dataset in `file` after checking its size and element
// size. Every failure here is the file's: a damaged file is skipped, not
// fatal.
H5Dataset open_piece_dataset(hid_t file, const std::filesystem::path& path,
                             const TensorLayout& layout, const Piece& piece) {
  const auto fail = [&](std::string_view why) { fail_on_dataset(path, layout, why); };
  // Every link on the way must be a hard link: an external link (or a soft
  // link to one) would make HDF5 open another file, anywhere.
  for (std::size_t end = layout.path.find('/');; end = layout.path.find('/', end + 1)) {
    const std::string prefix = layout.path.substr(0, end);
    H5L_info_t link{};
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0 ||
        H5Lget_info(file, prefix.c_str(), &link, H5P_DEFAULT) < 0) {
      fail("is missing or unreadable");
    }
    if (link.type != H5L_TYPE_HARD) {
      fail(fmt::format("is reached through a link ('{}') instead of being stored in the file",
                       prefix));
    }
    if (end == std::string::npos) break;
  }
  const hid_t raw_dataset = H5Dopen2(file, layout.path.c_str(), H5P_DEFAULT);
  if (raw_dataset < 0) fail("is missing or unreadable");
  H5Dataset dataset(raw_dataset);
  const hid_t raw_space = H5Dget_space(dataset.get());
  if (raw_space < 0) fail("has an unreadable dataspace");
  const H5Dataspace space(raw_space);
  hsize_t count = 0;
  if (H5Sget_simple_extent_ndims(space.get()) != 1 ||
      H5Sget_simple_extent_dims(space.get(), &count, nullptr) != 1 ||
      count != static_cast<hsize_t>(piece.count)) {
    fail(fmt::format("does not hold the {} elements the metadata lists", piece.count));
  }
  const hid_t raw_type = H5Dget_type(dataset.get());
  if (raw_type < 0) fail("has an unreadable datatype");
  const H5Datatype type(raw_type);
  if (H5Tget_size(type.get()) != dtype_size(layout.dtype)) {
    fail(fmt::format("is not of dtype {}", dtype_name(layout.dtype)));
  }
  // Stored as the writer stores it: in this file, contiguously, unfiltered.
  // A virtual dataset or external storage would read other files.
  const hid_t raw_create = H5Dget_create_plist(dataset.get());
  if (raw_create < 0) fail("has an unreadable creation property list");
  const H5PropertyList create(raw_create);
  if (H5Pget_layout(create.get()) != H5D_CONTIGUOUS || H5Pget_nfilters(create.get()) != 0 ||
      H5Pget_external_count(create.get()) != 0) {
    fail("is not stored contiguously and unfiltered in the file itself");
  }
  return dataset;
}

}  // namespace

std::vector<std::string> rank_file_key(const std::vector<TensorLayout>& layouts,
                                       const std::vector<std::vector<Piece>>& pieces) {
  std::vector<std::string> key;
  for (std::size_t t = 0; t < layouts.size(); ++t) {
    for (const auto& piece : pieces[t]) {
      key.push_back(fmt::format("{}:{}:{}:{}", layouts[t].path, dtype_name(layouts[t].dtype),
                                piece.begin, piece.count));
    }
  }
  return key;
}

RankFilePlan plan_rank_file(const std::vector<TensorLayout>& layouts,
                            const std::vector<std::vector<Piece>>& pieces) {
  struct DataRegion {
    haddr_t address = 0;
    std::size_t bytes = 0;
    std::size_t piece = 0;
  };
  std::vector<DataRegion> regions;
  std::size_t data_bytes = 0;
  for (std::size_t t = 0; t < layouts.size(); ++t) {
    for (const auto& piece : pieces[t]) {
      data_bytes += static_cast<std::size_t>(piece.count) * dtype_size(layouts[t].dtype);
    }
  }
  Tensor image;  // the temporary file image, freed on return
  std::size_t file_size = 0;
  {
    auto lock = lock_hdf5();
    H5File file = create_in_memory(data_bytes, &image, kDataAlignment);
    const H5PropertyList link_create = intermediate_groups();
    // Space for the data at creation, never written by HDF5: the save writes
    // it. Without timestamps the file's own bytes are the same every time.
    H5PropertyList create(LOCKSTEP_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
    LOCKSTEP_CHECK_HDF5(H5Pset_layout(create.get(), H5D_CONTIGUOUS));
    LOCKSTEP_CHECK_HDF5(H5Pset_alloc_time(create.get(), H5D_ALLOC_TIME_EARLY));
    LOCKSTEP_CHECK_HDF5(H5Pset_fill_time(create.get(), H5D_FILL_TIME_NEVER));
    LOCKSTEP_CHECK_HDF5(H5Pset_obj_track_times(create.get(), 0));
    for (std::size_t t = 0; t < layouts.size(); ++t) {
      for (const auto& piece : pieces[t]) {
        const auto& layout = layouts[t];
        const H5Datatype type = file_type(layout.dtype);
        const H5Dataspace space = simple_space({piece.count});
        const H5Dataset dataset(
            LOCKSTEP_CHECK_HDF5(H5Dcreate2(file.get(), layout.path.c_str(), type.get(), space.get(),
                                           link_create.get(), create.get(), H5P_DEFAULT)));
        write_string_attribute(dataset.get(), "lockstep_dtype",
                               std::string(dtype_name(layout.dtype)));
        write_int_attribute(dataset.get(), "lockstep_begin", piece.begin);
        const std::size_t bytes = static_cast<std::size_t>(piece.count) * dtype_size(layout.dtype);
        const haddr_t address = H5Dget_offset(dataset.get());
        if (address == HADDR_UNDEF) {
          throw BackendError(
              "HDF5", -1, fmt::format("no file space was allocated for dataset {}", layout.path));
        }
        regions.push_back({address, bytes, regions.size()});
      }
    }
    LOCKSTEP_CHECK_HDF5(H5Fflush(file.get(), H5F_SCOPE_LOCAL));
    file_size =
        static_cast<std::size_t>(LOCKSTEP_CHECK_HDF5(H5Fget_file_image(file.get(), nullptr, 0)));
    file = H5File();  // closing writes nothing more after the flush; the bytes stay in `image`
  }

  RankFilePlan plan;
  plan.file_size = file_size;
  plan.key = rank_file_key(layouts, pieces);
  // The staging buffer in tensor order, each piece at its file offset's
  // remainder modulo kDataAlignment.
  for (const auto& region : regions) {
    const std::size_t end = plan.staged_size;
    // Unsigned wrap-around keeps remainders modulo a power of two.
    const std::size_t shift = (static_cast<std::size_t>(region.address) - end) % kDataAlignment;
    plan.staged_offsets.push_back(end + shift);
    plan.piece_offsets.push_back(region.address);
    plan.staged_size = end + shift + region.bytes;
  }
  // The file in order: HDF5's bytes between the data regions.
  std::sort(regions.begin(), regions.end(),
            [](const auto& a, const auto& b) { return a.address < b.address; });
  const auto* bytes = static_cast<const std::byte*>(image.data());
  std::size_t cursor = 0;
  const auto add_header = [&](std::size_t end) {
    if (end <= cursor) return;
    plan.segments.push_back(
        {.size = end - cursor, .data = false, .offset = plan.header_bytes.size()});
    plan.header_bytes.insert(plan.header_bytes.end(), bytes + cursor, bytes + end);
  };
  for (const auto& region : regions) {
    const auto address = static_cast<std::size_t>(region.address);
    if (address < cursor || address + region.bytes > file_size) {
      throw BackendError("HDF5", -1, "the data regions of a rank file overlap or exceed it");
    }
    add_header(address);
    plan.segments.push_back({.size = region.bytes, .data = true, .piece = region.piece});
    cursor = address + region.bytes;
  }
  add_header(file_size);
  return plan;
}

std::vector<std::string> master_file_key(const Metadata& metadata) {
  std::vector<std::string> key;
  for (const auto& tensor : metadata.tensors) {
    std::string entry = fmt::format("{}:{}:{}", tensor.layout.path, dtype_name(tensor.layout.dtype),
                                    shape_str(tensor.layout.shape));
    for (const auto& piece : tensor.pieces) {
      entry += fmt::format(":{}/{}/{}", piece.file, piece.begin, piece.count);
    }
    key.push_back(std::move(entry));
  }
  return key;
}

MasterFileTemplate plan_master_file(const Metadata& metadata) {
  auto lock = lock_hdf5();
  H5File file = create_in_memory(0);
  const H5PropertyList link_create = intermediate_groups();
  for (const auto& tensor : metadata.tensors) {
    const auto& layout = tensor.layout;
    const H5Datatype type = file_type(layout.dtype);
    const H5Dataspace space = simple_space(layout.shape);
    H5PropertyList create(LOCKSTEP_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
    LOCKSTEP_CHECK_HDF5(H5Pset_obj_track_times(create.get(), 0));
    const bool stored_in_place = layout.shape.empty() || layout.numel == 0;
    if (!stored_in_place) {
      LOCKSTEP_CHECK_HDF5(H5Pset_layout(create.get(), H5D_VIRTUAL));
      for (const auto& piece : tensor.pieces) {
        const std::string source_file = rank_file_name(piece.file);
        const std::string source_dataset = "/" + layout.path;
        std::int64_t source_offset = 0;
        for (const auto& box : flat_range_boxes(layout.shape, piece.begin, piece.count)) {
          const H5Dataspace target = simple_space(layout.shape);
          const auto start = to_hsize(box.start);
          const auto count = to_hsize(box.count);
          LOCKSTEP_CHECK_HDF5(H5Sselect_hyperslab(target.get(), H5S_SELECT_SET, start.data(),
                                                  nullptr, count.data(), nullptr));
          std::int64_t box_elements = 1;
          for (const auto extent : box.count) box_elements *= extent;
          const H5Dataspace source = simple_space({piece.count});
          const hsize_t source_start = static_cast<hsize_t>(source_offset);
          const hsize_t source_count = static_cast<hsize_t>(box_elements);
          LOCKSTEP_CHECK_HDF5(H5Sselect_hyperslab(source.get(), H5S_SELECT_SET, &source_start,
                                                  nullptr, &source_count, nullptr));
          LOCKSTEP_CHECK_HDF5(H5Pset_virtual(create.get(), target.get(), source_file.c_str(),
                                             source_dataset.c_str(), source.get()));
          source_offset += box_elements;
        }
      }
    }
    const H5Dataset dataset(
        LOCKSTEP_CHECK_HDF5(H5Dcreate2(file.get(), layout.path.c_str(), type.get(), space.get(),
                                       link_create.get(), create.get(), H5P_DEFAULT)));
    write_string_attribute(dataset.get(), "lockstep_dtype", std::string(dtype_name(layout.dtype)));
  }
  return {.image = take_image(file), .key = master_file_key(metadata)};
}

std::vector<std::byte> build_master_file(const MasterFileTemplate& plan, const Metadata& metadata,
                                         std::span<const std::byte> scalars) {
  auto lock = lock_hdf5();
  H5PropertyList access(LOCKSTEP_CHECK_HDF5(H5Pcreate(H5P_FILE_ACCESS)));
  LOCKSTEP_CHECK_HDF5(H5Pset_fapl_core(access.get(), 1U << 20, 0));
  LOCKSTEP_CHECK_HDF5(H5Pset_file_image(access.get(), const_cast<std::byte*>(plan.image.data()),
                                        plan.image.size()));
  H5File file(LOCKSTEP_CHECK_HDF5(H5Fopen("master.h5", H5F_ACC_RDWR, access.get())));
  std::size_t scalar_offset = 0;
  for (const auto& tensor : metadata.tensors) {
    const auto& layout = tensor.layout;
    if (!layout.shape.empty()) continue;
    const std::size_t bytes = dtype_size(layout.dtype);
    const H5Dataset dataset(
        LOCKSTEP_CHECK_HDF5(H5Dopen2(file.get(), layout.path.c_str(), H5P_DEFAULT)));
    const H5Datatype type = file_type(layout.dtype);
    LOCKSTEP_CHECK_HDF5(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 scalars.subspan(scalar_offset, bytes).data()));
    scalar_offset += bytes;
  }
  const hid_t root = file.get();
  write_string_attribute(root, "lockstep_metadata", to_json(metadata).dump());
  write_int_attribute(root, "step", metadata.step);
  write_int_attribute(root, "world_size", metadata.world_size);
  write_int_attribute(root, "format_version", metadata.format_version);
  write_string_attribute(root, "library_version", metadata.library_version);
  return take_image(file);
}

RankFileReader::RankFileReader(const std::filesystem::path& path) : path_(path) {
  auto lock = lock_hdf5();
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    H5Eclear2(H5E_DEFAULT);
    throw CorruptCheckpoint(fmt::format("cannot open {} as HDF5", path.string()));
  }
  file_ = file;
}

RankFileReader::~RankFileReader() {
  auto lock = lock_hdf5();
  H5File closer(static_cast<hid_t>(file_));
}

void RankFileReader::read(const TensorLayout& layout, const Piece& piece,
                          std::span<std::byte> out) {
  auto lock = lock_hdf5();
  const auto fail = [&](std::string_view why) { fail_on_dataset(path_, layout, why); };
  const H5Dataset dataset = open_piece_dataset(static_cast<hid_t>(file_), path_, layout, piece);
  const hid_t raw_type = H5Dget_type(dataset.get());
  if (raw_type < 0) fail("has an unreadable datatype");
  const H5Datatype type(raw_type);
  // Read with the file's own type: the bytes arrive unconverted, exactly as
  // their checksum was taken.
  if (H5Dread(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) {
    fail("cannot be read (damaged file?)");
  }
}

std::uint64_t RankFileReader::data_offset(const TensorLayout& layout, const Piece& piece) {
  auto lock = lock_hdf5();
  const auto fail = [&](std::string_view why) { fail_on_dataset(path_, layout, why); };
  const H5Dataset dataset = open_piece_dataset(static_cast<hid_t>(file_), path_, layout, piece);
  const haddr_t address = H5Dget_offset(dataset.get());
  if (address == HADDR_UNDEF) fail("has no data in the file");
  return static_cast<std::uint64_t>(address);
}

}  // namespace lockstep::checkpoint
