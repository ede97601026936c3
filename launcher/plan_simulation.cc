#include "plan_simulation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <queue>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "lockstep/error.h"

namespace lockstep::launcher {

namespace {

constexpr double kSecondsPerDay = 86400;
constexpr double kNever = std::numeric_limits<double>::infinity();

// xoshiro256** (Blackman and Vigna): fast, and its stream is fixed by the
// seed on every platform, unlike the standard library's distributions.
class Generator {
 public:
  using result_type = std::uint64_t;
  explicit Generator(std::uint64_t seed) {
    for (std::uint64_t& word : state_) word = splitmix(seed);
  }
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() {
    const std::uint64_t result = rotate(state_[1] * 5, 7) * 9;
    const std::uint64_t shifted = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= shifted;
    state_[3] = rotate(state_[3], 45);
    return result;
  }
  // Uniform in (0, 1].
  double uniform() { return (static_cast<double>((*this)() >> 11) + 1) * 0x1.0p-53; }
  double exponential(double rate) { return -std::log(uniform()) / rate; }

  static std::uint64_t splitmix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }

 private:
  static std::uint64_t rotate(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t state_[4];
};

// When the job's nodes fail next. Times are "alive" seconds: wall time less
// the time the job spent out of its allocation (in the queue), when its
// failures do not matter.
class FailureProcess {
 public:
  FailureProcess(std::int64_t nodes, double node_rate, double weibull_shape, Generator& random)
      : node_rate_(node_rate), shape_(weibull_shape), random_(random) {
    if (shape_ > 0) {
      scale_ = 1 / node_rate_ / std::tgamma(1 + 1 / shape_);
      // The cluster has run long before the job starts: each node's next
      // failure is the forward recurrence time of its renewal process, for
      // which (x/scale)^shape is Gamma(1/shape) distributed.
      std::gamma_distribution<double> residual(1 / shape_, 1.0);
      std::vector<std::pair<double, std::int64_t>> times;
      times.reserve(static_cast<std::size_t>(nodes));
      for (std::int64_t node = 0; node < nodes; ++node) {
        times.emplace_back(scale_ * std::pow(residual(random_), 1 / shape_), node);
      }
      heap_ = Heap(std::greater<>(), std::move(times));
    } else {
      active_.resize(static_cast<std::size_t>(nodes));
      for (std::int64_t node = 0; node < nodes; ++node) active_[node] = node;
      draw_exponential(0);
    }
  }

  double next() const { return shape_ > 0 ? heap_.top().first : next_; }

  // The node that fails at next(); it is out of the process until renew().
  std::int64_t take(double alive_now) {
    if (shape_ > 0) {
      const std::int64_t node = heap_.top().second;
      heap_.pop();
      return node;
    }
    const auto index =
        static_cast<std::size_t>(random_.uniform() * active_.size()) % active_.size();
    const std::int64_t node = active_[index];
    // Superposed exponential processes are one process at the summed rate,
    // and it forgets: the next failure is drawn afresh.
    taken_ = index;
    draw_exponential(alive_now);
    return node;
  }

  // `node` (just taken) runs again from `alive_now`: a new node, or the old
  // one after a process failure.
  void renew(std::int64_t node, double alive_now) {
    if (shape_ > 0) heap_.emplace(alive_now + weibull(), node);
  }

  // `node` (just taken) is left out of the job.
  void exclude(std::int64_t node, double alive_now) {
    if (shape_ > 0) return;
    (void)node;
    active_[taken_] = active_.back();
    active_.pop_back();
    draw_exponential(alive_now);
  }

  // `node`, left out earlier, is in the job again from `alive_now`.
  void include(std::int64_t node, double alive_now) {
    if (shape_ > 0) {
      heap_.emplace(alive_now + weibull(), node);
    } else {
      active_.push_back(node);
      draw_exponential(alive_now);
    }
  }

 private:
  using Heap = std::priority_queue<std::pair<double, std::int64_t>,
                                   std::vector<std::pair<double, std::int64_t>>, std::greater<>>;

  void draw_exponential(double alive_now) {
    next_ = active_.empty() ? kNever : alive_now + random_.exponential(node_rate_ * active_.size());
  }
  double weibull() { return scale_ * std::pow(-std::log(random_.uniform()), 1 / shape_); }

  double node_rate_;
  double shape_;
  double scale_ = 0;
  Generator& random_;
  // Exponential: the nodes in the job and the next failure of any of them.
  std::vector<std::int64_t> active_;
  std::size_t taken_ = 0;
  double next_ = kNever;
  // Weibull: each node's next failure.
  Heap heap_;
};

class RunSimulator {
 public:
  RunSimulator(const PlanInputs& inputs, const ClosedForm& form, const SimulationOptions& options,
               std::uint64_t index)
      : config_(form.configuration),
        options_(options),
        nodes_(node_count(inputs)),
        active_nodes_(nodes_),
        interval_(form.interval_seconds),
        horizon_(inputs.days * kSecondsPerDay),
        time_limit_(inputs.time_limit_seconds),
        requeue_delay_(inputs.requeue_delay_seconds),
        spares_(options.spares),
        random_(seed_of(options.seed, index)),
        failures_(nodes_, 1 / (form.mtbf_seconds * static_cast<double>(nodes_)),
                  options.weibull_shape, random_),
        in_job_(static_cast<std::size_t>(nodes_), true) {}

  SimulatedRun run() {
    while (now_ < horizon_) {
      const double stop = std::max(
          now_, std::min({failure_at(),
                          allocation_start_ + (time_limit_ > 0 ? time_limit_ : kNever), horizon_}));
      compute_until(stop);
      if (now_ >= horizon_) break;
      if (failure_at() <= now_) {
        restart(on_failure(), &result_.restart);
      } else {
        requeue();
      }
    }
    result_.goodput = work_;
    for (double* share : {&result_.goodput, &result_.stall, &result_.recompute, &result_.restart,
                          &result_.requeue, &result_.excluded}) {
      *share /= horizon_;
    }
    return result_;
  }

 private:
  static std::uint64_t seed_of(std::uint64_t seed, std::uint64_t index) {
    std::uint64_t mixed = seed ^ Generator::splitmix(index);
    return Generator::splitmix(mixed);
  }

  double failure_at() const { return failures_.next() + paused_; }
  double alive_now() const { return now_ - paused_; }
  double running_share() const {
    return static_cast<double>(active_nodes_) / static_cast<double>(nodes_);
  }

  bool next_save_to_disk() const { return (saves_ + 1) % config_.flush_every == 0; }

  void computed(double seconds) {
    work_ += seconds * running_share();
    result_.excluded += seconds * (1 - running_share());
  }

  void saved(bool to_disk) {
    ++saves_;
    memory_work_ = work_;
    memory_intact_ = true;
    lost_since_save_.clear();
    if (to_disk) disk_work_ = work_;
  }

  // Computes and saves from now_ until `stop`, where the next event is.
  void compute_until(double stop) {
    const int every = config_.flush_every;
    const double cycle = every * interval_ + (every - 1) * config_.save_stall_seconds +
                         config_.disk_save_stall_seconds;
    while (true) {
      if (saves_ % every == 0) {
        // Whole flush cycles at once: a long run has hundreds of thousands.
        const double cycles = std::floor((stop - now_) / cycle);
        if (cycles >= 1) {
          computed(cycles * every * interval_);
          result_.stall += cycles * (cycle - every * interval_);
          now_ += cycles * cycle;
          saves_ += static_cast<std::int64_t>(cycles) * every - 1;
          saved(true);
        }
      }
      const bool to_disk = next_save_to_disk();
      const double stall = to_disk ? config_.disk_save_stall_seconds : config_.save_stall_seconds;
      if (now_ + interval_ + stall > stop) break;
      computed(interval_);
      result_.stall += stall;
      now_ += interval_ + stall;
      saved(to_disk);
    }
    // The part of a segment before the event; a save it cuts short is lost.
    const double computing = std::max(0.0, std::min(stop, now_ + interval_) - now_);
    computed(computing);
    result_.stall += std::max(0.0, stop - now_ - interval_);
    now_ = stop;
  }

  // A node failed at now_: goes back to the newest checkpoint that survived
  // and returns how long the restart takes.
  double on_failure() {
    ++result_.failures;
    const std::int64_t node = failures_.take(alive_now());
    const bool node_lost = random_.uniform() <= options_.node_loss_share;
    if (config_.memory_tier && node_lost) {
      // The node's part has a copy on the next node, and the previous
      // node's part a copy on this one.
      const std::int64_t before = (node + nodes_ - 1) % nodes_;
      const std::int64_t after = (node + 1) % nodes_;
      const auto lost = [&](std::int64_t other) {
        return std::find(lost_since_save_.begin(), lost_since_save_.end(), other) !=
               lost_since_save_.end();
      };
      if (nodes_ == 1 || lost(before) || lost(after)) memory_intact_ = false;
      lost_since_save_.push_back(node);
    }
    double seconds = config_.restart_cost_seconds;
    double restored = memory_work_;
    if (!config_.memory_tier || !memory_intact_) {
      if (config_.memory_tier) ++result_.disk_restores;
      seconds = config_.disk_restart_cost_seconds;
      restored = disk_work_;
      memory_work_ = disk_work_;
    }
    result_.recompute += work_ - restored;
    work_ = restored;
    if (!node_lost) {
      failures_.renew(node, alive_now());
      return seconds;
    }
    while (!repairs_.empty() && repairs_.front() <= now_) {
      repairs_.pop_front();
      ++spares_;
    }
    if (spares_ != 0) {
      if (spares_ > 0) {
        --spares_;
        if (options_.repair_seconds > 0) repairs_.push_back(now_ + options_.repair_seconds);
      }
      failures_.renew(node, alive_now() + options_.replace_delay_seconds);
      return seconds + options_.replace_delay_seconds;
    }
    if (options_.repair_seconds > 0) repairs_.push_back(now_ + options_.repair_seconds);
    ++result_.exclusions;
    --active_nodes_;
    in_job_[static_cast<std::size_t>(node)] = false;
    failures_.exclude(node, alive_now());
    return seconds;
  }

  // Restarts, which takes `seconds` unless a node fails first; the time goes
  // to `bucket`, and to restarts after a failure.
  void restart(double seconds, double* bucket) {
    double end = now_ + seconds;
    while (failure_at() < std::min(end, horizon_)) {
      *bucket += failure_at() - now_;
      now_ = failure_at();
      bucket = &result_.restart;
      end = now_ + on_failure();
      if (active_nodes_ == 0) break;
    }
    if (active_nodes_ == 0) {
      // Every node is gone: the rest of the run is lost capacity.
      result_.excluded += horizon_ - now_;
      now_ = horizon_;
      return;
    }
    *bucket += std::min(end, horizon_) - now_;
    now_ = std::min(end, horizon_);
  }

  // The time limit: save to disk at the warning, wait in the queue, restart
  // from disk in a new allocation with every node. Nodes out of the job
  // cannot fail it.
  void requeue() {
    ++result_.requeues;
    const double out = std::min(config_.disk_save_stall_seconds + requeue_delay_, horizon_ - now_);
    result_.requeue += out;
    now_ += out;
    paused_ += out;
    disk_work_ = work_;
    memory_work_ = work_;
    memory_intact_ = false;  // a new allocation, new nodes: only the disk holds the state
    lost_since_save_.clear();
    for (std::int64_t node = 0; node < nodes_; ++node) {
      if (!in_job_[static_cast<std::size_t>(node)]) {
        in_job_[static_cast<std::size_t>(node)] = true;
        failures_.include(node, alive_now());
      }
    }
    active_nodes_ = nodes_;
    allocation_start_ = now_;
    if (now_ < horizon_) restart(config_.disk_restart_cost_seconds, &result_.requeue);
  }

  const Configuration config_;
  const SimulationOptions options_;
  const std::int64_t nodes_;
  std::int64_t active_nodes_;
  const double interval_;
  const double horizon_;
  const double time_limit_;
  const double requeue_delay_;
  std::int64_t spares_;
  Generator random_;
  FailureProcess failures_;
  std::vector<bool> in_job_;
  std::deque<double> repairs_;  // when lost nodes become spares again

  double now_ = 0;     // wall seconds since the run began
  double paused_ = 0;  // of which out of an allocation
  double allocation_start_ = 0;
  double work_ = 0;         // useful work done, in seconds of the whole job
  double memory_work_ = 0;  // work at the newest memory save
  double disk_work_ = 0;    // work at the newest disk save
  bool memory_intact_ = true;
  std::vector<std::int64_t> lost_since_save_;  // nodes lost since the newest save
  std::int64_t saves_ = 0;
  SimulatedRun result_;
};

double percentile(const std::vector<double>& sorted, double fraction) {
  const double position = fraction * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (position - below) * (sorted[above] - sorted[below]);
}

}  // namespace

void validate(const SimulationOptions& options) {
  if (options.runs < 1) {
    throw UsageError(fmt::format("--runs must be at least 1; got {}", options.runs));
  }
  if (options.weibull_shape < 0 || !std::isfinite(options.weibull_shape)) {
    throw UsageError(
        fmt::format("--weibull-shape must be a positive number; got {}", options.weibull_shape));
  }
  if (!(options.node_loss_share >= 0 && options.node_loss_share <= 1)) {
    throw UsageError(
        fmt::format("--node-loss-share must be between 0 and 1; got {}", options.node_loss_share));
  }
  if (options.spares < -1) {
    throw UsageError(fmt::format("--spares must be 0 or more; got {}", options.spares));
  }
  if (!(options.replace_delay_seconds >= 0) || !std::isfinite(options.replace_delay_seconds)) {
    throw UsageError(
        fmt::format("--replace-delay must be 0 or more; got {}", options.replace_delay_seconds));
  }
  if (options.threads < 0) {
    throw UsageError(fmt::format("--threads must be 0 or more; got {}", options.threads));
  }
  if (!(options.repair_seconds >= 0) || !std::isfinite(options.repair_seconds)) {
    throw UsageError(
        fmt::format("--repair-hours must be 0 or more; got {}", options.repair_seconds / 3600));
  }
}

SimulatedRun simulate_run(const PlanInputs& inputs, const ClosedForm& form,
                          const SimulationOptions& options, std::uint64_t index) {
  return RunSimulator(inputs, form, options, index).run();
}

SimulationResult simulate(const PlanInputs& inputs, const ClosedForm& form,
                          const SimulationOptions& options) {
  validate(inputs);
  validate(options);
  const auto start = std::chrono::steady_clock::now();
  std::vector<SimulatedRun> runs(static_cast<std::size_t>(options.runs));
  const unsigned threads =
      std::max(1u, std::min(static_cast<unsigned>(options.runs),
                            options.threads > 0 ? static_cast<unsigned>(options.threads)
                                                : std::thread::hardware_concurrency()));
  {
    std::vector<std::jthread> workers;
    for (unsigned worker = 0; worker < threads; ++worker) {
      workers.emplace_back([&, worker] {
        for (std::size_t index = worker; index < runs.size(); index += threads) {
          runs[index] = simulate_run(inputs, form, options, index);
        }
      });
    }
  }
  SimulationResult result;
  result.configuration = form.configuration;
  result.interval_seconds = form.interval_seconds;
  result.runs = options.runs;
  std::vector<double> goodputs;
  goodputs.reserve(runs.size());
  const double count = static_cast<double>(runs.size());
  for (const SimulatedRun& run : runs) {
    goodputs.push_back(run.goodput);
    result.mean.goodput += run.goodput / count;
    result.mean.stall += run.stall / count;
    result.mean.recompute += run.recompute / count;
    result.mean.restart += run.restart / count;
    result.mean.requeue += run.requeue / count;
    result.mean.excluded += run.excluded / count;
    result.mean.failures += run.failures / count;
    result.mean.requeues += run.requeues / count;
    result.mean.disk_restores += run.disk_restores / count;
    result.mean.exclusions += run.exclusions / count;
  }
  double variance = 0;
  for (double goodput : goodputs) {
    variance += (goodput - result.mean.goodput) * (goodput - result.mean.goodput);
  }
  variance = runs.size() > 1 ? variance / (count - 1) : 0;
  std::sort(goodputs.begin(), goodputs.end());
  result.goodput = {
      .mean = result.mean.goodput,
      .ci95 = 1.96 * std::sqrt(variance / count),
      .p5 = percentile(goodputs, 0.05),
      .p50 = percentile(goodputs, 0.5),
      .p95 = percentile(goodputs, 0.95),
  };
  result.elapsed_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace lockstep::launcher
