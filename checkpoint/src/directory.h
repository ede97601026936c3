// The checkpoint directory: which steps are committed, which entries are
// leftovers of crashed saves, and which checkpoints retention removes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/file_env.h"

namespace lockstep::checkpoint {

// "step-42"
std::string step_directory_name(std::int64_t step);
// The step of a committed directory name ("step-42" -> 42); nullopt for
// anything else, including "step-42.tmp-ab12" and "step-042".
std::optional<std::int64_t> parse_step_directory(std::string_view name);
// Whether `name` is something a save in progress or an interrupted removal
// left behind ("step-<N>.<anything>"), which no reader ever looks at.
bool is_leftover(std::string_view name);

// Committed steps in `dir`, oldest first (by number, not by name).
std::vector<std::int64_t> committed_steps(FileEnv& env, const std::filesystem::path& dir);

// The step of a committed copy that a save of the same step moved aside
// ("step-42.replaced-ab12" -> 42); nullopt for any other name.
std::optional<std::int64_t> replaced_step(std::string_view name);

// Removes every leftover entry in `dir`, except that a step moved aside by
// an interrupted save of the same step (step-<N>.replaced-*) is renamed
// back to step-<N> when there is no step-<N>. Failures are logged, not
// thrown: a leftover is harmless apart from its space (and a moved-aside
// step that cannot be put back is kept).
void remove_leftovers(FileEnv& env, const std::filesystem::path& dir);

// The steps retention removes: all but the newest `keep_last` (0 keeps all)
// and the multiples of `keep_every` (0: none).
std::vector<std::int64_t> steps_to_remove(std::vector<std::int64_t> steps, int keep_last,
                                          std::int64_t keep_every);

// Takes a committed step out of sight with one rename and returns its new
// name, a leftover, for the caller to delete: a crash halfway through the
// deletion then leaves a leftover instead of a committed checkpoint with
// files missing.
std::filesystem::path retire_step(FileEnv& env, const std::filesystem::path& dir, std::int64_t step,
                                  std::string_view token);

}  // namespace lockstep::checkpoint
