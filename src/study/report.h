// The study report: one self-contained HTML page (inline SVG charts and CSS, no scripts, no
// network) built from the records of `lowbit sweep`. The small plotting and statistics helpers
// are public so tests can check their output.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::study {

std::string html_escape(std::string_view text);
// Rounded tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, at most
// max_ticks of them (at least 2 values; lo == hi is widened).
std::vector<double> nice_ticks(double lo, double hi, int max_ticks);
// Tick label: no trailing zeros ("0.1", "50", "1.5e+06" for large values).
std::string tick_label(double v);
// Three significant digits, never in exponent form: 3.846 -> "3.85", 38.46 -> "38.5", 8873 -> "8870".
std::string significant3(double v);
// Bytes in words: "587 kB", "524 MB", "13.5 GB" (decimal units, three significant digits).
std::string bytes_label(double bytes);

// A mean with its 95% confidence interval (Student's t over the n values, as independent
// samples); lo == hi == mean when n < 2.
struct MeanInterval {
  double mean = 0, lo = 0, hi = 0;
  size_t n = 0;
};
MeanInterval mean_ci95(const std::vector<double>& values);
// The two-sided 95% quantile of Student's t with `df` degrees of freedom (12.706 for 1, 1.960 as
// df grows), from a table with interpolation in 1/df.
double t_quantile_975(size_t df);

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;     // (x, y), any order; sorted by x when drawn
  std::vector<std::pair<double, double>> intervals;  // empty, or (lo, hi) per point: a whisker
};
struct ChartSpec {
  std::string title, x_label, y_label;
  bool categorical_x = false;  // x values evenly spaced in sorted order (top-k 1, 10, 50)
  int width = 560, height = 330;
};
// One line (with point markers and interval whiskers) per series, axes with ticks and grid, a
// legend on the right.
std::string line_chart_svg(const ChartSpec& spec, const std::vector<Series>& series);

struct Bar {
  std::string label, color;
  double value = 0;
  std::string value_text;  // printed above the bar
  double lo = 0, hi = 0;   // a whisker when hi > lo
};
std::string bar_chart_svg(const ChartSpec& spec, const std::vector<Bar>& bars);

// The runs of several files merged for a report: each record's greedy "stands_for" list expanded
// into one run per grid point (field "_computed" true on the first only, so speed and memory
// count each computation once), its source kept in "_source" ("file:line").
struct ReportInput {
  std::vector<nlohmann::json> runs;
  std::vector<std::string> files;
  std::vector<std::string> warnings;  // e.g. a torn last line dropped
};
// Reads and checks the runs files: a file that is not a sweep's (e.g. `lowbit batch` output), a
// grid point present twice (overlapping files), and one prompt id standing for two prompts of
// the same model are InputErrors naming file and line. A torn last line is dropped with a warning.
ReportInput read_report_runs(const std::vector<std::string>& files);

// The full page for runs as read_report_runs gives them. Several models are shown one after
// another, each with its own tables and charts (never averaged together).
std::string render_report(const ReportInput& input);

}  // namespace lowbit::study
