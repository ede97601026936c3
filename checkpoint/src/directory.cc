#include "directory.h"

#include <algorithm>
#include <charconv>
#include <set>

#include <fmt/format.h>

#include "lockstep/error.h"
#include "lockstep/log.h"

namespace lockstep::checkpoint {

namespace {
constexpr std::string_view kPrefix = "step-";
}  // namespace

std::string step_directory_name(std::int64_t step) { return fmt::format("step-{}", step); }

std::optional<std::int64_t> parse_step_directory(std::string_view name) {
  if (!name.starts_with(kPrefix)) return std::nullopt;
  const std::string_view digits = name.substr(kPrefix.size());
  if (digits.empty() || (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
  std::int64_t step = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return step;
}

std::optional<std::int64_t> replaced_step(std::string_view name) {
  const std::size_t dot = name.find('.');
  if (dot == std::string_view::npos || name.substr(dot).find(".replaced-") != 0) {
    return std::nullopt;
  }
  return parse_step_directory(name.substr(0, dot));
}

bool is_leftover(std::string_view name) {
  if (!name.starts_with(kPrefix)) return false;
  const std::size_t dot = name.find('.');
  return dot != std::string_view::npos && parse_step_directory(name.substr(0, dot)).has_value();
}

std::vector<std::int64_t> committed_steps(FileEnv& env, const std::filesystem::path& dir) {
  std::vector<std::int64_t> steps;
  for (const auto& name : env.list_directory(dir)) {
    if (const auto step = parse_step_directory(name)) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void remove_leftovers(FileEnv& env, const std::filesystem::path& dir) {
  // A committed step moved aside by a save of the same step that never
  // finished: without the new copy, it is step N again.
  std::set<std::string> kept;
  for (const auto& name : env.list_directory(dir)) {
    const auto step = replaced_step(name);
    if (!step) continue;
    const auto committed = dir / step_directory_name(*step);
    if (env.exists(committed) || env.is_symlink(committed)) continue;
    try {
      env.rename(dir / name, committed);
      env.sync_directory(dir);
      log::warn(
          "put {} back as {}: a save of the same step was interrupted before its copy "
          "replaced it",
          (dir / name).string(), committed.string());
    } catch (const std::exception& error) {
      log::warn("cannot put {} back as {}: {}", (dir / name).string(), committed.string(),
                error.what());
      kept.insert(name);  // deleting it would lose the step
    }
  }
  for (const auto& name : env.list_directory(dir)) {
    if (!is_leftover(name) || kept.contains(name)) continue;
    try {
      env.remove_all(dir / name);
      log::info("removed {} left behind by an interrupted save", (dir / name).string());
    } catch (const std::exception& error) {
      log::warn("cannot remove leftover {}: {}", (dir / name).string(), error.what());
    }
  }
}

std::vector<std::int64_t> steps_to_remove(std::vector<std::int64_t> steps, int keep_last,
                                          std::int64_t keep_every) {
  std::vector<std::int64_t> doomed;
  if (keep_last <= 0) return doomed;
  std::sort(steps.begin(), steps.end());
  const std::size_t keep = static_cast<std::size_t>(keep_last);
  if (steps.size() <= keep) return doomed;
  for (std::size_t i = 0; i + keep < steps.size(); ++i) {
    if (keep_every > 0 && steps[i] % keep_every == 0) continue;
    doomed.push_back(steps[i]);
  }
  return doomed;
}

std::filesystem::path retire_step(FileEnv& env, const std::filesystem::path& dir, std::int64_t step,
                                  std::string_view token) {
  const auto committed = dir / step_directory_name(step);
  auto doomed = dir / fmt::format("{}.deleted-{}", step_directory_name(step), token);
  env.rename(committed, doomed);
  return doomed;
}

}  // namespace lockstep::checkpoint
