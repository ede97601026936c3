#include "memory_tier.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "collective_text.h"
#include "directory.h"
#include "lockstep/error.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "metadata.h"

namespace lockstep::checkpoint {

namespace fs = std::filesystem;

namespace {

std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

int rank_in(MPI_Comm comm) {
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  return rank;
}

// The file in a memory directory that names its run: the checkpoint
// directory on disk and the run's id, one per line. The Checkpointer's
// node leader holds a shared lock on it while it lives.
constexpr char kOwnerFile[] = ".owner";

struct Owner {
  std::string dir;
  std::string id;
};

std::optional<Owner> read_owner(const fs::path& memory_dir) {
  std::ifstream marker(memory_dir / kOwnerFile);
  Owner owner;
  if (!marker || !std::getline(marker, owner.dir) || !std::getline(marker, owner.id)) {
    return std::nullopt;
  }
  return owner;
}

// Whether some process holds the lock of the memory directory `dir` (a
// Checkpointer of a live run): it cannot take it exclusively.
bool locked_by_a_live_run(const fs::path& dir) {
  const int fd = ::open((dir / kOwnerFile).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool live = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
  ::close(fd);
  return live;
}

// This user's memory directories beside `dir` that no live Checkpointer
// holds and whose run's checkpoint directory is gone: removed. Failures
// are logged; they cost only space.
void remove_stale_runs(FileEnv& env, const fs::path& dir) {
  const std::string prefix = fmt::format("{}-", ::geteuid());
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir.parent_path(), error)) {
    const std::string name = entry.path().filename().string();
    if (entry.path() == dir || name.rfind(prefix, 0) != 0) continue;
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0 || !S_ISDIR(info.st_mode) ||
        info.st_uid != ::geteuid()) {
      continue;
    }
    const auto owner = read_owner(entry.path());
    std::error_code missing;
    if (!owner || owner->dir.empty() || fs::exists(owner->dir, missing) || missing ||
        locked_by_a_live_run(entry.path())) {
      continue;
    }
    try {
      env.remove_all(entry.path());
      log::info("memory tier: removed {}, left by a run whose checkpoints ({}) are gone",
                entry.path().string(), owner->dir);
    } catch (const std::exception& failure) {
      log::warn("memory tier: cannot remove {}: {}", entry.path().string(), failure.what());
    }
  }
}

}  // namespace

MemoryTierLock::MemoryTierLock(MemoryTierLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

MemoryTierLock& MemoryTierLock::operator=(MemoryTierLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

MemoryTierLock::~MemoryTierLock() {
  if (fd_ >= 0) ::close(fd_);
}

std::string memory_tier_id(FileEnv& env, const fs::path& checkpoint_dir) {
  const fs::path path = checkpoint_dir / kMemoryTierIdFile;
  {
    std::ifstream existing(path);
    std::string id;
    // Anything but the 16 hex digits lockstep writes is replaced.
    if (existing && std::getline(existing, id) && id.size() == 16 &&
        id.find_first_not_of("0123456789abcdef") == std::string::npos) {
      return id;
    }
  }
  const std::string id = random_token();
  const fs::path temporary = checkpoint_dir / (std::string(kMemoryTierIdFile) + ".tmp");
  write_durably(env, temporary, bytes_of(id + "\n"));
  env.rename(temporary, path);
  return id;
}

MemoryTierLock prepare_memory_dir(FileEnv& env, const fs::path& dir, const fs::path& owner,
                                  const std::string& id, const std::string& node) {
  env.create_directories(dir);
  struct stat info {};
  if (::lstat(dir.c_str(), &info) != 0) {
    throw IoError(fmt::format("cannot stat {}: {}", dir.string(), std::strerror(errno)));
  }
  const uid_t me = ::geteuid();
  if (!S_ISDIR(info.st_mode)) {
    throw IoError(fmt::format(
        "{} is a symbolic link or not a directory: the memory tier must be a directory of its "
        "own, not a way into another; name the real directory",
        dir.string()));
  }
  if (info.st_uid != me) {
    throw IoError(fmt::format(
        "{} is owned by uid {}, not by this user (uid {}): its owner could plant checkpoints "
        "there; choose a directory of your own",
        dir.string(), info.st_uid, me));
  }
  if ((info.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    throw IoError(
        fmt::format("cannot make {} private (chmod 0700): {}", dir.string(), std::strerror(errno)));
  }
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  struct stat above {};
  if (::stat(parent.c_str(), &above) != 0) {
    throw IoError(fmt::format("cannot stat {}: {}", parent.string(), std::strerror(errno)));
  }
  // Others may write into the parent only where the sticky bit keeps them
  // from renaming or removing what is not theirs, and only this user or
  // root may own it.
  const bool others_write = (above.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  const bool safe = (above.st_uid == me || above.st_uid == 0) &&
                    (!others_write || (above.st_mode & S_ISVTX) != 0);
  if (!safe) {
    throw IoError(fmt::format(
        "{} lies in {}, which uid {} owns and others may write to: they could swap the "
        "directory; choose a place owned by this user (uid {}) or a sticky directory of root's "
        "such as /dev/shm",
        dir.string(), parent.string(), above.st_uid, me));
  }
  const std::string owner_dir = fs::absolute(owner).lexically_normal().string();
  const std::string record = owner_dir + "\n" + id + "\n";
  // Several nodes of one host may share `dir`: each writes through a name
  // of its own.
  // Written only when it says something else: nodes of one host share
  // `dir`, and a rename over the file another node's leader locked would
  // leave its lock on a file that is gone.
  if (const auto current = read_owner(dir);
      !current || current->dir != owner_dir || current->id != id) {
    const fs::path temporary = dir / fmt::format("{}.tmp-{}", kOwnerFile, node);
    write_durably(env, temporary, bytes_of(record));
    env.rename(temporary, dir / kOwnerFile);
  }
  const int fd = ::open((dir / kOwnerFile).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 || ::flock(fd, LOCK_SH) != 0) {
    const int failure = errno;
    if (fd >= 0) ::close(fd);
    throw IoError(
        fmt::format("cannot lock {}: {}", (dir / kOwnerFile).string(), std::strerror(failure)));
  }
  MemoryTierLock lock(fd);
  remove_stale_runs(env, dir);

  // The node's directory, inside the private one above.
  const fs::path node_dir = dir / node;
  env.create_directories(node_dir);
  struct stat node_info {};
  if (::lstat(node_dir.c_str(), &node_info) != 0 || !S_ISDIR(node_info.st_mode) ||
      node_info.st_uid != me) {
    throw IoError(fmt::format("{} is not a directory of this user's; remove it and start again",
                              node_dir.string()));
  }
  remove_leftovers(env, node_dir);
  // Steps of another run (another checkpoint directory, or the same one
  // emptied and begun afresh, which made a new id) are not this run's.
  const auto previous = read_owner(node_dir);
  if (previous && (previous->dir != owner_dir || previous->id != id)) {
    for (const auto step : committed_steps(env, node_dir)) {
      env.remove_all(node_dir / step_directory_name(step));
    }
    log::info("memory tier: discarded the steps in {} of an earlier run (checkpoints {}, id {})",
              node_dir.string(), previous->dir, previous->id);
  }
  write_durably(env, node_dir / (std::string(kOwnerFile) + ".tmp"), bytes_of(record));
  env.rename(node_dir / (std::string(kOwnerFile) + ".tmp"), node_dir / kOwnerFile);
  return lock;
}

std::uint64_t free_bytes(const fs::path& dir) {
  struct statvfs info {};
  if (::statvfs(dir.c_str(), &info) != 0) return 0;
  return static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
}

std::uint64_t write_and_commit_local(StagedSave& staged, MPI_Comm comm, MPI_Comm node_comm,
                                     const NodeMap& nodes, FileEnv& env, const fs::path& dir,
                                     int keep) {
  const int rank = staged.rank;
  const bool leader = rank_in(node_comm) == 0;
  std::string token;
  try {
    token = shared_token(comm);
  } catch (const IoError& failure) {
    throw IoError(fmt::format("step {} was not committed to the memory tier: {}", staged.step,
                              failure.what()));
  }
  std::string error;
  const fs::path temporary = dir / fmt::format("step-{}.tmp-{}", staged.step, token);
  const fs::path final_path = dir / step_directory_name(staged.step);
  const auto fail = [&](const std::string& why) {
    if (leader) {
      try {
        env.remove_all(temporary);
      } catch (const std::exception& cleanup) {
        log::warn("cannot remove {}: {}", temporary.string(), cleanup.what());
      }
    }
    return IoError(
        fmt::format("step {} was not committed to the memory tier: {}", staged.step, why));
  };

  if (leader) {
    try {
      env.create_directories(temporary);
    } catch (const std::exception& failure) {
      error = fmt::format("rank {}: {}", rank, failure.what());
    }
  }
  error = first_error(comm, error);
  if (!error.empty()) throw fail(error);

  std::uint64_t bytes_written = 0;
  const nlohmann::json outcome = write_own_file(staged, env, temporary, bytes_written);
  // The partner copies: this rank's file to its partner, and the files of
  // the ranks whose partner it is from them, each checked end to end.
  std::vector<FileTransfer> copies;
  const std::string own_name = rank_file_name(rank);
  if (const int partner = nodes.partner(rank); partner >= 0) {
    FileTransfer& copy = copies.emplace_back(
        FileTransfer{.from = rank, .to = partner, .source = temporary / own_name});
    // Sent from the staged bytes just written, with the CRC taken while
    // writing them: nothing is read back or checksummed again.
    if (outcome.at("error").get<std::string>().empty()) {
      copy.contents = rank_file_contents(*staged.rank_file, staged.sources);
      copy.crc32c = outcome.at("crc32c").get<std::uint32_t>();
    }
  }
  for (const int source : nodes.partners_of(rank)) {
    copies.push_back({.from = source, .to = rank, .target = temporary / rank_file_name(source)});
  }
  error = first_error(comm, move_files(comm, env, copies, bytes_written));
  if (!error.empty()) throw fail(fmt::format("partner copies: {}", error));
  const auto outcomes = gather_text(comm, 0, outcome.dump());
  std::string metadata_text;
  std::string master_text;
  if (rank == 0) {
    try {
      const auto [metadata, master] = build_metadata(staged, outcomes);
      metadata_text = serialize(metadata);
      master_text.assign(reinterpret_cast<const char*>(master.data()), master.size());
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  }
  broadcast_text(comm, 0, error);
  if (!error.empty()) throw fail(error);
  broadcast_text(comm, 0, metadata_text);
  broadcast_text(comm, 0, master_text);

  // Each node's first rank commits its node's copy. A step saved again
  // after a restart replaces the old copy: the memory tier is a cache of
  // the newest steps, not the durable record.
  bool renamed = false;
  if (leader) {
    try {
      write_durably(env, temporary / kMasterFile, bytes_of(master_text));
      write_durably(env, temporary / kMetadataFile, bytes_of(metadata_text));
      if (env.exists(final_path)) env.remove_all(final_path);
      env.rename(temporary, final_path);
      renamed = true;
      bytes_written += master_text.size() + metadata_text.size();
    } catch (const std::exception& failure) {
      error = fmt::format("rank {}: {}", rank, failure.what());
    }
  }
  error = first_error(comm, error);
  if (!error.empty()) {
    // A step that some node lacks can never be assembled: out of sight on
    // every node.
    if (renamed) {
      try {
        env.remove_all(final_path);
      } catch (const std::exception& cleanup) {
        log::warn("cannot remove {}: {}", final_path.string(), cleanup.what());
      }
    }
    throw fail(error);
  }
  if (leader) {
    try {
      // Steps numbered after this one are of a future the run went back
      // from (a restore of an older step): they go first, or retention,
      // which keeps the highest numbers, would drop the new saves instead.
      std::vector<std::int64_t> kept;
      for (const auto step : committed_steps(env, dir)) {
        if (step > staged.step) {
          env.remove_all(dir / step_directory_name(step));
        } else {
          kept.push_back(step);
        }
      }
      for (const auto step : steps_to_remove(kept, keep, 0)) {
        env.remove_all(dir / step_directory_name(step));
      }
      remove_leftovers(env, dir);
    } catch (const std::exception& failure) {
      log::warn("memory tier: removing steps older than step {} failed: {}", staged.step,
                failure.what());
    }
  }
  return bytes_written;
}

}  // namespace lockstep::checkpoint
