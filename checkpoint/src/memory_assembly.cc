#include "memory_assembly.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "collective_text.h"
#include "directory.h"
#include "lockstep/error.h"
#include "lockstep/log.h"
#include "lockstep/mpi_check.h"
#include "metadata.h"
#include "save_job.h"

namespace lockstep::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The rank of a rank file's name ("rank-00042.h5" -> 42), exactly as
// rank_file_name() writes it; nullopt for anything else.
std::optional<int> rank_of_file(const std::string& name) {
  int rank = -1;
  int consumed = 0;
  if (std::sscanf(name.c_str(), "rank-%d.h5%n", &rank, &consumed) != 1 ||
      consumed != static_cast<int>(name.size()) || rank < 0 || rank_file_name(rank) != name) {
    return std::nullopt;
  }
  return rank;
}

// What this node holds: {"<step>": {"world": W, "files": [...]}} for every
// committed step with its metadata and master file (W from the metadata).
json node_holdings(FileEnv& env, const fs::path& node_dir) {
  json held = json::object();
  if (!env.exists(node_dir)) return held;
  for (const auto step : committed_steps(env, node_dir)) {
    const fs::path step_dir = node_dir / step_directory_name(step);
    try {
      if (!env.exists(step_dir / kMasterFile)) continue;
      const Metadata metadata =
          parse_metadata(read_metadata_text(env, step_dir), (step_dir / kMetadataFile).string());
      // A rank file counts when it is a plain file of the size the
      // metadata records: a truncated or linked one would hide the intact
      // partner copy on another node.
      std::vector<int> files;
      for (const auto& name : env.list_directory(step_dir)) {
        const auto rank = rank_of_file(name);
        if (!rank || *rank >= metadata.world_size) continue;
        const fs::path path = step_dir / name;
        if (!env.is_symlink(path) &&
            env.file_size(path) == metadata.rank_files[static_cast<std::size_t>(*rank)].size) {
          files.push_back(*rank);
        }
      }
      held[std::to_string(step)] = {{"world", metadata.world_size}, {"files", files}};
    } catch (const std::exception& failure) {
      log::warn("memory tier: ignoring {}: {}", step_dir.string(), failure.what());
    }
  }
  return held;
}

// Rank 0: the plan of `step` from every node's holdings, or the reason
// why it cannot be put together.
std::optional<MemoryPlan> plan_step(std::int64_t step, const NodeMap& nodes,
                                    const std::vector<json>& holdings, int ranks,
                                    std::string& why) {
  const std::string key = std::to_string(step);
  std::vector<std::set<int>> files(holdings.size());
  std::vector<bool> has_step(holdings.size(), false);
  int saved = -1;
  for (std::size_t k = 0; k < holdings.size(); ++k) {
    if (!holdings[k].contains(key)) continue;
    const json& entry = holdings[k][key];
    if (saved < 0) saved = entry.at("world").get<int>();
    if (entry.at("world").get<int>() != saved) continue;  // not the same step
    has_step[k] = true;
    const auto held = entry.at("files").get<std::vector<int>>();
    files[k].insert(held.begin(), held.end());
  }
  MemoryPlan plan{.step = step, .saved_ranks = saved};
  plan.every_file_on_each_node = nodes.nodes() == 1 || ranks != saved;
  const auto source = [&](std::size_t k, int file) -> std::optional<std::size_t> {
    for (std::size_t other = 0; other < holdings.size(); ++other) {
      if (other != k && has_step[other] && (file < 0 || files[other].contains(file))) return other;
    }
    return std::nullopt;
  };
  std::set<int> partner_copies;
  for (std::size_t k = 0; k < holdings.size(); ++k) {
    const auto& here = nodes.ranks[k];
    if (!has_step[k]) {
      // The metadata and the master file, from the first node that has them.
      const auto from = source(k, -1);
      if (!from) {
        why = "no node holds it whole";
        return std::nullopt;
      }
      for (const char* name : {kMetadataFile, kMasterFile}) {
        plan.fetches.push_back({nodes.ranks[*from].front(), here.front(), name});
      }
    }
    std::vector<int> needed;
    if (plan.every_file_on_each_node) {
      for (int f = 0; f < saved; ++f) needed.push_back(f);
    } else {
      needed = here;
    }
    for (const int f : needed) {
      if (files[k].contains(f)) continue;
      const auto from = source(k, f);
      if (!from) {
        why = fmt::format("rank {}'s file is on no node", f);
        return std::nullopt;
      }
      const auto& there = nodes.ranks[*from];
      plan.fetches.push_back({there[static_cast<std::size_t>(f) % there.size()],
                              here[static_cast<std::size_t>(f) % here.size()], rank_file_name(f)});
      partner_copies.insert(f);
    }
  }
  plan.partner_copies.assign(partner_copies.begin(), partner_copies.end());
  return plan;
}

json to_json(const MemoryPlan& plan) {
  json fetches = json::array();
  for (const auto& fetch : plan.fetches) fetches.push_back({fetch.from, fetch.to, fetch.name});
  return {{"step", plan.step},
          {"saved", plan.saved_ranks},
          {"every", plan.every_file_on_each_node},
          {"fetches", fetches},
          {"partners", plan.partner_copies}};
}

MemoryPlan plan_from_json(const json& entry) {
  MemoryPlan plan{.step = entry.at("step").get<std::int64_t>(),
                  .saved_ranks = entry.at("saved").get<int>(),
                  .partner_copies = entry.at("partners").get<std::vector<int>>(),
                  .every_file_on_each_node = entry.at("every").get<bool>()};
  for (const auto& fetch : entry.at("fetches")) {
    plan.fetches.push_back(
        {fetch.at(0).get<int>(), fetch.at(1).get<int>(), fetch.at(2).get<std::string>()});
  }
  return plan;
}

}  // namespace

std::string rank_ranges(const std::vector<int>& ranks) {
  std::string text;
  for (std::size_t i = 0; i < ranks.size();) {
    std::size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    text += fmt::format("{}{}", text.empty() ? "" : ", ", ranks[i]);
    if (j > i) text += fmt::format("-{}", ranks[j]);
    i = j + 1;
  }
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", text);
}

std::vector<MemoryPlan> plan_memory_restores(MPI_Comm comm, const NodeMap& nodes, FileEnv& env,
                                             const fs::path& node_dir) {
  int rank = 0;
  int ranks = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  LOCKSTEP_CHECK_MPI(MPI_Comm_size(comm, &ranks));
  const int node = nodes.node_of[static_cast<std::size_t>(rank)];
  std::string mine;
  if (nodes.ranks[static_cast<std::size_t>(node)].front() == rank) {
    try {
      mine = node_holdings(env, node_dir).dump();
    } catch (const std::exception& failure) {
      log::warn("memory tier: cannot list {}: {}", node_dir.string(), failure.what());
    }
  }
  const auto all = gather_text(comm, 0, mine);
  std::string text;
  if (rank == 0) {
    std::vector<json> holdings;
    std::set<std::int64_t> steps;
    for (const auto& members : nodes.ranks) {
      const std::string& listing = all[static_cast<std::size_t>(members.front())];
      holdings.push_back(listing.empty() ? json::object() : json::parse(listing));
      for (const auto& [step, entry] : holdings.back().items()) steps.insert(std::stoll(step));
    }
    json plans = json::array();
    for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
      std::string why;
      if (const auto plan = plan_step(*step, nodes, holdings, ranks, why)) {
        plans.push_back(to_json(*plan));
      } else {
        log::info("memory tier: step {} cannot be put together at {} ranks: {}", *step, ranks, why);
      }
    }
    text = plans.dump();
  }
  broadcast_text(comm, 0, text);
  std::vector<MemoryPlan> plans;
  for (const auto& entry : json::parse(text)) plans.push_back(plan_from_json(entry));
  return plans;
}

std::string fetch_missing_files(MPI_Comm comm, const NodeMap& nodes, FileEnv& env,
                                const fs::path& node_dir, const MemoryPlan& plan) {
  if (plan.fetches.empty()) return {};
  int rank = 0;
  LOCKSTEP_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  std::string token;
  std::string error;
  try {
    token = shared_token(comm);
  } catch (const IoError& failure) {
    return failure.what();
  }
  const fs::path step_dir = node_dir / step_directory_name(plan.step);
  const fs::path arrivals = node_dir / fmt::format("step-{}.fetch-{}", plan.step, token);
  std::vector<FileTransfer> transfers;
  bool receiving = false;
  for (const auto& fetch : plan.fetches) {
    transfers.push_back({.from = fetch.from,
                         .to = fetch.to,
                         .source = step_dir / fetch.name,
                         .target = arrivals / fetch.name});
    receiving = receiving || fetch.to == rank;
  }
  std::uint64_t bytes = 0;
  try {
    if (receiving) env.create_directories(arrivals);
  } catch (const std::exception& failure) {
    error = failure.what();
  }
  // A rank that cannot make the directory still sends and receives (its
  // writes then fail), so that no peer waits for it.
  const std::string moved = move_files(comm, env, transfers, bytes);
  if (error.empty()) error = moved;
  error = first_error(comm, error);
  const bool leader =
      nodes.ranks[static_cast<std::size_t>(nodes.node_of[static_cast<std::size_t>(rank)])]
          .front() == rank;
  // `error` is the same on every rank from here on.
  if (error.empty()) {
    std::string installing;
    if (leader && env.exists(arrivals)) {
      // Every file arrived whole: into place, the whole step at once where
      // the node had none of it.
      try {
        if (!env.exists(step_dir)) {
          env.rename(arrivals, step_dir);
        } else {
          for (const auto& name : env.list_directory(arrivals)) {
            env.rename(arrivals / name, step_dir / name);
          }
          env.remove_all(arrivals);
        }
      } catch (const std::exception& failure) {
        installing = fmt::format("rank {}: {}", rank, failure.what());
      }
    }
    error = first_error(comm, installing);
  }
  if (!error.empty() && leader) {
    try {
      env.remove_all(arrivals);
    } catch (const std::exception& cleanup) {
      log::warn("cannot remove {}: {}", arrivals.string(), cleanup.what());
    }
  }
  return error;
}

}  // namespace lockstep::checkpoint
