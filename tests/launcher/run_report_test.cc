// The run report's page: every part of the goodput from summary.json, the
// attempts with their root cause, and whatever a run directory holds shown
// as text, never as markup.
#include <string>

#include <gtest/gtest.h>

#include "run_report.h"

namespace lockstep::launcher {
namespace {

ReportData sample() {
  ReportData data;
  data.run_dir = "/runs/<b>x</b>";
  data.attempts = {{.name = "attempt 0",
                    .start = 0,
                    .end = 60,
                    .outcome = "failed",
                    .cause = "rank 2 on <img src=x>: killed by signal 9 (Killed)",
                    .flight = "collective #5 on mpi 1 never joined by rank 2"},
                   {.name = "attempt 1",
                    .start = 61,
                    .end = 100,
                    .outcome = "success",
                    .cause = "",
                    .flight = ""}};
  data.marks = {{.at = 59, .kind = "failure", .text = "rank 2 <script>"},
                {.at = 30, .kind = "checkpoint", .text = "checkpoint step 9"}};
  data.rank_names = {{0, "rank 0 (node1)"}};
  data.steps[0] = {{10, 0.5}, {20, 0.5}, {70, 0.6}};
  data.summary = nlohmann::json{
      {"wall_seconds", 100},   {"productive_seconds", 50},          {"lost_recompute_seconds", 20},
      {"restart_seconds", 10}, {"checkpoint_stall_seconds", 5},     {"other_seconds", 15},
      {"restarts", 1},         {"mean_time_to_recovery_seconds", 4}};
  return data;
}

TEST(RunReport, ShowsEveryPartOfTheGoodput) {
  const std::string html = report_html(sample());
  for (const char* row :
       {"productive training</td><td>50.0 s</td><td>50.0%",
        "lost (recomputed)</td><td>20.0 s</td><td>20.0%", "restarts</td><td>10.0 s</td><td>10.0%",
        "checkpoint stall</td><td>5.0 s</td><td>5.0%",
        "start-up, shut-down</td><td>15.0 s</td><td>15.0%"}) {
    EXPECT_NE(html.find(row), std::string::npos) << row;
  }
  EXPECT_NE(html.find("Goodput <b>50.0%</b>"), std::string::npos);
}

TEST(RunReport, NamesAttemptsAndRootCausesAsText) {
  const std::string html = report_html(sample());
  EXPECT_NE(html.find("<td>attempt 0</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>attempt 1</td>"), std::string::npos);
  EXPECT_NE(html.find("rank 2 on &lt;img src=x&gt;: killed by signal 9"), std::string::npos);
  EXPECT_NE(html.find("never joined by rank 2"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>x</b>"), std::string::npos);
  EXPECT_NE(html.find("rank 0 (node1)"), std::string::npos);
}

TEST(RunReport, SaysWhatIsMissing) {
  ReportData data;
  data.run_dir = "/runs/empty";
  const std::string html = report_html(data);
  EXPECT_NE(html.find("No summary.json"), std::string::npos);
  EXPECT_NE(html.find("No step times"), std::string::npos);
}

}  // namespace
}  // namespace lockstep::launcher
