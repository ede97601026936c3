#include "fault_injection_env.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <new>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include <lockstep/error.h>

namespace lockstep::testing {

namespace fs = std::filesystem;

class FaultInjectionFile final : public WritableFile {
 public:
  FaultInjectionFile(FaultInjectionEnv& env, fs::path path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  void append(std::span<const std::byte> bytes) override {
    env_.check_alive(path_);
    if (const auto delay = env_.append_delay(); delay.count() > 0) {
      std::this_thread::sleep_for(delay);
    }
    if (env_.take(Fault::kShortWrite, path_)) {
      base_->append(bytes.first(bytes.size() / 2));
      appended_ += bytes.size() / 2;
      return;
    }
    if (env_.take(Fault::kNoSpace, path_)) {
      base_->append(bytes.first(bytes.size() / 2));
      throw IoError(fmt::format("write to '{}' failed: {}", path_.string(), std::strerror(ENOSPC)));
    }
    base_->append(bytes);
    appended_ += bytes.size();
  }

  void sync() override {
    env_.check_alive(path_);
    if (env_.take(Fault::kIoError, path_)) {
      throw IoError(fmt::format("fsync of '{}' failed: {}", path_.string(), std::strerror(EIO)));
    }
    base_->sync();
    env_.record_synced(path_, appended_);
  }

  void close() override { base_->close(); }

 private:
  FaultInjectionEnv& env_;
  fs::path path_;
  std::unique_ptr<WritableFile> base_;
  std::uint64_t appended_ = 0;
};

FaultInjectionEnv::FaultInjectionEnv(std::shared_ptr<FileEnv> base) : base_(std::move(base)) {}

void FaultInjectionEnv::arm(Fault fault, std::string path_part, Match match) {
  std::lock_guard lock(mutex_);
  armed_ = fault;
  armed_path_part_ = std::move(path_part);
  armed_match_ = match;
}

void FaultInjectionEnv::set_append_delay(std::chrono::milliseconds delay) {
  std::lock_guard lock(mutex_);
  append_delay_ = delay;
}

std::chrono::milliseconds FaultInjectionEnv::append_delay() const {
  std::lock_guard lock(mutex_);
  return append_delay_;
}

std::vector<std::string> FaultInjectionEnv::renamed_to() const {
  std::lock_guard lock(mutex_);
  return renamed_to_;
}

bool FaultInjectionEnv::crashed() const {
  std::lock_guard lock(mutex_);
  return crashed_;
}

bool FaultInjectionEnv::take(Fault fault, const fs::path& path) {
  std::lock_guard lock(mutex_);
  if (armed_ != fault) return false;
  const std::string text = path.string();
  const bool matches = armed_match_ == Match::kEndsWith
                           ? text.ends_with(armed_path_part_)
                           : text.find(armed_path_part_) != std::string::npos;
  if (!matches) return false;
  armed_ = Fault::kNone;
  return true;
}

void FaultInjectionEnv::check_alive(const fs::path& path) const {
  std::lock_guard lock(mutex_);
  if (crashed_) {
    throw IoError(fmt::format("simulated crash: nothing reaches '{}' any more", path.string()));
  }
}

void FaultInjectionEnv::throw_foreign(const fs::path& path) {
  if (take(Fault::kFilesystemError, path)) {
    throw fs::filesystem_error("injected failure", path, std::make_error_code(std::errc::io_error));
  }
  if (take(Fault::kOutOfMemory, path)) throw std::bad_alloc();
}

void FaultInjectionEnv::record_synced(const fs::path& path, std::uint64_t size) {
  std::lock_guard lock(mutex_);
  synced_sizes_[path.string()] = size;
}

std::unique_ptr<WritableFile> FaultInjectionEnv::new_writable_file(const fs::path& path) {
  throw_foreign(path);
  check_alive(path);
  {
    std::lock_guard lock(mutex_);
    synced_sizes_[path.string()] = 0;
  }
  return std::make_unique<FaultInjectionFile>(*this, path, base_->new_writable_file(path));
}

std::unique_ptr<ReadableFile> FaultInjectionEnv::new_readable_file(const fs::path& path) {
  throw_foreign(path);
  return base_->new_readable_file(path);
}

std::string FaultInjectionEnv::read_file(const fs::path& path) {
  throw_foreign(path);
  return base_->read_file(path);
}

void FaultInjectionEnv::create_directories(const fs::path& path) {
  throw_foreign(path);
  check_alive(path);
  base_->create_directories(path);
}

void FaultInjectionEnv::sync_directory(const fs::path& path) {
  throw_foreign(path);
  check_alive(path);
  if (take(Fault::kDirectorySyncError, path)) {
    throw IoError(
        fmt::format("fsync of directory '{}' failed: {}", path.string(), std::strerror(EIO)));
  }
  base_->sync_directory(path);
}

void FaultInjectionEnv::rename(const fs::path& from, const fs::path& to) {
  throw_foreign(to);
  check_alive(to);
  if (take(Fault::kCrashBeforeRename, to)) {
    // What a power cut does: bytes written but never synced are gone.
    std::lock_guard lock(mutex_);
    crashed_ = true;
    for (const auto& [file, size] : synced_sizes_) {
      std::error_code ignored;
      if (fs::exists(file, ignored)) fs::resize_file(file, size, ignored);
    }
    throw IoError(fmt::format("simulated crash before rename to '{}'", to.string()));
  }
  base_->rename(from, to);
  std::lock_guard lock(mutex_);
  renamed_to_.push_back(to.filename().string());
}

void FaultInjectionEnv::remove_all(const fs::path& path) {
  throw_foreign(path);
  check_alive(path);
  base_->remove_all(path);
}

std::vector<std::string> FaultInjectionEnv::list_directory(const fs::path& path) {
  throw_foreign(path);
  return base_->list_directory(path);
}

bool FaultInjectionEnv::exists(const fs::path& path) {
  throw_foreign(path);
  return base_->exists(path);
}

bool FaultInjectionEnv::is_symlink(const fs::path& path) {
  throw_foreign(path);
  return base_->is_symlink(path);
}

std::uint64_t FaultInjectionEnv::file_size(const fs::path& path) {
  throw_foreign(path);
  return base_->file_size(path);
}

void FaultInjectionEnv::check_writable(const fs::path& path) {
  throw_foreign(path);
  check_alive(path);
  base_->check_writable(path);
}

}  // namespace lockstep::testing
