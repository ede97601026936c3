// A FileEnv that fails on demand the way real storage does, in the spirit of
// LevelDB's fault_injection_test: a short write the disk acknowledges, a full
// disk, an I/O error on fsync, and a crash just before the commit rename,
// after which unsynced bytes are lost and the "dead" process writes nothing.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <lockstep/file_env.h>

namespace lockstep::testing {

enum class Fault {
  kNone,
  kShortWrite,          // an append stores half its bytes and reports success
  kNoSpace,             // an append stores half its bytes, then fails with ENOSPC
  kIoError,             // fsync fails with EIO
  kCrashBeforeRename,   // the process dies just before renaming into step-<N>
  kDirectorySyncError,  // the fsync of a directory fails with EIO
  // Failures that are not an IoError, as a library call can throw them: any
  // operation on the path throws std::filesystem::filesystem_error, or
  // std::bad_alloc.
  kFilesystemError,
  kOutOfMemory,
};

class FaultInjectionEnv final : public FileEnv {
 public:
  explicit FaultInjectionEnv(std::shared_ptr<FileEnv> base = posix_file_env());

  // How `path_part` of arm() selects a path.
  enum class Match {
    kContains,  // the path contains it
    kEndsWith,  // the path ends with it ("step-4" but not "step-4.replaced-…")
  };
  // Arms `fault` for the first operation on a path containing (or ending
  // with) `path_part`.
  void arm(Fault fault, std::string path_part = "", Match match = Match::kContains);
  // Each append first sleeps this long (to make saves slow enough to race).
  void set_append_delay(std::chrono::milliseconds delay);
  // Target names of every successful rename, in order.
  std::vector<std::string> renamed_to() const;
  bool crashed() const;

  std::unique_ptr<WritableFile> new_writable_file(const std::filesystem::path& path) override;
  std::unique_ptr<ReadableFile> new_readable_file(const std::filesystem::path& path) override;
  std::string read_file(const std::filesystem::path& path) override;
  void create_directories(const std::filesystem::path& path) override;
  void sync_directory(const std::filesystem::path& path) override;
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override;
  void remove_all(const std::filesystem::path& path) override;
  std::vector<std::string> list_directory(const std::filesystem::path& path) override;
  bool exists(const std::filesystem::path& path) override;
  bool is_symlink(const std::filesystem::path& path) override;
  std::uint64_t file_size(const std::filesystem::path& path) override;
  void check_writable(const std::filesystem::path& path) override;

 private:
  friend class FaultInjectionFile;
  // Whether `fault` is armed for `path`; disarms it when so.
  bool take(Fault fault, const std::filesystem::path& path);
  void check_alive(const std::filesystem::path& path) const;
  // Throws what kFilesystemError or kOutOfMemory arm, for `path`.
  void throw_foreign(const std::filesystem::path& path);
  void record_synced(const std::filesystem::path& path, std::uint64_t size);
  std::chrono::milliseconds append_delay() const;

  std::shared_ptr<FileEnv> base_;
  mutable std::mutex mutex_;
  Fault armed_ = Fault::kNone;                         // guarded by mutex_
  std::string armed_path_part_;                        // guarded by mutex_
  Match armed_match_ = Match::kContains;               // guarded by mutex_
  bool crashed_ = false;                               // guarded by mutex_
  std::chrono::milliseconds append_delay_{0};          // guarded by mutex_
  std::map<std::string, std::uint64_t> synced_sizes_;  // guarded by mutex_
  std::vector<std::string> renamed_to_;                // guarded by mutex_
};

}  // namespace lockstep::testing
