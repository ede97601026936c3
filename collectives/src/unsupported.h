// The one wording of "this backend cannot do that", shared by the backends.
#pragma once

#include <string>
#include <string_view>

#include "lockstep/error.h"

namespace lockstep::detail {

[[noreturn]] inline void throw_unsupported(std::string_view backend, std::string_view what) {
  throw UsageError("backend " + std::string(backend) + " does not support " + std::string(what));
}

}  // namespace lockstep::detail
