#include "plan_report.h"

#include <cmath>

#include <fmt/format.h>

namespace lockstep::launcher {

namespace {

nlohmann::json lost_json(double stall, double recompute, double restart, double requeue) {
  return {{"stall", stall}, {"recompute", recompute}, {"restart", restart}, {"requeue", requeue}};
}

nlohmann::json to_json(const SimulationOptions& options) {
  return {
      {"runs", options.runs},
      {"seed", options.seed},
      {"failure_distribution", options.weibull_shape > 0 ? "weibull" : "exponential"},
      {"weibull_shape",
       options.weibull_shape > 0 ? nlohmann::json(options.weibull_shape) : nlohmann::json()},
      {"node_loss_share", options.node_loss_share},
      {"spares", options.spares < 0 ? nlohmann::json("unlimited") : nlohmann::json(options.spares)},
      {"replace_delay_seconds", options.replace_delay_seconds},
      {"repair_seconds", options.repair_seconds},
  };
}

nlohmann::json to_json(const SimulationResult& result, const ClosedForm& form) {
  nlohmann::json lost =
      lost_json(result.mean.stall, result.mean.recompute, result.mean.restart, result.mean.requeue);
  lost["excluded"] = result.mean.excluded;
  return {
      {"runs", result.runs},
      {"interval_seconds", result.interval_seconds},
      {"goodput",
       {{"mean", result.goodput.mean},
        {"ci95", result.goodput.ci95},
        {"p5", result.goodput.p5},
        {"p50", result.goodput.p50},
        {"p95", result.goodput.p95}}},
      {"closed_form_inside_ci95",
       std::abs(form.goodput - result.goodput.mean) <= result.goodput.ci95},
      {"lost", lost},
      {"failures", result.mean.failures},
      {"requeues", result.mean.requeues},
      {"interruptions", result.mean.failures + result.mean.requeues},
      {"disk_restores", result.mean.disk_restores},
      {"exclusions", result.mean.exclusions},
      {"elapsed_seconds", result.elapsed_seconds},
  };
}

std::string percent(double fraction) { return fmt::format("{:.2f}%", 100 * fraction); }
// A share of the run and the hours it comes to.
std::string share_of(double fraction, double days) {
  return fmt::format("{:.2f}% ({:.1f} h)", 100 * fraction, fraction * days * 24);
}
std::string points(double fraction) { return fmt::format("{:+.2f} points", 100 * fraction); }

std::string seconds_text(double seconds) {
  if (seconds < 10) return fmt::format("{:.3g} s", seconds);
  if (seconds < 3600) return fmt::format("{:.0f} s", seconds);
  return fmt::format("{:.2f} h", seconds / 3600);
}

// One row: a label and a cell per configuration.
class Table {
 public:
  explicit Table(std::size_t columns) : columns_(columns) {}
  void row(const std::string& label, const std::vector<std::string>& cells) {
    text_ += fmt::format("  {:<34}", label);
    for (const std::string& cell : cells) text_ += fmt::format("{:>24}", cell);
    text_ += "\n";
  }
  void line(const std::string& text) { text_ += text + "\n"; }
  template <typename Cell>
  void row(const std::string& label, std::size_t count, Cell cell) {
    std::vector<std::string> cells;
    for (std::size_t i = 0; i < count; ++i) cells.push_back(cell(i));
    row(label, cells);
  }
  const std::string& text() const { return text_; }
  std::size_t columns() const { return columns_; }

 private:
  std::size_t columns_;
  std::string text_;
};

}  // namespace

PlanReport make_plan_report(const PlanInputs& inputs, std::optional<MeasuredCosts> measured,
                            std::optional<SimulationOptions> simulation) {
  PlanReport report;
  report.inputs = inputs;
  report.measured = std::move(measured);
  report.closed_form = plan_closed_form(inputs);
  report.simulation_options = simulation;
  if (simulation) {
    for (const ClosedForm& form : report.closed_form) {
      report.simulations.push_back(simulate(inputs, form, *simulation));
    }
  }
  return report;
}

nlohmann::json to_json(const PlanReport& report) {
  const PlanInputs& in = report.inputs;
  nlohmann::json inputs = {
      {"gpus", in.gpus},
      {"gpus_per_node", in.gpus_per_node},
      {"nodes", node_count(in)},
      {"failures_per_node_day",
       in.mtbf_seconds ? nlohmann::json() : nlohmann::json(in.failures_per_node_day)},
      {"mtbf_seconds", job_mtbf_seconds(in)},
      {"days", in.days},
      {"disk",
       {{"save_stall_seconds", in.disk.save_stall_seconds},
        {"restart_cost_seconds", in.disk.restart_cost_seconds}}},
      {"memory", in.memory
                     ? nlohmann::json{{"save_stall_seconds", in.memory->save_stall_seconds},
                                      {"restart_cost_seconds", in.memory->restart_cost_seconds},
                                      {"flush_every", in.flush_every}}
                     : nlohmann::json()},
      {"time_limit_seconds", in.time_limit_seconds},
      {"requeue_delay_seconds", in.requeue_delay_seconds},
  };
  if (report.measured) {
    inputs["from"] = {{"summary", report.measured->summary.string()},
                      {"checkpoints", report.measured->checkpoints},
                      {"restarts", report.measured->restarts}};
  }
  nlohmann::json configurations = nlohmann::json::array();
  for (std::size_t i = 0; i < report.closed_form.size(); ++i) {
    const ClosedForm& form = report.closed_form[i];
    nlohmann::json levers = nlohmann::json::array();
    for (const Lever& lever : form.levers) {
      levers.push_back({{"name", lever.name},
                        {"goodput", lever.goodput},
                        {"gain", lever.goodput - form.goodput},
                        {"in_the_jobs_hands", lever.in_the_jobs_hands}});
    }
    nlohmann::json entry = {
        {"name", form.configuration.name},
        {"save_stall_seconds", form.configuration.mean_stall_seconds()},
        {"restart_cost_seconds", form.configuration.restart_cost_seconds},
        {"interval_seconds", form.interval_seconds},
        {"goodput", form.goodput},
        {"exponential_goodput", form.exponential_goodput},
        {"lost", lost_json(form.first_order.stall, form.first_order.recompute,
                           form.first_order.restart, form.requeue)},
        {"interruptions", form.interruptions},
        {"levers", levers},
        {"best_lever", form.best_lever().name},
    };
    if (i < report.simulations.size()) {
      entry["simulation"] = to_json(report.simulations[i], form);
    }
    configurations.push_back(entry);
  }
  nlohmann::json json = {{"inputs", inputs}, {"configurations", configurations}};
  if (report.simulation_options) json["simulation"] = to_json(*report.simulation_options);
  return json;
}

std::string describe(const PlanReport& report) {
  const PlanInputs& in = report.inputs;
  const auto& forms = report.closed_form;
  const std::size_t n = forms.size();
  const double mtbf = job_mtbf_seconds(in);
  std::string text =
      fmt::format("{} GPUs on {} nodes of {}; ", in.gpus, node_count(in), in.gpus_per_node);
  text += in.mtbf_seconds ? fmt::format("job MTBF {:.2f} h (given)", mtbf / 3600)
                          : fmt::format("{:.5f} failures per node per day: job MTBF {:.2f} h",
                                        in.failures_per_node_day, mtbf / 3600);
  text += fmt::format("; {:g} days\n", in.days);
  if (report.measured) {
    text += fmt::format("costs measured by {} (saves: {}, restarts: {}) unless given as flags\n",
                        report.measured->summary.string(), report.measured->checkpoints,
                        report.measured->restarts);
  }
  if (in.time_limit_seconds > 0) {
    text += fmt::format("time limit {:g} h per allocation, {} in the queue after each requeue\n",
                        in.time_limit_seconds / 3600, seconds_text(in.requeue_delay_seconds));
  }
  text += "\n";
  Table table(n);
  table.row("closed form (first order)", n,
            [&](std::size_t i) { return forms[i].configuration.name; });
  table.row("save stall C (mean per save)", n, [&](std::size_t i) {
    return seconds_text(forms[i].configuration.mean_stall_seconds());
  });
  table.row("restart cost R", n, [&](std::size_t i) {
    return seconds_text(forms[i].configuration.restart_cost_seconds);
  });
  if (in.memory) {
    table.row("saves that go to disk", n, [&](std::size_t i) {
      return forms[i].configuration.flush_every == 1
                 ? std::string("every one")
                 : fmt::format("1 in {}", forms[i].configuration.flush_every);
    });
  }
  table.row(in.interval_seconds ? "checkpoint interval (given)" : "Young/Daly interval", n,
            [&](std::size_t i) { return seconds_text(forms[i].interval_seconds); });
  table.row("expected goodput", n, [&](std::size_t i) { return percent(forms[i].goodput); });
  table.row("  lost to save stalls", n,
            [&](std::size_t i) { return share_of(forms[i].first_order.stall, in.days); });
  table.row("  lost to recomputation", n,
            [&](std::size_t i) { return share_of(forms[i].first_order.recompute, in.days); });
  table.row("  lost to restarts", n,
            [&](std::size_t i) { return share_of(forms[i].first_order.restart, in.days); });
  if (in.time_limit_seconds > 0) {
    table.row("  lost to requeues", n,
              [&](std::size_t i) { return share_of(forms[i].requeue, in.days); });
  }
  table.row("goodput, exact for exponential", n,
            [&](std::size_t i) { return percent(forms[i].exponential_goodput); });
  table.row(fmt::format("failures in {:g} days", in.days), n,
            [&](std::size_t i) { return fmt::format("{:.0f}", forms[i].interruptions); });
  for (std::size_t lever = 0; lever < forms.front().levers.size(); ++lever) {
    table.row(forms.front().levers[lever].name, n, [&](std::size_t i) {
      return points(forms[i].levers[lever].goodput - forms[i].goodput);
    });
  }
  table.row("the job's lever that buys the most", n,
            [&](std::size_t i) { return forms[i].best_lever().name; });
  if (!report.simulations.empty()) {
    const SimulationOptions& options = *report.simulation_options;
    const auto& sims = report.simulations;
    table.line("");
    table.line(fmt::format(
        "  simulation: {} runs of {:g} days, seed {}\n  {} failures per node, {:.0f}% of them "
        "lose the node, {}",
        options.runs, in.days, options.seed,
        options.weibull_shape > 0 ? fmt::format("Weibull (shape {:g})", options.weibull_shape)
                                  : std::string("exponential"),
        100 * options.node_loss_share,
        options.spares < 0
            ? fmt::format("a spare for each after {}", seconds_text(options.replace_delay_seconds))
            : fmt::format("{} spares (joining after {}), then exclusion", options.spares,
                          seconds_text(options.replace_delay_seconds))));
    table.row("mean goodput (95% interval)", n, [&](std::size_t i) {
      return fmt::format("{:.2f}% ±{:.3f}", 100 * sims[i].goodput.mean, 100 * sims[i].goodput.ci95);
    });
    table.row("  5th / 95th percentile", n, [&](std::size_t i) {
      return fmt::format("{:.2f} / {:.2f}%", 100 * sims[i].goodput.p5, 100 * sims[i].goodput.p95);
    });
    table.row("  closed form minus simulation", n, [&](std::size_t i) {
      const double difference = forms[i].goodput - sims[i].goodput.mean;
      return fmt::format("{:+.3f}{}", 100 * difference,
                         std::abs(difference) <= sims[i].goodput.ci95 ? "" : " (out)");
    });
    table.row("  lost to save stalls", n,
              [&](std::size_t i) { return share_of(sims[i].mean.stall, in.days); });
    table.row("  lost to recomputation", n,
              [&](std::size_t i) { return share_of(sims[i].mean.recompute, in.days); });
    table.row("  lost to restarts", n,
              [&](std::size_t i) { return share_of(sims[i].mean.restart, in.days); });
    table.row("  lost to requeues", n,
              [&](std::size_t i) { return share_of(sims[i].mean.requeue, in.days); });
    table.row("  lost to nodes left out", n,
              [&](std::size_t i) { return share_of(sims[i].mean.excluded, in.days); });
    table.row("interruptions per run", n, [&](std::size_t i) {
      return fmt::format("{:.1f}", sims[i].mean.failures + sims[i].mean.requeues);
    });
    table.row("  failures / requeues", n, [&](std::size_t i) {
      return fmt::format("{:.1f} / {:.1f}", sims[i].mean.failures, sims[i].mean.requeues);
    });
    if (in.memory) {
      table.row("  restores from disk (memory lost)", n,
                [&](std::size_t i) { return fmt::format("{:.2f}", sims[i].mean.disk_restores); });
    }
    table.row("  nodes left out", n,
              [&](std::size_t i) { return fmt::format("{:.1f}", sims[i].mean.exclusions); });
    table.row("simulated in", n,
              [&](std::size_t i) { return fmt::format("{:.2f} s", sims[i].elapsed_seconds); });
  }
  text += table.text();
  bool outside = false;
  for (std::size_t i = 0; i < report.simulations.size(); ++i) {
    outside = outside || std::abs(forms[i].goodput - report.simulations[i].goodput.mean) >
                             report.simulations[i].goodput.ci95;
  }
  if (outside) {
    text += "\n(out): the first-order closed form lies outside the simulation's 95% interval\n";
  }
  return text;
}

}  // namespace lockstep::launcher
