#include "host_buffer.h"

#include <sys/mman.h>

#include <cstdlib>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::checkpoint {

namespace {
constexpr std::size_t kHugePage = 2U << 20;
}  // namespace

HostBuffer::HostBuffer(std::size_t bytes) {
  const std::size_t rounded =
      (std::max<std::size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage;
  void* data = std::aligned_alloc(kHugePage, rounded);
  if (data == nullptr) {
    throw BackendError("libc", 0,
                       fmt::format("cannot allocate {} bytes for a checkpoint buffer", rounded));
  }
  // Advice only: without transparent huge pages the buffer still works.
  ::madvise(data, rounded, MADV_HUGEPAGE);
  data_.reset(static_cast<std::byte*>(data));
}

void HostBuffer::Free::operator()(std::byte* data) const { std::free(data); }

}  // namespace lockstep::checkpoint
