#include "study/report.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

namespace lowbit::study {

namespace {

using nlohmann::json;

// bf16 (the reference) is black; the others get distinct colour-blind-safe hues (Okabe-Ito).
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
                                    "#999999"};

struct Plot {
  double left, top, width, height;  // plot area inside the svg, pixels
  double x0, x1, y0, y1;            // data range mapped onto it
  double px(double x) const { return left + (x1 == x0 ? 0.5 : (x - x0) / (x1 - x0)) * width; }
  double py(double y) const { return top + height - (y1 == y0 ? 0.5 : (y - y0) / (y1 - y0)) * height; }
};

std::string svg_open(const ChartSpec& spec) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n"
      "<text x=\"{2}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{3}</text>\n",
      spec.width, spec.height, spec.width / 2, html_escape(spec.title));
}

// Y axis with grid lines and labels, the x axis line, and both axis titles.
std::string axes(const Plot& p, const ChartSpec& spec, const std::vector<double>& y_ticks) {
  std::string s;
  for (double t : y_ticks) {
    double y = p.py(t);
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", p.left, y,
                     p.left + p.width, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", p.left - 6, y + 4,
                     tick_label(t));
  }
  s += fmt::format("<path d=\"M{:.1f},{:.1f} V{:.1f} H{:.1f}\" fill=\"none\" stroke=\"#333333\"/>\n", p.left, p.top,
                   p.top + p.height, p.left + p.width);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", p.left + p.width / 2,
                   spec.height - 8, html_escape(spec.x_label));
  s += fmt::format("<text transform=\"translate(14,{:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   p.top + p.height / 2, html_escape(spec.y_label));
  return s;
}

double mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? NAN : sum / double(v.size());
}

std::optional<double> number(const json& r, const char* key) {
  auto it = r.find(key);
  if (it == r.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::string text_of(const json& r, const char* key) {
  auto it = r.find(key);
  if (it == r.end()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string format_number(std::optional<double> v, int digits) {
  if (!v || !std::isfinite(*v)) return "&ndash;";
  return fmt::format("{:.{}f}", *v, digits);
}

// The formats in the order the sweep ran them (bf16 first), each with its colour.
struct FormatInfo {
  std::vector<std::string> names;
  std::map<std::string, std::string> color;
};

FormatInfo formats_of(const std::vector<json>& runs) {
  FormatInfo f;
  size_t next = 0;
  for (const json& r : runs) {
    std::string q = text_of(r, "quant");
    if (f.color.count(q)) continue;
    f.names.push_back(q);
    f.color[q] = q == "bf16" ? "#000000" : kPalette[next++ % std::size(kPalette)];
  }
  return f;
}

// Mean of `metric` per format per value of `axis`, over every run that has both.
std::vector<Series> series_by(const std::vector<json>& runs, const FormatInfo& f, const char* axis,
                              const char* metric) {
  std::vector<Series> out;
  for (const std::string& q : f.names) {
    std::map<double, std::vector<double>> by_x;
    for (const json& r : runs) {
      if (text_of(r, "quant") != q) continue;
      auto x = number(r, axis);
      auto y = number(r, metric);
      if (x && y && std::isfinite(*y)) by_x[*x].push_back(*y);
    }
    Series s{q, f.color.at(q), {}};
    for (const auto& [x, ys] : by_x) s.points.emplace_back(x, mean(ys));
    if (!s.points.empty()) out.push_back(std::move(s));
  }
  return out;
}

std::set<double> axis_values(const std::vector<json>& runs, const char* axis) {
  std::set<double> v;
  for (const json& r : runs)
    if (auto x = number(r, axis)) v.insert(*x);
  return v;
}

std::vector<Bar> bars_by(const std::vector<json>& runs, const FormatInfo& f, const char* metric, double scale,
                         int digits) {
  std::vector<Bar> out;
  for (const std::string& q : f.names) {
    std::vector<double> values;
    for (const json& r : runs)
      if (text_of(r, "quant") == q)
        if (auto v = number(r, metric)) values.push_back(*v * scale);
    if (values.empty()) continue;
    double m = mean(values);
    out.push_back({q, f.color.at(q), m, fmt::format("{:.{}f}", m, digits)});
  }
  return out;
}

std::string figure(const std::string& svg, const std::string& caption) {
  return "<figure>" + svg + "<figcaption>" + caption + "</figcaption></figure>\n";
}

std::string summary_table(const std::vector<json>& runs, const FormatInfo& f) {
  std::string s =
      "<table class=\"summary\"><tr><th>format</th><th>runs</th><th>weights (MB)</th><th>decode tokens/s</th>"
      "<th>greedy token agreement</th><th>greedy first divergence</th><th>ROUGE-L F1 (sampled)</th>"
      "<th>bf16 mean log-prob</th><th>distinct-2</th></tr>\n";
  for (const std::string& q : f.names) {
    std::vector<double> weights, speed, agree, diverge, rouge, logprob, distinct2;
    size_t n = 0;
    for (const json& r : runs) {
      if (text_of(r, "quant") != q) continue;
      ++n;
      auto push = [&](std::vector<double>& v, const char* key) {
        if (auto x = number(r, key)) v.push_back(*x);
      };
      push(weights, "weight_bytes");
      push(speed, "decode_tokens_per_s");
      push(logprob, "ref_mean_logprob");
      push(distinct2, "distinct_2");
      if (number(r, "temperature").value_or(1) == 0) {
        push(agree, "token_agreement");
        push(diverge, "first_divergence");
      } else {
        push(rouge, "rouge_l_f1");
      }
    }
    auto m = [](const std::vector<double>& v) -> std::optional<double> {
      if (v.empty()) return std::nullopt;
      return mean(v);
    };
    s += fmt::format(
        "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        f.color.at(q), html_escape(q), n, format_number(weights.empty() ? std::nullopt : std::optional<double>(mean(weights) / 1e6), 3),
        format_number(m(speed), 0), format_number(m(agree), 3), format_number(m(diverge), 1),
        format_number(m(rouge), 3), format_number(m(logprob), 3), format_number(m(distinct2), 3));
  }
  return s + "</table>\n";
}

std::string runs_table(const std::vector<json>& runs) {
  std::string s =
      "<table class=\"runs\"><tr><th>format</th><th>prompt</th><th>T</th><th>top-k</th><th>top-p</th><th>max new</th>"
      "<th>seed</th><th>agree</th><th>ROUGE-L</th><th>log-prob</th><th>tok/s</th><th>text</th></tr>\n";
  for (const json& r : runs) {
    s += fmt::format(
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>\n",
        html_escape(text_of(r, "quant")), r.value("implicit_reference", false) ? " (ref)" : "",
        html_escape(text_of(r, "prompt_id")), tick_label(number(r, "temperature").value_or(NAN)),
        text_of(r, "top_k"), tick_label(number(r, "top_p").value_or(NAN)), text_of(r, "max_new_tokens"),
        text_of(r, "seed"), format_number(number(r, "token_agreement"), 3), format_number(number(r, "rouge_l_f1"), 3),
        format_number(number(r, "ref_mean_logprob"), 3), format_number(number(r, "decode_tokens_per_s"), 0),
        html_escape(text_of(r, "text")));
  }
  return s + "</table>\n";
}

// One sentence ranking the formats by their mean ROUGE-L against bf16 over all runs, so the
// answer is readable before the charts.
std::string headline(const std::vector<json>& runs, const FormatInfo& f) {
  std::vector<std::pair<double, std::string>> ranked;
  for (const std::string& q : f.names) {
    if (q == "bf16") continue;
    std::vector<double> v;
    for (const json& r : runs)
      if (text_of(r, "quant") == q)
        if (auto x = number(r, "rouge_l_f1")) v.push_back(*x);
    if (!v.empty()) ranked.emplace_back(mean(v), q);
  }
  if (ranked.empty()) return "";
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  std::string list;
  for (const auto& [score, q] : ranked)
    list += fmt::format("{}<b>{}</b> {:.2f}", list.empty() ? "" : ", ", html_escape(q), score);
  return "<p class=\"headline\">Closest to bf16 first (mean ROUGE-L F1 of the text against bf16's, over every "
         "temperature and setting): " + list + ".</p>\n";
}

std::string prompts_table(const std::vector<json>& runs) {
  std::map<std::string, std::string> prompts;  // id (as text) -> prompt
  for (const json& r : runs) prompts.emplace(text_of(r, "prompt_id"), text_of(r, "prompt"));
  std::string s = "<table class=\"prompts\"><tr><th>prompt id</th><th>prompt</th></tr>\n";
  for (const auto& [id, text] : prompts)
    s += fmt::format("<tr><td>{}</td><td class=\"text\">{}</td></tr>\n", html_escape(id), html_escape(text));
  return s + "</table>\n";
}

// A line chart of `metric` against `axis`, or a note when the sweep held the axis fixed.
std::string axis_figure(const std::vector<json>& runs, const FormatInfo& f, const char* axis, const char* metric,
                        const ChartSpec& spec, const std::string& caption) {
  std::set<double> xs = axis_values(runs, axis);
  if (xs.size() < 2)
    return fmt::format("<p class=\"note\">{}: the sweep used one value ({}), so there is no curve to draw.</p>\n",
                       html_escape(spec.x_label), xs.empty() ? std::string("none") : tick_label(*xs.begin()));
  return figure(line_chart_svg(spec, series_by(runs, f, axis, metric)), caption);
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (hi - lo < 1e-12) {
    double pad = std::max(std::fabs(lo) * 0.1, 0.5);
    lo -= pad;
    hi += pad;
  }
  max_ticks = std::max(max_ticks, 2);
  const double raw = (hi - lo) / double(max_ticks - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude * 10;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (double t = first; t <= hi + step * (1 - 1e-9); t += step) {
    // k * step carries binary noise (3 * 0.2 = 0.6000000000000001): keep 12 significant digits.
    double v = std::fabs(t) < step * 1e-9 ? 0.0 : std::round(t / step) * step;
    ticks.push_back(std::stod(fmt::format("{:.12g}", v)));
    if (ticks.back() >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string tick_label(double v) {
  if (!std::isfinite(v)) return "&ndash;";
  if (std::fabs(v) >= 1e6) return fmt::format("{:.2g}", v);
  std::string s = fmt::format("{:.6f}", v);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

std::string line_chart_svg(const ChartSpec& spec, const std::vector<Series>& series) {
  std::set<double> xs;
  double y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : series)
    for (auto [x, y] : s.points) {
      xs.insert(x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  std::vector<double> x_values(xs.begin(), xs.end());
  if (x_values.empty()) x_values = {0, 1};
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  std::vector<double> y_ticks = nice_ticks(y_lo, y_hi, 6);
  Plot p{62, 32, double(spec.width) - 62 - 110, double(spec.height) - 32 - 48, 0, 1, y_ticks.front(), y_ticks.back()};
  std::vector<double> x_ticks;
  auto x_pos = [&](double x) {
    if (!spec.categorical_x) return p.px(x);
    size_t i = size_t(std::lower_bound(x_values.begin(), x_values.end(), x) - x_values.begin());
    return p.px(double(i));
  };
  if (spec.categorical_x) {
    // Half a category of padding on each side, so end points are not on the axis.
    p.x0 = -0.5;
    p.x1 = double(x_values.size()) - 0.5;
    x_ticks = x_values;
  } else {
    x_ticks = nice_ticks(x_values.front(), x_values.back(), 8);
    p.x0 = x_ticks.front();
    p.x1 = x_ticks.back();
  }
  std::string s = svg_open(spec) + axes(p, spec, y_ticks);
  for (double t : x_ticks) {
    double x = x_pos(t);
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#333333\"/>\n", x,
                     p.top + p.height, p.top + p.height + 5);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x, p.top + p.height + 18,
                     tick_label(t));
  }
  double legend_y = p.top + 6;
  for (const Series& ser : series) {
    std::vector<std::pair<double, double>> pts = ser.points;
    std::sort(pts.begin(), pts.end());
    std::string d;
    for (auto [x, y] : pts) d += fmt::format("{}{:.1f},{:.1f} ", d.empty() ? "M" : "L", x_pos(x), p.py(y));
    if (pts.size() > 1)
      s += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-opacity=\"0.85\"/>\n", d,
                       ser.color);
    for (auto [x, y] : pts)
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{}: {} = {}</title></circle>\n",
                       x_pos(x), p.py(y), ser.color, html_escape(ser.name), tick_label(x), fmt::format("{:.4f}", y));
    double lx = p.left + p.width + 14;
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"18\" height=\"4\" fill=\"{}\"/>\n", lx, legend_y - 4,
                     ser.color);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n", lx + 24, legend_y, html_escape(ser.name));
    legend_y += 18;
  }
  return s + "</svg>\n";
}

std::string bar_chart_svg(const ChartSpec& spec, const std::vector<Bar>& bars) {
  double hi = 0;
  for (const Bar& b : bars) hi = std::max(hi, b.value);
  std::vector<double> y_ticks = nice_ticks(0, hi > 0 ? hi * 1.08 : 1, 6);
  Plot p{70, 32, double(spec.width) - 70 - 16, double(spec.height) - 32 - 48, 0, 1, 0, y_ticks.back()};
  std::string s = svg_open(spec) + axes(p, spec, y_ticks);
  const double slot = p.width / double(std::max<size_t>(bars.size(), 1));
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    double x = p.left + slot * double(i) + slot * 0.15, w = slot * 0.7;
    double y = p.py(b.value), h = std::max(p.top + p.height - y, 1.0);
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n", x,
                     p.top + p.height - h, w, h, b.color);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n", x + w / 2,
                     p.top + p.height - h - 4, html_escape(b.value_text));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x + w / 2,
                     p.top + p.height + 16, html_escape(b.label));
  }
  return s + "</svg>\n";
}

std::string render_report(const std::vector<json>& runs, const std::string& source) {
  FormatInfo f = formats_of(runs);
  std::set<std::string> prompts, devices, models;
  for (const json& r : runs) {
    prompts.insert(text_of(r, "prompt_id"));
    devices.insert(text_of(r, "device"));
    models.insert(text_of(r, "model"));
  }
  auto joined = [](const std::set<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>lowbit study: " +
      html_escape(source) +
      "</title>\n<style>\n"
      "body{font-family:sans-serif;margin:20px;max-width:1160px;color:#222}\n"
      "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ccc}\n"
      ".row{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555;"
      "max-width:560px}\n"
      "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;"
      "vertical-align:top}\n"
      "td.text{text-align:left;max-width:520px;font-family:monospace;font-size:11px;white-space:pre-wrap}\n"
      ".headline{font-size:15px;background:#f4f4f4;padding:6px 10px}\n"
      ".swatch{display:inline-block;width:10px;height:10px;margin-right:5px}.note{color:#777;font-size:13px}\n"
      "</style></head><body>\n";
  h += "<h1>How do the weight formats respond to sampling, compared with bf16?</h1>\n";
  h += fmt::format(
      "<p>{} runs from <code>{}</code>: model {}, {} prompt(s), device {}. Quality is measured against the bf16 run "
      "with the same prompt, settings and seed (README &ldquo;Study metrics&rdquo;); each point is a mean over "
      "prompts, seeds, repeats and the axes not shown.</p>\n",
      runs.size(), html_escape(source), html_escape(joined(models)), prompts.size(), html_escape(joined(devices)));
  h += headline(runs, f);
  h += summary_table(runs, f);
  h += prompts_table(runs);

  h += "<h2>Quality vs temperature</h2>\n<div class=\"row\">\n";
  h += axis_figure(runs, f, "temperature", "rouge_l_f1",
                   {"ROUGE-L F1 vs the bf16 text", "temperature", "ROUGE-L F1 (1 = same words)", false},
                   "Word-level overlap with bf16's text for the same seed. Falling faster with temperature "
                   "means the format's small logit errors flip more sampled tokens.");
  h += axis_figure(runs, f, "temperature", "ref_mean_logprob",
                   {"bf16 log-prob of the generated tokens", "temperature", "mean log-prob per token (nats)", false},
                   "How likely bf16 finds each format's output (teacher-forced). Close to the bf16 line = "
                   "the format's text is as plausible to bf16 as bf16's own.");
  h += axis_figure(runs, f, "temperature", "token_agreement",
                   {"Token agreement with bf16", "temperature", "fraction of positions equal", false},
                   "Same-position token ids equal to bf16's (up to the shorter run); at temperature 0 this is "
                   "the greedy agreement.");
  h += axis_figure(runs, f, "temperature", "distinct_2",
                   {"Diversity (distinct-2)", "temperature", "unique bigrams / bigrams", false},
                   "Repetitiveness of each format's own output; bf16's line is the baseline.");
  h += "</div>\n<h2>Speed and memory</h2>\n<div class=\"row\">\n";
  h += figure(bar_chart_svg({"Decode speed", "format", "tokens/s (mean over runs)"},
                            bars_by(runs, f, "decode_tokens_per_s", 1, 0)),
              "Decode tokens per second after the first token, averaged over the runs.");
  h += figure(bar_chart_svg({"Weight memory", "format", "MB of weights"}, bars_by(runs, f, "weight_bytes", 1e-6, 3)),
              "Exact bytes of every weight on the device (codes, scales, zero points).");
  h += figure(bar_chart_svg({"Peak backend memory", "format", "MB (weights + KV cache + activations)"},
                            bars_by(runs, f, "peak_memory_bytes", 1e-6, 2)),
              "The most memory the format's backend held at once (GPU memory on CUDA, the CPU backend's "
              "buffers on the CPU): what running the model in this format needs.");
  h += figure(bar_chart_svg({"Peak host RSS", "format", "MB (getrusage ru_maxrss)"},
                            bars_by(runs, f, "peak_host_rss_bytes", 1e-6, 1)),
              "Process peak resident memory at the end of each run. It never decreases within a sweep, so "
              "later formats include earlier peaks (and the resident bf16 reference model).");
  h += "</div>\n<h2>Quality vs top-k and vs max-new-tokens</h2>\n<div class=\"row\">\n";
  h += axis_figure(runs, f, "top_k", "rouge_l_f1",
                   {"ROUGE-L F1 vs top-k", "top-k (0 = off)", "ROUGE-L F1", true},
                   "Mean over temperatures; top-k 1 is greedy at every temperature.");
  h += axis_figure(runs, f, "max_new_tokens", "rouge_l_f1",
                   {"ROUGE-L F1 vs max-new-tokens", "max new tokens", "ROUGE-L F1", true},
                   "Longer runs have more chances to diverge from bf16.");
  h += "</div>\n<h2>Every run</h2>\n" + runs_table(runs);
  h += "</body></html>\n";
  return h;
}

}  // namespace lowbit::study
