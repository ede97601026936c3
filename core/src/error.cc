#include "lockstep/error.h"

#include <string>

#include <fmt/format.h>

namespace lockstep::detail {

std::string format_call_failure(std::string_view library, int code,
                                std::string_view library_message, std::string_view call,
                                const char* file, int line) {
  return fmt::format("{}:{}: {} failed: {} ({} error {})", file, line, call, library_message,
                     library, code);
}

}  // namespace lockstep::detail
