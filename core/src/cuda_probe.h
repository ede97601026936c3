// Internal: checks that this build carries code for the bound GPU.
#pragma once

#include <string>

namespace lockstep::detail {

// Launches a trivial kernel on the current device and waits for it. Returns
// an empty string on success, otherwise CUDA's explanation (for a GPU whose
// architecture is missing from CMAKE_CUDA_ARCHITECTURES: "no kernel image is
// available for execution on the device").
std::string probe_current_device();

}  // namespace lockstep::detail
