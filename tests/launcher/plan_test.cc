// `lockstep plan`: the closed form against the published first-order values,
// the simulation against the closed form and the exact expectation for
// exponential failures, and the inputs it refuses.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lockstep/error.h"
#include "lockstep/young_daly.h"
#include "plan.h"
#include "plan_report.h"
#include "plan_simulation.h"

namespace lockstep::launcher {
namespace {

std::string usage_error(const auto& body) {
  try {
    body();
  } catch (const UsageError& error) {
    return error.what();
  }
  return "";
}

// A 16,384-GPU job with the given MTBF and disk costs.
PlanInputs job(double mtbf_hours, double save_stall, double restart_cost) {
  PlanInputs inputs;
  inputs.mtbf_seconds = mtbf_hours * 3600;
  inputs.disk = {save_stall, restart_cost};
  return inputs;
}

SimulationResult simulate_disk(const PlanInputs& inputs, SimulationOptions options = {}) {
  return simulate(inputs, plan_closed_form(inputs).front(), options);
}

TEST(PlanClosedForm, GivesTheFirstOrderYoungDalyValues) {
  struct Case {
    double save_stall, restart_cost, interval, goodput;
  };
  // MTBF 3 h; interval and goodput to the digits they are usually quoted.
  for (const Case& c : {Case{5, 600, 329, 0.914}, Case{30, 600, 805, 0.870},
                        Case{5, 120, 329, 0.958}, Case{60, 1200, 1138, 0.783}}) {
    const ClosedForm form = plan_closed_form(job(3, c.save_stall, c.restart_cost)).front();
    SCOPED_TRACE(testing::Message() << "C " << c.save_stall << " s, R " << c.restart_cost << " s");
    EXPECT_NEAR(form.interval_seconds, c.interval, 0.5);
    EXPECT_NEAR(form.goodput, c.goodput, 0.0005);
    EXPECT_NEAR(form.first_order.stall + form.first_order.recompute + form.first_order.restart,
                1 - form.goodput, 1e-12);
    EXPECT_NEAR(form.interruptions, 54 * 24 / 3.0, 1e-9);
  }
}

TEST(PlanClosedForm, UsesTheCheckpointersIntervalFormula) {
  // The Checkpointer's automatic policy calls young_daly_interval() too.
  const ClosedForm form = plan_closed_form(job(3, 5, 600)).front();
  EXPECT_DOUBLE_EQ(form.interval_seconds, young_daly_interval(5, 3 * 3600));
  EXPECT_DOUBLE_EQ(young_daly_interval(0, 3600), 0);
  EXPECT_THROW(young_daly_interval(-1, 3600), UsageError);
  EXPECT_THROW(young_daly_interval(1, 0), UsageError);
}

TEST(PlanClosedForm, MtbfFromTheLlama3Rate) {
  PlanInputs inputs;
  inputs.disk = {5, 600};
  // 419 unexpected interruptions in 54 days.
  EXPECT_NEAR(job_mtbf_seconds(inputs), 54 * 86400.0 / 419, 1e-6);
  inputs.gpus = 8192;
  EXPECT_NEAR(job_mtbf_seconds(inputs), 2 * 54 * 86400.0 / 419, 1e-6);
}

TEST(PlanClosedForm, LeversAndTiers) {
  PlanInputs inputs = job(3, 30, 600);
  inputs.memory = TierCosts{2, 120};
  inputs.flush_every = 4;
  const auto forms = plan_closed_form(inputs);
  ASSERT_EQ(forms.size(), 2u);
  EXPECT_EQ(forms[0].configuration.name, "disk");
  EXPECT_EQ(forms[1].configuration.name, "memory+disk");
  EXPECT_DOUBLE_EQ(forms[1].configuration.mean_stall_seconds(), (3 * 2 + 30) / 4.0);
  EXPECT_GT(forms[1].goodput, forms[0].goodput);
  for (const ClosedForm& form : forms) {
    ASSERT_EQ(form.levers.size(), 3u);
    for (const Lever& lever : form.levers) EXPECT_GT(lever.goodput, form.goodput) << lever.name;
    // The best of halving C and halving R; doubling the MTBF buys at least
    // as much as either, but is not the job's to do.
    EXPECT_TRUE(form.best_lever().in_the_jobs_hands);
    EXPECT_GE(form.best_lever().goodput, form.levers[0].goodput);
    EXPECT_GE(form.best_lever().goodput, form.levers[1].goodput);
    EXPECT_FALSE(form.levers[2].in_the_jobs_hands);
    EXPECT_GE(form.levers[2].goodput, form.best_lever().goodput);
  }
  // Disk, C 30 s and R 600 s: halving R (R/2M = 2.8 points) beats halving C
  // (the stall and recomputation terms, 7.4 points, shrink by 1/sqrt(2):
  // 2.2 points).
  EXPECT_EQ(forms[0].best_lever().name, "halve the restart cost");
  // Memory tier, mean C 9 s and R 120 s: halving C wins.
  EXPECT_EQ(forms[1].best_lever().name, "halve the save stall");
}

TEST(PlanClosedForm, TimeLimitCostsARequeueEachAllocation) {
  PlanInputs inputs = job(3, 5, 600);
  inputs.time_limit_seconds = 24 * 3600;
  inputs.requeue_delay_seconds = 300;
  const ClosedForm form = plan_closed_form(inputs).front();
  EXPECT_NEAR(form.requeue, (5 + 300 + 600) / (24 * 3600.0 + 300), 1e-12);
  EXPECT_NEAR(form.goodput, form.first_order.goodput - form.requeue, 1e-12);
}

TEST(PlanInputs, RefusesBadInputNamingIt) {
  const auto refused = [](auto change) {
    PlanInputs inputs = job(3, 5, 600);
    change(inputs);
    return usage_error([&] { plan_closed_form(inputs); });
  };
  EXPECT_NE(refused([](PlanInputs& in) { in.gpus = 0; }).find("--gpus"), std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.gpus = -8; }).find("--gpus"), std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.gpus_per_node = 0; }).find("--gpus-per-node"),
            std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.gpus_per_node = 7; }).find("not a multiple"),
            std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.mtbf_seconds = 0; }).find("--mtbf-hours"),
            std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) {
              in.mtbf_seconds.reset();
              in.failures_per_node_day = -1;
            }).find("--failures-per-node-day"),
            std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.disk.save_stall_seconds = 0; }).find("--save-stall"),
            std::string::npos);
  EXPECT_NE(
      refused([](PlanInputs& in) { in.disk.restart_cost_seconds = -1; }).find("--restart-cost"),
      std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) {
              in.memory = TierCosts{-1, 10};
            }).find("--memory-save-stall"),
            std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.days = 0; }).find("--days"), std::string::npos);
  EXPECT_NE(refused([](PlanInputs& in) { in.interval_seconds = 0; }).find("--interval"),
            std::string::npos);
  EXPECT_EQ(refused([](PlanInputs&) {}), "");

  SimulationOptions options;
  options.runs = 0;
  EXPECT_NE(usage_error([&] { simulate_disk(job(3, 5, 600), options); }).find("--runs"),
            std::string::npos);
  options = {};
  options.node_loss_share = 1.5;
  EXPECT_NE(usage_error([&] { simulate_disk(job(3, 5, 600), options); }).find("--node-loss-share"),
            std::string::npos);
}

// Where R, C and the interval are small against the MTBF (lockstep's own
// measured costs, 0.07 s and 7.8 s, at a 30-hour MTBF: R/MTBF = 7e-5), the
// first-order closed form lies inside the simulation's 95% confidence
// interval. (At a 3-hour MTBF its error, 7e-6, is already as large as the
// interval of 1,000 runs.)
TEST(PlanSimulation, AgreesWithTheClosedFormWhereRestartsAreShort) {
  const PlanInputs inputs = job(30, 0.07, 7.8);
  const ClosedForm form = plan_closed_form(inputs).front();
  const SimulationResult result = simulate(inputs, form, {});
  EXPECT_EQ(result.runs, 1000);
  EXPECT_GT(result.goodput.ci95, 0);
  EXPECT_LE(std::abs(result.goodput.mean - form.goodput), result.goodput.ci95)
      << "closed form " << form.goodput << ", simulation " << result.goodput.mean << " ± "
      << result.goodput.ci95;
  EXPECT_NEAR(result.mean.failures, form.interruptions, 0.01 * form.interruptions);
}

// The simulation matches the exact expectation for exponential failures
// everywhere, and the first-order formula stops agreeing as R approaches the
// MTBF.
TEST(PlanSimulation, ShowsWhereTheFirstOrderFormulaStopsAgreeing) {
  for (const double restart_hours : {1.0 / 6, 0.5, 1.5, 3.0}) {
    const PlanInputs inputs = job(3, 5, restart_hours * 3600);
    const ClosedForm form = plan_closed_form(inputs).front();
    const SimulationResult result = simulate(inputs, form, {});
    SCOPED_TRACE(testing::Message()
                 << "R/MTBF " << restart_hours / 3 << ": first order " << form.goodput << ", exact "
                 << form.exponential_goodput << ", simulation " << result.goodput.mean << " ± "
                 << result.goodput.ci95);
    EXPECT_LE(std::abs(result.goodput.mean - form.exponential_goodput), result.goodput.ci95);
    if (restart_hours >= 1.5) {
      EXPECT_GT(std::abs(result.goodput.mean - form.goodput), 20 * result.goodput.ci95);
      EXPECT_GT(result.goodput.mean - form.goodput, 0.05);
    }
  }
}

// Llama 3: >90% effective training time over 54 days on 16,384 GPUs with
// 419 unexpected and 47 planned interruptions. The save stall and the
// restart cost are not published; assumed here: a 5 s stall (an
// asynchronous save), 10 minutes from a failure to training again, and the
// planned interruptions as requeues every 54 days / 47.
TEST(PlanSimulation, Llama3LikeInputsLandNearNinetyPercent) {
  PlanInputs inputs;
  inputs.disk = {5, 600};
  inputs.time_limit_seconds = 54 * 86400.0 / 47;
  const ClosedForm form = plan_closed_form(inputs).front();
  const SimulationResult result = simulate(inputs, form, {});
  EXPECT_GT(result.goodput.mean, 0.90);
  EXPECT_LT(result.goodput.mean, 0.93);
  EXPECT_NEAR(result.mean.failures + result.mean.requeues, 419 + 46, 15);
}

TEST(PlanSimulation, IsReproducibleAndAccountsForEverySecond) {
  PlanInputs inputs = job(3, 30, 600);
  inputs.memory = TierCosts{2, 120};
  inputs.time_limit_seconds = 48 * 3600;
  inputs.requeue_delay_seconds = 1800;
  inputs.days = 20;
  SimulationOptions options;
  options.runs = 40;
  options.weibull_shape = 0.7;
  options.spares = 3;
  options.replace_delay_seconds = 900;
  options.repair_seconds = 2 * 86400;
  for (const ClosedForm& form : plan_closed_form(inputs)) {
    options.threads = 1;
    const SimulationResult one = simulate(inputs, form, options);
    options.threads = 3;
    const SimulationResult three = simulate(inputs, form, options);
    EXPECT_EQ(one.goodput.mean, three.goodput.mean);
    EXPECT_EQ(one.goodput.p5, three.goodput.p5);
    EXPECT_EQ(one.mean.failures, three.mean.failures);
    for (std::uint64_t index = 0; index < 5; ++index) {
      const SimulatedRun run = simulate_run(inputs, form, options, index);
      EXPECT_NEAR(
          run.goodput + run.stall + run.recompute + run.restart + run.requeue + run.excluded, 1,
          1e-9);
      EXPECT_GT(run.requeue, 0);
      EXPECT_EQ(run.requeues, 9);  // 20 days of 48-hour allocations, with the queue between
    }
    options.seed = 2;
    EXPECT_NE(simulate(inputs, form, options).goodput.mean, one.goodput.mean);
    options.seed = 1;
  }
}

TEST(PlanSimulation, MemoryTierNeedsThePartnerAfterANodeLoss) {
  PlanInputs inputs = job(3, 30, 600);
  inputs.memory = TierCosts{2, 120};
  inputs.days = 10;
  SimulationOptions options;
  options.runs = 20;
  options.node_loss_share = 1;
  // One node: no partner, so every node loss goes back to disk.
  inputs.gpus = 8;
  const ClosedForm lone = plan_closed_form(inputs).back();
  const SimulationResult alone = simulate(inputs, lone, options);
  EXPECT_GT(alone.mean.failures, 0);
  EXPECT_EQ(alone.mean.disk_restores, alone.mean.failures);
  // Many nodes: a node and its partner rarely fail between two saves.
  inputs.gpus = 16384;
  const ClosedForm many = plan_closed_form(inputs).back();
  const SimulationResult paired = simulate(inputs, many, options);
  EXPECT_LT(paired.mean.disk_restores, 0.01 * paired.mean.failures);
  // A process failure leaves the node's own copy.
  options.node_loss_share = 0;
  inputs.gpus = 8;
  EXPECT_EQ(simulate(inputs, lone, options).mean.disk_restores, 0);
}

TEST(PlanSimulation, WithoutSparesTheJobRunsSmaller) {
  PlanInputs inputs = job(3, 5, 600);
  inputs.days = 10;
  SimulationOptions options;
  options.runs = 20;
  options.node_loss_share = 0.5;
  const SimulationResult replaced = simulate_disk(inputs, options);
  EXPECT_EQ(replaced.mean.exclusions, 0);
  EXPECT_EQ(replaced.mean.excluded, 0);
  options.spares = 0;
  const SimulationResult excluded = simulate_disk(inputs, options);
  EXPECT_NEAR(excluded.mean.exclusions, 0.5 * excluded.mean.failures, 0.1 * excluded.mean.failures);
  EXPECT_GT(excluded.mean.excluded, 0);
  EXPECT_LT(excluded.goodput.mean, replaced.goodput.mean);
  // An hour's wait for each spare: at most an hour more per node loss (a
  // failure during the wait starts the restart over).
  options.spares = -1;
  options.replace_delay_seconds = 3600;
  const SimulationResult delayed = simulate_disk(inputs, options);
  const double hour_per_loss = 0.5 * delayed.mean.failures * 3600 / (10 * 86400);
  EXPECT_GT(delayed.mean.restart - replaced.mean.restart, 0.6 * hour_per_loss);
  EXPECT_LT(delayed.mean.restart - replaced.mean.restart, 1.0 * hour_per_loss);
}

TEST(PlanSimulation, WeibullWithShapeOneIsExponential) {
  const PlanInputs inputs = job(3, 5, 600);
  SimulationOptions options;
  options.runs = 400;
  const SimulationResult exponential = simulate_disk(inputs, options);
  options.weibull_shape = 1;
  const SimulationResult weibull = simulate_disk(inputs, options);
  EXPECT_LE(std::abs(exponential.goodput.mean - weibull.goodput.mean),
            exponential.goodput.ci95 + weibull.goodput.ci95);
  // The same mean time between a node's failures, whatever the shape.
  options.weibull_shape = 0.6;
  EXPECT_NEAR(simulate_disk(inputs, options).mean.failures, 432, 15);
}

class PlanSummary : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("lockstep-plan-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const nlohmann::json& summary) {
    std::ofstream(dir_ / "summary.json") << summary.dump();
  }
  static nlohmann::json good() {
    return {{"summary_version", 1},
            {"outcome", "success"},
            {"exit_code", 0},
            {"checkpoints", 10},
            {"checkpoint_stall_seconds", 2.0},
            {"restarts", 2},
            {"mean_time_to_recovery_seconds", 8.0}};
  }
  std::filesystem::path dir_;
};

TEST_F(PlanSummary, TakesTheMeasuredCosts) {
  write(good());
  const MeasuredCosts costs = read_measured_costs(dir_);
  EXPECT_DOUBLE_EQ(*costs.save_stall_seconds, 0.2);
  EXPECT_DOUBLE_EQ(*costs.restart_cost_seconds, 8.0);
  EXPECT_EQ(costs.checkpoints, 10);
  EXPECT_EQ(costs.restarts, 2);
  nlohmann::json quiet = good();
  quiet["restarts"] = 0;
  quiet["mean_time_to_recovery_seconds"] = 0;
  write(quiet);
  EXPECT_FALSE(read_measured_costs(dir_).restart_cost_seconds.has_value());
}

TEST_F(PlanSummary, RefusesWhatItCannotTrust) {
  const std::string path = (dir_ / "summary.json").string();
  const auto refused = [&] { return usage_error([&] { read_measured_costs(dir_); }); };
  EXPECT_NE(refused().find(path), std::string::npos) << "missing";
  std::ofstream(dir_ / "summary.json") << "{ not json";
  EXPECT_NE(refused().find("not a JSON object"), std::string::npos);
  nlohmann::json older = good();
  older.erase("summary_version");
  write(older);
  EXPECT_NE(refused().find("older"), std::string::npos);
  EXPECT_NE(refused().find(path), std::string::npos);
  nlohmann::json failed = good();
  failed["outcome"] = "failed";
  failed["exit_code"] = 1;
  write(failed);
  EXPECT_NE(refused().find("did not succeed"), std::string::npos);
  nlohmann::json partial = good();
  partial.erase("checkpoints");
  write(partial);
  EXPECT_NE(refused().find("\"checkpoints\""), std::string::npos);
}

TEST(PlanReport, JsonHoldsTheFigures) {
  PlanInputs inputs = job(3, 5, 600);
  inputs.memory = TierCosts{1, 60};
  SimulationOptions options;
  options.runs = 50;
  const PlanReport report = make_plan_report(inputs, std::nullopt, options);
  const nlohmann::json json = nlohmann::json::parse(to_json(report).dump());
  ASSERT_EQ(json["configurations"].size(), 2u);
  const nlohmann::json& disk = json["configurations"][0];
  EXPECT_EQ(disk["name"], "disk");
  EXPECT_DOUBLE_EQ(disk["goodput"].get<double>(), report.closed_form[0].goodput);
  EXPECT_DOUBLE_EQ(disk["interval_seconds"].get<double>(), young_daly_interval(5, 3 * 3600));
  EXPECT_EQ(disk["levers"].size(), 3u);
  EXPECT_DOUBLE_EQ(disk["simulation"]["goodput"]["mean"].get<double>(),
                   report.simulations[0].goodput.mean);
  EXPECT_EQ(disk["simulation"]["runs"], 50);
  EXPECT_EQ(json["inputs"]["nodes"], 2048);
  EXPECT_EQ(json["simulation"]["failure_distribution"], "exponential");
  const std::string table = describe(report);
  EXPECT_NE(table.find("memory+disk"), std::string::npos);
  EXPECT_NE(table.find("Young/Daly interval"), std::string::npos);
}

}  // namespace
}  // namespace lockstep::launcher
