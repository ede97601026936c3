#include "hdf5_handles.h"

#include "lockstep/log.h"

namespace lockstep::checkpoint {

namespace detail {
void log_close_failure(const char* what, hid_t id) {
  log::warn("closing HDF5 {} {} failed; the file may not be complete", what, id);
}
}  // namespace detail

std::unique_lock<std::mutex> lock_hdf5() {
  // The one process-wide object of this component: HDF5 itself is one
  // process-wide library, so its lock cannot belong to any Checkpointer.
  static std::mutex mutex;
  std::unique_lock<std::mutex> lock(mutex);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  return lock;
}

}  // namespace lockstep::checkpoint
