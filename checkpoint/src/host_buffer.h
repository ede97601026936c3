// Host memory for large transient buffers, backed by transparent huge pages
// where the kernel offers them: a fresh buffer of gigabytes otherwise costs
// one page fault per 4 KiB, which on virtual machines takes longer than
// reading the bytes from disk.
#pragma once

#include <cstddef>
#include <memory>

namespace lockstep::checkpoint {

class HostBuffer {
 public:
  // Uninitialised memory of `bytes` (at least one byte); throws BackendError
  // when the allocation fails.
  explicit HostBuffer(std::size_t bytes);
  std::byte* data() { return data_.get(); }

 private:
  struct Free {
    void operator()(std::byte* data) const;
  };
  std::unique_ptr<std::byte, Free> data_;
};

}  // namespace lockstep::checkpoint
