#include "lockstep/checkpointer.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <thread>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "collective_text.h"
#include "directory.h"
#include "layout.h"
#include "lockstep/files.h"
#include "lockstep/knobs.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "lockstep/trace.h"
#include "memory_assembly.h"
#include "memory_tier.h"
#include "parallel_copy.h"
#include "restore.h"
#include "save_job.h"

namespace lockstep {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The node a rank names when CheckpointOptions::node is empty.
std::string default_node_name() {
  if (const char* node = std::getenv("SLURMD_NODENAME"); node != nullptr && *node != '\0') {
    return node;
  }
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "localhost";
  return name.data();
}

// The exception being handled, as every rank of a save that one rank
// could not stage rethrows it: the step named, a UsageError kept as one,
// anything else an IoError; the exception itself when even that fails.
std::exception_ptr not_saved(std::int64_t step) noexcept {
  const std::exception_ptr caught = std::current_exception();
  try {
    try {
      throw;
    } catch (const UsageError& failure) {
      return std::make_exception_ptr(
          UsageError(fmt::format("step {} was not saved: {}", step, failure.what())));
    } catch (const std::exception& failure) {
      return std::make_exception_ptr(
          IoError(fmt::format("step {} was not saved: {}", step, failure.what())));
    }
  } catch (...) {
    return caught;
  }
}

}  // namespace

CheckpointOptions checkpoint_options(const Runtime& runtime) {
  const Config& config = runtime.config();
  const std::string dir = config.get(knobs::checkpoint_dir);
  const std::filesystem::path checkpoint_dir =
      dir.empty() ? runtime.run_dir() / "checkpoints" : std::filesystem::path(dir);
  // The memory tier's directory of this user and checkpoint directory,
  // which names a run wherever it is restarted.
  std::filesystem::path memory_dir;
  if (const std::string base = config.get(knobs::checkpoint_memory_dir); !base.empty()) {
    const std::string run = std::filesystem::absolute(checkpoint_dir).lexically_normal().string();
    memory_dir = std::filesystem::path(base) /
                 fmt::format("{}-{:016x}", ::geteuid(), std::hash<std::string>{}(run));
  }
  return {.dir = checkpoint_dir,
          .keep_last = static_cast<int>(config.get(knobs::checkpoint_keep)),
          .keep_every = config.get(knobs::checkpoint_keep_every),
          .async = config.get(knobs::checkpoint_async),
          .copy_threads = static_cast<int>(config.get(knobs::checkpoint_threads)),
          .env = posix_file_env(config.get(knobs::checkpoint_direct_io)),
          .memory_dir = memory_dir,
          .node = runtime.hostname(),
          .memory_keep = static_cast<int>(config.get(knobs::checkpoint_memory_keep)),
          .memory_budget_bytes = static_cast<std::uint64_t>(config.get(knobs::checkpoint_memory_mb))
                                 << 20,
          .disk_every = static_cast<int>(config.get(knobs::checkpoint_disk_every))};
}

State::Item::Item(std::string item_name, std::vector<Tensor> item_tensors)
    : name(std::move(item_name)), tensors(std::move(item_tensors)) {}

State::Item::Item(std::string item_name, std::vector<ShardChunk> item_chunks)
    : name(std::move(item_name)), chunks(std::move(item_chunks)) {}

State::Item::Item(std::string item_name, KeyValues& item_values)
    : name(std::move(item_name)), values(&item_values) {}

// A save between staging and commit. Owns the background thread; the
// thread's result is read only after join().
class Checkpointer::SaveJob {
 public:
  // Where a save goes: the memory tier (over `node_comm`), the disk, or
  // both.
  struct Tiers {
    bool memory = false;
    bool disk = true;
    MPI_Comm node_comm = MPI_COMM_NULL;
    const checkpoint::NodeMap* nodes = nullptr;
    std::filesystem::path node_dir = {};
  };

  explicit SaveJob(checkpoint::StagedSave staged) : staged_(std::move(staged)) {}

  void set_tiers(Tiers tiers) { tiers_ = tiers; }

  // The writer begins with the ranks' agreement that every rank staged
  // this save (a rank that could not takes part from save()), so that
  // save() need not wait for the slowest rank's copy.
  void agree_first() { agreed_ = false; }

  // Runs the writing half, and retention after a commit when `retain`;
  // never throws (the error is kept for finish()). A save the memory tier
  // could not take goes to disk.
  void run(MPI_Comm comm, FileEnv& env, const CheckpointOptions& options, bool retain) noexcept {
    const auto start = Clock::now();
    try {
      if (!agreed_) {
        try {
          checkpoint::agree_or_throw(comm, nullptr);
        } catch (...) {
          error_ = not_saved(staged_.step);
          return;
        }
      }
      if (tiers_.memory) {
        const trace::Scope memory("checkpoint", "memory tier step", staged_.step);
        try {
          stats_.bytes_written +=
              checkpoint::write_and_commit_local(staged_, comm, tiers_.node_comm, *tiers_.nodes,
                                                 env, tiers_.node_dir, options.memory_keep);
          stats_.in_memory = true;
        } catch (const IoError& failure) {
          if (staged_.rank == 0) {
            log::warn("{}; {}", failure.what(),
                      tiers_.disk ? "it goes to disk as planned" : "saving it to disk instead");
          }
          tiers_.disk = true;
        }
      }
      if (tiers_.disk) {
        const trace::Scope disk("checkpoint", "disk step", staged_.step);
        stats_.disk_bytes = checkpoint::write_and_commit(staged_, comm, env, options);
        stats_.bytes_written += stats_.disk_bytes;
        stats_.on_disk = true;
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    stats_.write_seconds = seconds_since(start);
    if (retain && !error_ && staged_.rank == 0 && tiers_.disk) {
      checkpoint::remove_retired(env, options, staged_.retired, staged_.step);
    }
  }

  void start(MPI_Comm comm, FileEnv& env, const CheckpointOptions& options) {
    thread_ = std::thread([this, comm, &env, &options] {
      trace::name_thread("checkpoint writer");
      run(comm, env, options, true);
    });
  }

  // Joins the thread, if any; returns the error of the save, if any.
  std::exception_ptr finish() {
    if (thread_.joinable()) thread_.join();
    return error_;
  }

  SaveStats& stats() { return stats_; }
  const Tensor& staging() const { return staged_.staging; }
  std::uint64_t rank_file_bytes() const { return staged_.rank_file->file_size; }
  const std::shared_ptr<const checkpoint::RankFilePlan>& rank_file() const {
    return staged_.rank_file;
  }
  const std::shared_ptr<const checkpoint::MasterFileTemplate>& master_file() const {
    return staged_.master_file;
  }
  std::int64_t step() const { return staged_.step; }
  std::vector<std::filesystem::path> take_retired() { return std::move(staged_.retired); }

 private:
  checkpoint::StagedSave staged_;
  Tiers tiers_;
  bool agreed_ = true;
  std::thread thread_;
  std::exception_ptr error_;
  SaveStats stats_;
};

Checkpointer::Checkpointer(const Runtime& runtime, CheckpointOptions options)
    : Checkpointer(runtime.comm(), std::move(options)) {}

Checkpointer::Checkpointer(MPI_Comm comm, CheckpointOptions options)
    : options_(std::move(options)), comm_(MpiComm::dup(comm)), writer_comm_(MpiComm::dup(comm)) {
  if (options_.dir.empty()) throw UsageError("CheckpointOptions::dir is empty; name a directory");
  if (options_.keep_last < 0 || options_.keep_every < 0) {
    throw UsageError(
        fmt::format("CheckpointOptions: keep_last ({}) and keep_every ({}) must not "
                    "be negative",
                    options_.keep_last, options_.keep_every));
  }
  if (!options_.env) options_.env = posix_file_env();
  if (options_.copy_threads < 0) {
    throw UsageError(
        fmt::format("CheckpointOptions: copy_threads ({}) must not be negative; 0 picks a number",
                    options_.copy_threads));
  }
  copy_threads_ =
      checkpoint::copy_threads(options_.copy_threads, checkpoint::ranks_on_node(comm_.get()));
  // Rank 0 prepares the directory for all. Whatever it throws (an IoError,
  // a std::filesystem_error, std::bad_alloc) reaches every rank, which
  // would otherwise wait for rank 0 forever.
  std::exception_ptr failure;
  if (comm_.rank() == 0) {
    try {
      options_.env->create_directories(options_.dir);
      // A directory another user can write to could hold a step of theirs,
      // which a restore would load as this run's; nothing is written into
      // it, not even the probe below.
      if (const std::string why = files::why_not_private(options_.dir); !why.empty()) {
        throw IoError(fmt::format(
            "checkpoint directory: {}; choose a directory that only you (and your group) can "
            "write to",
            why));
      }
      options_.env->check_writable(options_.dir);
      checkpoint::remove_leftovers(*options_.env, options_.dir);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  checkpoint::agree_or_throw(comm_.get(), failure);
  if (options_.memory_dir.empty()) return;
  if (options_.memory_keep < 1 || options_.disk_every < 1) {
    throw UsageError(
        fmt::format("CheckpointOptions: memory_keep ({}) and disk_every ({}) must be at least 1",
                    options_.memory_keep, options_.disk_every));
  }
  // Every rank must name the same memory directory (each node's first rank
  // prepares it for the others).
  const auto named = static_cast<std::uint64_t>(
      std::hash<std::string>{}(options_.memory_dir.lexically_normal().string()));
  std::uint64_t lowest = named;
  std::uint64_t highest = named;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(&named, &lowest, 1, MPI_UINT64_T, MPI_MIN, comm_.get()));
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(&named, &highest, 1, MPI_UINT64_T, MPI_MAX, comm_.get()));
  if (lowest != highest) {
    throw UsageError(fmt::format(
        "CheckpointOptions::memory_dir differs between the ranks (this one: {}); every rank must "
        "name the same directory",
        options_.memory_dir.string()));
  }
  // The nodes, by the names the ranks give; the run's id from the
  // checkpoint directory; then each node's first rank prepares its node's
  // directory. A directory that cannot be used leaves the memory tier off,
  // for saves and restores alike, not the run.
  const std::string node =
      checkpoint::memory_node_name(options_.node.empty() ? default_node_name() : options_.node);
  nodes_ = std::make_unique<checkpoint::NodeMap>(checkpoint::node_map(comm_.get(), node));
  node_comm_ = MpiComm::split(comm_.get(), nodes_->node_of[static_cast<std::size_t>(comm_.rank())],
                              comm_.rank());
  node_dir_ = options_.memory_dir / node;
  std::string id;
  std::string error;
  if (comm_.rank() == 0) {
    try {
      id = checkpoint::memory_tier_id(*options_.env, options_.dir);
    } catch (const std::exception& problem) {
      error = fmt::format("rank 0: {}", problem.what());
    }
  }
  error = checkpoint::first_error(comm_.get(), error);
  checkpoint::broadcast_text(comm_.get(), 0, id);
  if (error.empty() && node_comm_.rank() == 0) {
    try {
      memory_lock_ = std::make_unique<checkpoint::MemoryTierLock>(checkpoint::prepare_memory_dir(
          *options_.env, options_.memory_dir, options_.dir, id, node));
    } catch (const std::exception& problem) {
      error = fmt::format("rank {}: {}", comm_.rank(), problem.what());
    }
  }
  error = checkpoint::first_error(comm_.get(), error);
  memory_usable_ = error.empty();
  memory_on_ = memory_usable_;
  if (!memory_usable_ && comm_.rank() == 0) {
    log::warn("memory tier off, saves go to disk only and restores read the disk only: {}", error);
  }
  if (memory_usable_ && nodes_->nodes() == 1 && comm_.rank() == 0) {
    log::info(
        "memory tier: all ranks are on one node ({}), so there are no partner copies; a lost "
        "node's steps come from disk",
        node);
  }
}

bool Checkpointer::memory_tier_fits(std::uint64_t rank_file_bytes) {
  memory_checked_ = true;
  // This rank's file and the partner copies it keeps, summed over the node.
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(comm_.size()));
  LOCKSTEP_CHECK_MPI(
      MPI_Allgather(&rank_file_bytes, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, comm_.get()));
  std::uint64_t kept = rank_file_bytes;
  for (const int source : nodes_->partners_of(comm_.rank())) {
    kept += sizes[static_cast<std::size_t>(source)];
  }
  std::uint64_t node_bytes = 0;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(&kept, &node_bytes, 1, MPI_UINT64_T, MPI_SUM, node_comm_.get()));
  const auto steps = static_cast<std::uint64_t>(options_.memory_keep) + 1;
  const std::uint64_t needed = node_bytes * steps;
  std::uint64_t budget = options_.memory_budget_bytes;
  if (budget == 0) {
    if (node_comm_.rank() == 0) budget = checkpoint::free_bytes(options_.memory_dir) / 2;
    LOCKSTEP_CHECK_MPI(MPI_Bcast(&budget, 1, MPI_UINT64_T, 0, node_comm_.get()));
  }
  const int over = needed > budget ? 1 : 0;
  int any_over = 0;
  LOCKSTEP_CHECK_MPI(MPI_Allreduce(&over, &any_over, 1, MPI_INT, MPI_MAX, comm_.get()));
  if (over != 0 && node_comm_.rank() == 0) {
    log::warn(
        "memory tier off, saves go to disk only: this node's ranks need {} bytes ({:.1f} MiB) in "
        "{} for {} steps (LOCKSTEP_CHECKPOINT_MEMORY_KEEP + the one being saved), over its "
        "budget of {} bytes ({:.1f} MiB, {}); raise the budget or keep fewer steps",
        needed, static_cast<double>(needed) / 1048576.0, options_.memory_dir.string(), steps,
        budget, static_cast<double>(budget) / 1048576.0,
        options_.memory_budget_bytes == 0 ? "half of the free space there"
                                          : "LOCKSTEP_CHECKPOINT_MEMORY_MB");
  } else if (any_over != 0 && comm_.rank() == 0) {
    log::warn(
        "memory tier off, saves go to disk only: another node's state does not fit its "
        "budget (its warning says by how much)");
  }
  memory_on_ = any_over == 0;
  return memory_on_;
}

Checkpointer::~Checkpointer() {
  try {
    finish_in_flight(false);
  } catch (...) {
    // finish_in_flight(false) only logs; nothing may leave a destructor.
  }
}

void Checkpointer::finish_in_flight(bool rethrow) {
  if (retention_.joinable()) retention_.join();
  std::exception_ptr error = std::exchange(not_staged_, nullptr);
  std::int64_t step = not_staged_step_;
  if (in_flight_) {
    error = in_flight_->finish();
    step = in_flight_->step();
    last_stats_ = in_flight_->stats();
    staging_ = in_flight_->staging();
    rank_file_ = in_flight_->rank_file();
    master_file_ = in_flight_->master_file();
    in_flight_.reset();
  }
  if (!error) return;
  if (rethrow) std::rethrow_exception(error);
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& failure) {
    log::error("background save of step {} failed: {}", step, failure.what());
  }
}

bool Checkpointer::agree_staged(MPI_Comm comm, std::exception_ptr failure, std::int64_t step) {
  try {
    checkpoint::agree_or_throw(comm, std::move(failure));
    return true;
  } catch (...) {
    not_staged_ = not_saved(step);
    not_staged_step_ = step;
  }
  if (!options_.async) finish_in_flight(true);
  return false;
}

void Checkpointer::save(std::int64_t step, const State& state) {
  const auto start = Clock::now();
  // The stall: from here to the return.
  const trace::Scope saving("checkpoint", "save step", step);
  finish_in_flight(true);
  // The ranks agree that they pass the same step and state before they
  // plan from it (and exchange their chunks of sharded tensors). Whether
  // every rank then staged its copy, the writer threads agree before they
  // write: save() returns after this rank's copy, not the slowest rank's.
  // A rank without a writer (its staging failed, or its thread did not
  // start) takes the writer's part from here, and every rank rethrows the
  // failure where it would a failed write's.
  std::exception_ptr failure;
  std::uint64_t fingerprint = 0;
  checkpoint::FlatState flat;
  try {
    if (step < 0) throw UsageError(fmt::format("checkpoint step {} is negative", step));
    flat = checkpoint::flatten(state);
    for (const auto& item : state.items()) {
      if (item.values != nullptr && !item.values->is_object()) {
        throw UsageError(fmt::format("key/values '{}' must be a JSON object, found {}", item.name,
                                     item.values->type_name()));
      }
    }
    fingerprint = checkpoint::save_fingerprint(step, flat);
  } catch (...) {
    failure = std::current_exception();
  }
  if (!checkpoint::agree_or_throw(comm_.get(), failure, fingerprint)) {
    throw UsageError(fmt::format(
        "save of step {}: the ranks passed different steps or states (tensor names, global "
        "shapes, dtypes, or sharded where another rank has whole tensors); every rank must pass "
        "the same",
        step));
  }
  // The same verdict on every rank: all plan from the same chunks.
  auto pieces = checkpoint::gather_pieces(flat, comm_.get());
  std::unique_ptr<SaveJob> job;
  try {
    const trace::Scope staging("checkpoint", "stage step", step);
    job = std::make_unique<SaveJob>(checkpoint::stage(
        step, state, std::move(flat), std::move(pieces), comm_.rank(), comm_.size(), options_.async,
        copy_threads_, staging_, rank_file_, master_file_));
  } catch (...) {
    failure = std::current_exception();
  }
  // The first save with the memory tier checks its budget collectively,
  // so whether every rank staged it is agreed here, on every rank alike.
  if (memory_on_ && !memory_checked_ && !agree_staged(comm_.get(), failure, step)) return;
  const bool memory =
      !failure && memory_on_ && (memory_checked_ || memory_tier_fits(job->rank_file_bytes()));
  const bool disk = !memory || force_disk_ || saves_ % options_.disk_every == 0;
  ++saves_;  // on every rank, staged or not, for disk_every
  if (!failure) {
    try {
      job->agree_first();
      job->stats().step = step;
      job->set_tiers({.memory = memory,
                      .disk = disk,
                      .node_comm = node_comm_.get(),
                      .nodes = nodes_.get(),
                      .node_dir = node_dir_});
      log::debug("step {}: staging {:.3f} s", step, seconds_since(start));
      if (options_.async) job->start(writer_comm_.get(), *options_.env, options_);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure) {
    // This rank has no writer: it takes the writer's part in the agreement.
    agree_staged(writer_comm_.get(), failure, step);
    return;
  }
  if (options_.async) {
    job->stats().stall_seconds = seconds_since(start);
    in_flight_ = std::move(job);
    return;
  }
  job->run(writer_comm_.get(), *options_.env, options_, false);
  job->stats().stall_seconds = seconds_since(start);
  auto retired = job->take_retired();
  in_flight_ = std::move(job);
  finish_in_flight(true);
  // The step is committed and durable, and the steps retention drops are
  // out of sight. Deleting their files (slow on a file system mounted with
  // online discard) is no reason to keep the caller waiting: it runs beside
  // training, and the next call of this object waits for it.
  if (comm_.rank() == 0) {
    retention_ = std::thread([this, retired = std::move(retired), step] {
      checkpoint::remove_retired(*options_.env, options_, retired, step);
    });
  }
}

void Checkpointer::wait() { finish_in_flight(true); }

void Checkpointer::save_to_disk(std::int64_t step, const State& state) {
  force_disk_ = true;
  try {
    save(step, state);
  } catch (...) {
    force_disk_ = false;
    throw;
  }
  force_disk_ = false;
}

void Checkpointer::discard_memory_tier() {
  finish_in_flight(true);
  // A directory that failed its checks is never touched (every rank
  // agrees on that).
  if (!memory_usable_) return;
  std::string error;
  if (node_comm_.rank() == 0) {
    try {
      options_.env->remove_all(node_dir_);
    } catch (const std::exception& failure) {
      error = failure.what();
    }
  }
  error = checkpoint::first_error(comm_.get(), error);
  // Every node's directory is gone; the run's directory holds nothing but
  // its record then (nodes of one host share it, and may race to remove it).
  if (error.empty() && node_comm_.rank() == 0) {
    try {
      const auto left = options_.env->list_directory(options_.memory_dir);
      if (std::all_of(left.begin(), left.end(),
                      [](const std::string& name) { return name.rfind(".owner", 0) == 0; })) {
        options_.env->remove_all(options_.memory_dir);
      }
    } catch (const std::exception& failure) {
      if (options_.env->exists(options_.memory_dir)) error = failure.what();
    }
  }
  error = checkpoint::first_error(comm_.get(), error);
  if (!error.empty() && comm_.rank() == 0) {
    log::warn("cannot remove the memory tier: {}", error);
  }
  memory_on_ = false;
}

std::vector<std::int64_t> Checkpointer::committed_steps() const {
  return checkpoint::committed_steps(*options_.env, options_.dir);
}

std::optional<std::int64_t> Checkpointer::restore_latest(State& state) {
  const trace::Scope restoring("checkpoint", "restore");
  finish_in_flight(true);
  skipped_.clear();
  // Rank 0's view of the directory decides for all, so that every rank
  // tries the same steps in the same order.
  std::string listing;
  std::exception_ptr failure;
  if (comm_.rank() == 0) {
    try {
      listing = nlohmann::json(committed_steps()).dump();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  checkpoint::agree_or_throw(comm_.get(), failure);
  checkpoint::broadcast_text(comm_.get(), 0, listing);
  const auto steps = nlohmann::json::parse(listing).get<std::vector<std::int64_t>>();
  std::optional<std::int64_t> modified_by;  // the first step that wrote into the state
  restored_from_memory_ = false;
  // Newest first, the memory tier's copy of a step (which the nodes can put
  // together) before the disk's.
  std::vector<std::pair<std::int64_t, std::optional<checkpoint::MemoryPlan>>> candidates;
  for (const std::int64_t step : steps) candidates.emplace_back(step, std::nullopt);
  if (memory_usable_) {
    for (auto& plan : memory_plans()) candidates.emplace_back(plan.step, std::move(plan));
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second.has_value() > b.second.has_value();
  });
  for (const auto& [step, plan] : candidates) {
    const auto start = Clock::now();
    const bool in_memory = plan.has_value();
    std::string why;
    bool modified = false;
    if (in_memory ? try_restore_from_memory(*plan, state, why, modified)
                  : try_restore(options_.dir, step, state, why, modified)) {
      restored_from_memory_ = in_memory;
      trace::instant("checkpoint",
                     fmt::format("restored step {} from {}", step, in_memory ? "memory" : "disk"));
      if (comm_.rank() == 0) {
        log::info(
            "restored step {} from {} in {:.2f} s", step,
            in_memory ? memory_source(*plan) : fmt::format("disk ({})", options_.dir.string()),
            seconds_since(start));
      }
      return step;
    }
    if (modified && !modified_by) modified_by = step;
    const std::string warning =
        fmt::format("skipping {} of step {}: {}",
                    in_memory ? "the memory tier's copy" : "the checkpoint", step, why);
    if (comm_.rank() == 0) log::warn("{}", warning);
    skipped_.push_back(warning);
  }
  if (modified_by) {
    // Starting afresh from a state that holds pieces of a damaged
    // checkpoint would train on garbage without a word.
    throw IoError(fmt::format(
        "no checkpoint in {} passes its checks ({} skipped: {}), and step {} failed a check "
        "after part of it was read into the state, which is no longer as it was "
        "initialised; move the damaged steps out of {}{} and restart to begin afresh",
        options_.dir.string(), skipped_.size(), fmt::join(skipped_, "; "), *modified_by,
        options_.dir.string(),
        memory_usable_ ? fmt::format(" (and {} on each node)", options_.memory_dir.string()) : ""));
  }
  return std::nullopt;
}

void Checkpointer::restore(std::int64_t step, State& state) {
  finish_in_flight(true);
  restored_from_memory_ = false;
  std::string why;
  bool modified = false;
  bool memory_modified = false;
  if (memory_usable_) {
    for (const auto& plan : memory_plans()) {
      if (plan.step != step) continue;
      if (try_restore_from_memory(plan, state, why, memory_modified)) {
        restored_from_memory_ = true;
        if (comm_.rank() == 0) log::info("restored step {} from {}", step, memory_source(plan));
        return;
      }
      if (comm_.rank() == 0) {
        log::warn("step {} in the memory tier fails its checks ({}); reading it from disk", step,
                  why);
      }
    }
  }
  if (!try_restore(options_.dir, step, state, why, modified)) {
    throw IoError(fmt::format(
        "cannot restore step {}: {}{}", step, why,
        modified || memory_modified ? " (the state is partly overwritten with its bytes)" : ""));
  }
}

std::vector<checkpoint::MemoryPlan> Checkpointer::memory_plans() {
  return checkpoint::plan_memory_restores(comm_.get(), *nodes_, *options_.env, node_dir_);
}

std::string Checkpointer::memory_source(const checkpoint::MemoryPlan& plan) const {
  std::string copies;
  if (!plan.partner_copies.empty()) {
    copies = fmt::format("partner copy of {}", checkpoint::rank_ranges(plan.partner_copies));
  } else if (plan.saved_ranks != comm_.size()) {
    copies = "the copies on each node";
  } else {
    copies = "own copies";
  }
  if (plan.saved_ranks != comm_.size()) {
    copies += fmt::format(", saved by {} ranks", plan.saved_ranks);
  }
  return fmt::format("memory ({}, {})", copies, options_.memory_dir.string());
}

bool Checkpointer::try_restore_from_memory(const checkpoint::MemoryPlan& plan, State& state,
                                           std::string& why, bool& modified) {
  const std::string fetched =
      checkpoint::fetch_missing_files(comm_.get(), *nodes_, *options_.env, node_dir_, plan);
  if (!fetched.empty()) {
    why = fmt::format("fetching the partner copies of {} failed: {}",
                      checkpoint::rank_ranges(plan.partner_copies), fetched);
    return false;
  }
  // With each rank's own file on its node, each reads its own; where every
  // file is on every node, the ranks of a node share what they read.
  return try_restore(node_dir_, plan.step, state, why, modified,
                     plan.every_file_on_each_node && nodes_->nodes() == 1
                         ? checkpoint::Exchange::kReadAll
                         : checkpoint::Exchange::kBroadcast);
}

bool Checkpointer::try_restore(const std::filesystem::path& dir, std::int64_t step, State& state,
                               std::string& why, bool& modified) {
  return try_restore(dir, step, state, why, modified, checkpoint::Exchange::kAutomatic);
}

bool Checkpointer::try_restore(const std::filesystem::path& dir, std::int64_t step, State& state,
                               std::string& why, bool& modified, checkpoint::Exchange exchange) {
  const auto step_dir = dir / checkpoint::step_directory_name(step);
  try {
    checkpoint::restore_step(*options_.env, step_dir, step, state, comm_.get(), copy_threads_,
                             exchange);
    return true;
  } catch (const checkpoint::CorruptCheckpoint& corrupt) {
    why = corrupt.what();
    modified = corrupt.state_modified();
    return false;
  } catch (const UsageError& mismatch) {
    // A memory copy that does not fit the state is not what the user asked
    // to load (the disk's copy is checked as strictly, and throws).
    if (dir != node_dir_) throw;
    why = mismatch.what();
    return false;
  }
}

}  // namespace lockstep
