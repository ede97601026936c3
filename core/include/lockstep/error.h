// Error types of lockstep. Every failure a user can see is one of these; the
// message says what was expected, what was found, and what to do.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace lockstep {

// Base of every lockstep exception.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// The caller asked for something invalid: a bad argument, option or
// configuration value. Fixing the input fixes it.
class UsageError : public Error {
 public:
  using Error::Error;
};

// A configuration value (flag or LOCKSTEP_* variable) that cannot be parsed or
// is out of range.
class ConfigError : public UsageError {
 public:
  using UsageError::UsageError;
};

// Reading or writing files failed (permissions, disk full, corruption).
class IoError : public Error {
 public:
  using Error::Error;
};

// A call into MPI, CUDA, NCCL or HDF5 failed. Carries which library, the
// library's own code, and where the call was made.
class BackendError : public Error {
 public:
  BackendError(std::string library, int code, const std::string& message)
      : Error(message), library_(std::move(library)), code_(code) {}
  const std::string& library() const { return library_; }
  int code() const { return code_; }

 private:
  std::string library_;
  int code_;
};

// An operation did not complete in its allotted time.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Builds "<file>:<line>: <call> failed: <library message> (<library> error <code>)".
std::string format_call_failure(std::string_view library, int code,
                                std::string_view library_message, std::string_view call,
                                const char* file, int line);
}  // namespace detail

}  // namespace lockstep

// Throws UsageError with both values printed when `a == b` does not hold.
#define LOCKSTEP_CHECK_EQ(a, b, what)                                                          \
  do {                                                                                         \
    const auto& lockstep_a_ = (a);                                                             \
    const auto& lockstep_b_ = (b);                                                             \
    if (!(lockstep_a_ == lockstep_b_)) {                                                       \
      throw ::lockstep::UsageError(std::string(what) + ": expected " #a " == " #b ", found " + \
                                   std::to_string(lockstep_a_) + " vs " +                      \
                                   std::to_string(lockstep_b_));                               \
    }                                                                                          \
  } while (0)
