// The study report: one self-contained HTML page (inline SVG charts and CSS, no scripts, no
// network) built from the records of `lowbit sweep`. The small plotting helpers are public so
// tests can check their output.
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

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;  // (x, y), any order; sorted by x when drawn
};
struct ChartSpec {
  std::string title, x_label, y_label;
  bool categorical_x = false;  // x values evenly spaced in sorted order (top-k 1, 10, 50)
  int width = 560, height = 330;
};
// One line (with point markers) per series, axes with ticks and grid, a legend on the right.
std::string line_chart_svg(const ChartSpec& spec, const std::vector<Series>& series);

struct Bar {
  std::string label, color;
  double value = 0;
  std::string value_text;  // printed above the bar
};
std::string bar_chart_svg(const ChartSpec& spec, const std::vector<Bar>& bars);

// The full page. `source` names the runs file in the heading.
std::string render_report(const std::vector<nlohmann::json>& runs, const std::string& source);

}  // namespace lowbit::study
