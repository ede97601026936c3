// One owning class per kind of HDF5 identifier. Each is move-only: HDF5
// identifiers have no cheap duplicate, and a single owner makes the close
// order obvious. Destructors close without throwing and log a failure.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <utility>

namespace lockstep::checkpoint {

namespace detail {
void log_close_failure(const char* what, hid_t id);
}  // namespace detail

template <herr_t (*Close)(hid_t), const char* Kind>
class Hdf5Handle {
 public:
  Hdf5Handle() = default;
  // Takes ownership of a valid identifier (checked by the caller).
  explicit Hdf5Handle(hid_t id) : id_(id) {}
  // Not copyable: two owners would close the identifier twice.
  Hdf5Handle(const Hdf5Handle&) = delete;
  Hdf5Handle& operator=(const Hdf5Handle&) = delete;
  // Movable: the source is left empty and closes nothing.
  Hdf5Handle(Hdf5Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  Hdf5Handle& operator=(Hdf5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~Hdf5Handle() { reset(); }

  hid_t get() const { return id_; }

 private:
  void reset() noexcept {
    if (id_ >= 0 && Close(id_) < 0) detail::log_close_failure(Kind, id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t id_ = H5I_INVALID_HID;
};

inline constexpr char kFileKind[] = "file";
inline constexpr char kGroupKind[] = "group";
inline constexpr char kDatasetKind[] = "dataset";
inline constexpr char kDataspaceKind[] = "dataspace";
inline constexpr char kDatatypeKind[] = "datatype";
inline constexpr char kPropertyListKind[] = "property list";
inline constexpr char kAttributeKind[] = "attribute";

using H5File = Hdf5Handle<H5Fclose, kFileKind>;
using H5Group = Hdf5Handle<H5Gclose, kGroupKind>;
using H5Dataset = Hdf5Handle<H5Dclose, kDatasetKind>;
using H5Dataspace = Hdf5Handle<H5Sclose, kDataspaceKind>;
using H5Datatype = Hdf5Handle<H5Tclose, kDatatypeKind>;
using H5PropertyList = Hdf5Handle<H5Pclose, kPropertyListKind>;
using H5Attribute = Hdf5Handle<H5Aclose, kAttributeKind>;

// The Debian build of parallel HDF5 is not thread-safe, and the background
// writer uses it while the training thread may restore or save with another
// Checkpointer: every HDF5 call of this component holds this lock. Also
// turns off HDF5's printing of its error stack (errors become exceptions).
std::unique_lock<std::mutex> lock_hdf5();

}  // namespace lockstep::checkpoint
