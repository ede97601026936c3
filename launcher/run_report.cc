#include "run_report.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "lockstep/files.h"
#include "trace_merge.h"

namespace lockstep::launcher {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::size_t kMaxStepsPerRank = 1'000'000;
// More than any run has; what a damaged timeline adds beyond is not drawn.
constexpr std::size_t kMaxAttempts = 10'000;
constexpr std::size_t kMaxMarks = 100'000;
constexpr std::uintmax_t kMaxSummary = 1 << 20;
constexpr int kMaxRankLines = 16;  // step-time lines drawn; the slowest ranks
constexpr double kWidth = 960;     // of the charts' plotting area, in SVG units
constexpr double kLeft = 70;       // room for the axis labels

std::string escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string string_of(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

double number_of(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : 0.0;
}

// Collects what the page needs from the merged timeline's events.
class Collector {
 public:
  explicit Collector(ReportData& data) : data_(data) {}

  void operator()(const json& event) {
    const int pid = event.value("pid", -1);
    const std::string ph = string_of(event, "ph");
    const double at = number_of(event, "ts") / 1e6;
    if (pid == 0) {
      launcher_event(event, ph, at);
    } else if (pid > 0 && ph == "M" && string_of(event, "name") == "process_name") {
      data_.rank_names[pid - 1] = string_of(event.value("args", json::object()), "name");
    } else if (pid > 0 && ph == "X" && string_of(event, "cat") == "step") {
      // An attempt's first step also holds its start-up (MPI, the
      // restore): it is not a step time.
      const std::int64_t track = event.value("tid", std::int64_t{0}) / kTraceThreadsPerAttempt;
      if (!first_step_seen_.insert({pid, track}).second) {
        auto& steps = data_.steps[pid - 1];
        const double seconds = number_of(event, "dur") / 1e6;
        if (steps.size() < kMaxStepsPerRank) steps.emplace_back(at + seconds, seconds);
      }
    }
  }

  // Names attempts after their start of `lockstep run` when there were several.
  void finish() {
    if (session_ <= 1) return;
    for (std::size_t i = 0; i < data_.attempts.size(); ++i) {
      data_.attempts[i].name = fmt::format("start {}, {}", sessions_[i], data_.attempts[i].name);
    }
  }

 private:
  void launcher_event(const json& event, const std::string& ph, double at) {
    const std::string category = string_of(event, "cat");
    const std::string name = string_of(event, "name");
    if (ph == "X" && category == "attempt") {
      const json args = event.value("args", json::object());
      ReportData::Attempt attempt;
      attempt.name = name.substr(0, name.find(':'));
      attempt.start = at;
      attempt.end = at + number_of(event, "dur") / 1e6;
      attempt.outcome = string_of(args, "outcome");
      if (const std::string failure = string_of(args, "failure"); !failure.empty()) {
        const auto rank = args.find("failed_rank");
        const std::string host = string_of(args, "failed_host");
        attempt.cause = rank != args.end() && rank->is_number_integer()
                            ? fmt::format("rank {}{}: {}", rank->get<int>(),
                                          host.empty() ? "" : " on " + host, failure)
                            : failure;
      }
      attempt.flight = string_of(args, "flight_recorder");
      if (data_.attempts.size() >= kMaxAttempts) return;
      data_.attempts.push_back(std::move(attempt));
      sessions_.push_back(session_);
    } else if (ph == "i") {
      std::string kind = category;
      if (category == "launcher") {
        kind = name.starts_with("restarting")     ? "restart"
               : name.starts_with("requeued")     ? "requeue"
               : name.starts_with("lockstep run") ? "start"
                                                  : "note";
        if (kind == "start") ++session_;
      }
      if (data_.marks.size() < kMaxMarks)
        data_.marks.push_back({.at = at, .kind = kind, .text = name});
    }
  }

  ReportData& data_;
  std::set<std::pair<int, std::int64_t>> first_step_seen_;  // (pid, attempt track)
  int session_ = 0;
  std::vector<int> sessions_;  // per attempt
};

std::optional<json> read_summary(const fs::path& path) {
  const std::optional<std::string> text = files::read_regular(path, kMaxSummary);
  if (!text) return std::nullopt;
  json summary = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!summary.is_object()) return std::nullopt;
  return summary;
}

std::string duration(double seconds) {
  if (seconds >= 3600) return fmt::format("{:.1f} h", seconds / 3600);
  if (seconds >= 60) return fmt::format("{:.1f} min", seconds / 60);
  return fmt::format("{:.1f} s", seconds);
}

const char* outcome_color(const std::string& outcome) {
  if (outcome == "success") return "#3a9d5d";
  if (outcome == "hang") return "#e08a1e";
  if (outcome == "stopped") return "#8a8f98";
  return "#d04a3a";
}

// The x axis of the time charts: seconds over [0, span].
struct TimeAxis {
  double span = 1;
  double x(double seconds) const { return kLeft + kWidth * std::clamp(seconds / span, 0.0, 1.0); }
  std::string ticks(double top, double bottom) const {
    std::string svg;
    const double raw = span / 8;
    const double magnitude = std::pow(10, std::floor(std::log10(raw)));
    const double step = raw / magnitude < 2   ? 2 * magnitude
                        : raw / magnitude < 5 ? 5 * magnitude
                                              : 10 * magnitude;
    for (double t = 0; t <= span + 1e-9; t += step) {
      svg += fmt::format(R"(<line x1="{0:.1f}" y1="{1}" x2="{0:.1f}" y2="{2}" class="grid"/>)"
                         R"(<text x="{0:.1f}" y="{3}" class="tick">{4:g} s</text>)",
                         x(t), top, bottom, bottom + 14, t);
    }
    return svg;
  }
};

TimeAxis axis_of(const ReportData& data) {
  TimeAxis axis;
  for (const auto& attempt : data.attempts) axis.span = std::max(axis.span, attempt.end);
  for (const auto& mark : data.marks) axis.span = std::max(axis.span, mark.at);
  return axis;
}

std::string timeline_svg(const ReportData& data, const TimeAxis& axis) {
  std::string svg =
      fmt::format(R"(<svg viewBox="0 0 {} 130" role="img" aria-label="attempts on a time axis">)",
                  kLeft + kWidth + 20);
  svg += axis.ticks(20, 100);
  for (const auto& attempt : data.attempts) {
    const double x0 = axis.x(attempt.start);
    const double width = std::max(2.0, axis.x(attempt.end) - x0);
    svg += fmt::format(
        R"(<rect x="{:.1f}" y="40" width="{:.1f}" height="34" rx="3" fill="{}"><title>{}: {}, )"
        R"({}{}</title></rect>)",
        x0, width, outcome_color(attempt.outcome), escape(attempt.name), escape(attempt.outcome),
        duration(attempt.end - attempt.start),
        attempt.cause.empty() ? "" : "; " + escape(attempt.cause));
    if (width > 70) {
      svg += fmt::format(R"(<text x="{:.1f}" y="62" class="bar">{}</text>)", x0 + 6,
                         escape(attempt.name));
    }
  }
  for (const auto& mark : data.marks) {
    const double x = axis.x(mark.at);
    if (mark.kind == "checkpoint") {
      svg +=
          fmt::format(R"(<line x1="{0:.1f}" y1="78" x2="{0:.1f}" y2="90" class="ckpt"><title>{1})"
                      R"(</title></line>)",
                      x, escape(mark.text));
    } else if (mark.kind == "failure") {
      svg += fmt::format(
          R"(<path d="M{0:.1f} 36 l-6 -12 h12 z" class="failure"><title>{1}</title></path>)", x,
          escape(mark.text));
    } else if (mark.kind == "restart" || mark.kind == "requeue" || mark.kind == "start") {
      svg += fmt::format(
          R"(<line x1="{0:.1f}" y1="18" x2="{0:.1f}" y2="96" class="{1}"><title>{2}</title></line>)",
          x, mark.kind, escape(mark.text));
    }
  }
  svg += R"(<text x="4" y="62" class="label">attempts</text><text x="4" y="88" class="label">)"
         R"(checkpoints</text></svg>)";
  return svg;
}

std::string goodput_section(const std::optional<json>& summary, bool several_starts) {
  if (!summary) return "<p>No summary.json: the run has not ended, or it ended abnormally.</p>";
  struct Part {
    const char* key;
    const char* label;
    const char* color;
  };
  static constexpr Part kParts[] = {{"productive_seconds", "productive training", "#3a9d5d"},
                                    {"lost_recompute_seconds", "lost (recomputed)", "#d04a3a"},
                                    {"restart_seconds", "restarts", "#e08a1e"},
                                    {"checkpoint_stall_seconds", "checkpoint stall", "#4a78c8"},
                                    {"other_seconds", "start-up, shut-down", "#8a8f98"}};
  const double wall = std::max(1e-9, number_of(*summary, "wall_seconds"));
  std::string svg =
      fmt::format(R"(<svg viewBox="0 0 {} 40" role="img" aria-label="goodput breakdown">)",
                  kLeft + kWidth + 20);
  std::string legend = "<table class=\"legend\">";
  double x = kLeft;
  for (const Part& part : kParts) {
    const double seconds = number_of(*summary, part.key);
    const double width = kWidth * std::clamp(seconds / wall, 0.0, 1.0);
    svg += fmt::format(R"(<rect x="{:.1f}" y="6" width="{:.1f}" height="28" fill="{}"><title>{}: )"
                       R"({}</title></rect>)",
                       x, width, part.color, part.label, duration(seconds));
    x += width;
    legend += fmt::format(
        R"(<tr><td><span class="swatch" style="background:{}"></span>{}</td><td>{}</td>)"
        R"(<td>{:.1f}%</td></tr>)",
        part.color, part.label, duration(seconds), 100 * seconds / wall);
  }
  svg += "</svg>";
  return fmt::format(
      "<p>Goodput <b>{:.1f}%</b> of {} wall time{}; {} restart(s), mean time to recovery {}.</p>"
      "{}{}</table>",
      100 * number_of(*summary, "productive_seconds") / wall, duration(wall),
      several_starts ? " (the latest start of lockstep run)" : "",
      static_cast<long long>(std::clamp(number_of(*summary, "restarts"), 0.0, 1e9)),
      duration(number_of(*summary, "mean_time_to_recovery_seconds")), svg, legend);
}

// The ranks to draw: all, or the slowest kMaxRankLines by mean step time.
std::vector<int> ranks_to_draw(const ReportData& data) {
  std::vector<std::pair<double, int>> means;
  for (const auto& [rank, steps] : data.steps) {
    double total = 0;
    for (const auto& step : steps) total += step.second;
    means.emplace_back(steps.empty() ? 0 : total / static_cast<double>(steps.size()), rank);
  }
  std::sort(means.rbegin(), means.rend());
  if (means.size() > kMaxRankLines) means.resize(kMaxRankLines);
  std::vector<int> ranks;
  for (const auto& entry : means) ranks.push_back(entry.second);
  std::sort(ranks.begin(), ranks.end());
  return ranks;
}

std::string step_time_section(const ReportData& data, const TimeAxis& axis) {
  if (data.steps.empty()) {
    return "<p>No step times: the ranks recorded no timeline (LOCKSTEP_TRACE=off, or a program "
           "without the lockstep runtime).</p>";
  }
  const std::vector<int> ranks = ranks_to_draw(data);
  // Bins along the time axis: the mean step time of each rank in each bin.
  constexpr int kBins = 240;
  std::map<int, std::vector<std::pair<double, int>>> bins;
  std::vector<double> means;
  double top = 0;
  for (const int rank : ranks) {
    auto& mine = bins[rank];
    mine.assign(kBins, {0.0, 0});
    for (const auto& [at, seconds] : data.steps.at(rank)) {
      // Clamped as a double: a time from a damaged file may be anything.
      const int bin = static_cast<int>(std::clamp(at / axis.span * kBins, 0.0, kBins - 1.0));
      mine[static_cast<std::size_t>(bin)].first += seconds;
      mine[static_cast<std::size_t>(bin)].second += 1;
    }
    for (const auto& [sum, count] : mine) {
      if (count > 0) means.push_back(sum / count);
    }
  }
  // The scale follows the bulk of the steps, not one slow outlier (which is
  // drawn at the top edge).
  if (!means.empty()) {
    std::sort(means.begin(), means.end());
    top = means[std::min(means.size() - 1, means.size() * 95 / 100)] * 1.3;
  }
  top = std::max(top, 1e-6);
  constexpr double kHeight = 220;
  std::string svg =
      fmt::format(R"(<svg viewBox="0 0 {} {}" role="img" aria-label="step time per rank">)",
                  kLeft + kWidth + 20, kHeight + 40);
  svg += axis.ticks(10, kHeight + 10);
  for (int i = 0; i <= 4; ++i) {
    const double y = 10 + kHeight * (1 - i / 4.0);
    const double ms = top * 250 * i;
    svg += fmt::format(R"(<text x="4" y="{:.1f}" class="tick">{} ms</text>)", y + 4,
                       ms >= 10 ? fmt::format("{:.0f}", ms) : fmt::format("{:.2g}", ms));
  }
  std::string legend;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const int rank = ranks[r];
    const std::string color =
        fmt::format("hsl({:.0f},65%,42%)", std::fmod(static_cast<double>(rank) * 137.508, 360.0));
    // A gap where the rank has no step in a bin (a restart).
    std::string path;
    bool drawing = false;
    const auto& mine = bins.at(rank);
    for (int bin = 0; bin < kBins; ++bin) {
      const auto [sum, count] = mine[static_cast<std::size_t>(bin)];
      if (count == 0) {
        drawing = false;
        continue;
      }
      const double x = axis.x((bin + 0.5) * axis.span / kBins);
      const double y = 10 + kHeight * (1 - std::min(1.0, (sum / count) / top));
      path += fmt::format("{}{:.1f} {:.1f} ", drawing ? "L" : "M", x, y);
      drawing = true;
    }
    const auto name = data.rank_names.find(rank);
    const std::string label =
        name != data.rank_names.end() ? name->second : fmt::format("rank {}", rank);
    svg += fmt::format(R"(<path d="{}" fill="none" stroke="{}" stroke-width="1.5"><title>{})"
                       R"(</title></path>)",
                       path, color, escape(label));
    legend += fmt::format(R"(<span class="key"><span class="swatch" style="background:{}"></span>)"
                          R"({}</span> )",
                          color, escape(label));
  }
  svg += "</svg>";
  const std::string note = data.steps.size() > ranks.size()
                               ? fmt::format("<p>The {} slowest of {} ranks by mean step time.</p>",
                                             ranks.size(), data.steps.size())
                               : "";
  return svg + "<p>" + legend + "</p>" + note;
}

std::string attempts_table(const ReportData& data) {
  std::string rows;
  for (const auto& attempt : data.attempts) {
    std::string cause = escape(attempt.cause.empty() ? "—" : attempt.cause);
    if (!attempt.flight.empty()) cause += "<br><i>flight recorder:</i> " + escape(attempt.flight);
    rows += fmt::format(R"(<tr><td>{}</td><td>{:.1f} s</td><td>{}</td><td><span class="outcome" )"
                        R"(style="background:{}">{}</span></td><td>{}</td></tr>)",
                        escape(attempt.name), attempt.start, duration(attempt.end - attempt.start),
                        outcome_color(attempt.outcome), escape(attempt.outcome), cause);
  }
  return "<table class=\"attempts\"><tr><th>attempt</th><th>started at</th><th>lasted</th>"
         "<th>outcome</th><th>root cause</th></tr>" +
         rows + "</table>";
}

constexpr const char* kStyle = R"(
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1080px; color: #1d2127; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.sub { color: #5b6270; margin-top: 0; }
svg { width: 100%; height: auto; background: #fafbfc; border: 1px solid #e3e6ea; }
.grid { stroke: #e3e6ea; } .tick, .label { font-size: 11px; fill: #5b6270; }
.bar { font-size: 12px; fill: #fff; font-weight: 600; }
.ckpt { stroke: #4a78c8; stroke-width: 2; } .failure { fill: #d04a3a; }
.restart { stroke: #e08a1e; stroke-dasharray: 4 3; stroke-width: 1.5; }
.requeue { stroke: #8a4ad0; stroke-width: 2; } .start { stroke: #1d2127; stroke-width: 1; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; text-align: left; vertical-align: top; }
.attempts tr:nth-child(even) { background: #f3f5f7; } .attempts td:nth-child(-n+4) { white-space: nowrap; } .attempts th { border-bottom: 1px solid #ccd; }
.outcome { color: #fff; border-radius: 3px; padding: 1px 6px; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 5px; border-radius: 2px; }
.key { margin-right: 12px; white-space: nowrap; }
)";

}  // namespace

ReportData read_report_data(const fs::path& run_dir) {
  ReportData data;
  data.run_dir = fs::absolute(run_dir).string();
  Collector collector(data);
  const MergeReport merged =
      visit_trace(run_dir, [&collector](const json& event) { collector(event); });
  collector.finish();
  data.skipped_lines = merged.skipped_lines;
  data.summary = read_summary(run_dir / "summary.json");
  return data;
}

std::string report_html(const ReportData& data) {
  const TimeAxis axis = axis_of(data);
  const bool several_starts =
      std::count_if(data.marks.begin(), data.marks.end(),
                    [](const ReportData::Mark& mark) { return mark.kind == "start"; }) > 1;
  std::string outcome =
      data.attempts.empty() ? "no attempt recorded" : data.attempts.back().outcome;
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  html += "<title>lockstep run report: " + escape(data.run_dir) + "</title>";
  html += std::string("<style>") + kStyle + "</style></head><body>";
  html += "<h1>lockstep run report</h1>";
  html +=
      fmt::format("<p class=\"sub\">{} · {} attempt(s) · last outcome: {} · {} of wall time</p>",
                  escape(data.run_dir), data.attempts.size(), escape(outcome), duration(axis.span));
  html += "<h2>Attempts</h2>" + timeline_svg(data, axis);
  html +=
      "<p class=\"sub\">Bars: attempts (green success, red failed, orange hang, grey "
      "stopped). Red triangles: failures. Blue ticks: checkpoints. Dashed lines: restarts; "
      "purple: requeues; black: starts of lockstep run. Hover for details.</p>";
  html += attempts_table(data);
  html += "<h2>Where the time went</h2>" + goodput_section(data.summary, several_starts);
  html += "<h2>Step time per rank</h2>" + step_time_section(data, axis);
  if (data.skipped_lines > 0) {
    html += fmt::format("<p class=\"sub\">{} damaged timeline line(s) were skipped.</p>",
                        data.skipped_lines);
  }
  html += "</body></html>\n";
  return html;
}

}  // namespace lockstep::launcher
