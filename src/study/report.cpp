#include "study/report.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "core/version.h"
#include "study/jsonl.h"

namespace lowbit::study {

namespace {

using nlohmann::json;

// bf16 (the reference) is black; the others get distinct colour-blind-safe hues (Okabe-Ito).
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
                                    "#999999"};

// The fields that place a run on the grid (with its model, format and prompt id).
constexpr const char* kPointFields[] = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                        "max_new_tokens", "seed", "repeat"};

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

// A vertical whisker with caps from lo to hi at x (pixels).
std::string whisker(double x, double y_lo, double y_hi, const std::string& color) {
  return fmt::format(
      "<path d=\"M{0:.1f},{1:.1f} V{2:.1f} M{3:.1f},{1:.1f} H{4:.1f} M{3:.1f},{2:.1f} H{4:.1f}\" fill=\"none\" "
      "stroke=\"{5}\" stroke-width=\"1.2\" stroke-opacity=\"0.7\"/>\n",
      x, y_lo, y_hi, x - 3, x + 3, color);
}

std::optional<double> number(const json& r, const char* key) {
  auto it = r.find(key);
  if (it == r.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::string text_of(const json& r, const char* key) {
  auto it = r.find(key);
  if (it == r.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string provenance_field(const json& r, const char* key) {
  auto p = r.find("provenance");
  if (p == r.end() || !p->is_object()) return "";
  return text_of(*p, key);
}

bool computed(const json& r) { return r.value("_computed", true); }
bool greedy(const json& r) {
  if (auto g = r.find("greedy"); g != r.end() && g->is_boolean()) return g->get<bool>();
  return number(r, "temperature").value_or(1) == 0 || number(r, "top_k").value_or(0) == 1;
}

std::string shorten(const std::string& text, size_t n) {
  return text.size() <= n ? text : text.substr(0, n) + "...";
}

// "0.912 [0.881, 0.943]"; just the mean for one value; a dash for none.
std::string interval_cell(const std::vector<double>& v, const std::function<std::string(double)>& fmt_value) {
  if (v.empty()) return "&ndash;";
  const MeanInterval m = mean_ci95(v);
  if (m.n < 2) return fmt_value(m.mean);
  return fmt::format("{} <span class=\"ci\">[{}, {}]</span>", fmt_value(m.mean), fmt_value(m.lo), fmt_value(m.hi));
}
std::string fixed3(double v) { return std::isfinite(v) ? fmt::format("{:.3f}", v) : "&ndash;"; }

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

using RunFilter = std::function<bool(const json&)>;

// Mean and 95% interval of `metric` per format per value of `axis`, over the runs `keep` accepts.
std::vector<Series> series_by(const std::vector<json>& runs, const FormatInfo& f, const char* axis,
                              const char* metric, const RunFilter& keep) {
  std::vector<Series> out;
  for (const std::string& q : f.names) {
    std::map<double, std::vector<double>> by_x;
    for (const json& r : runs) {
      if (text_of(r, "quant") != q || !keep(r)) continue;
      auto x = number(r, axis);
      auto y = number(r, metric);
      if (x && y && std::isfinite(*y)) by_x[*x].push_back(*y);
    }
    Series s{q, f.color.at(q), {}, {}};
    for (const auto& [x, ys] : by_x) {
      const MeanInterval m = mean_ci95(ys);
      s.points.emplace_back(x, m.mean);
      s.intervals.emplace_back(m.lo, m.hi);
    }
    if (!s.points.empty()) out.push_back(std::move(s));
  }
  return out;
}

std::set<double> axis_values(const std::vector<json>& runs, const char* axis, const RunFilter& keep) {
  std::set<double> v;
  for (const json& r : runs)
    if (keep(r))
      if (auto x = number(r, axis)) v.insert(*x);
  return v;
}

// One bar per format: the mean of `metric` (times `scale`) over the runs `keep` accepts, with
// its interval.
std::vector<Bar> bars_by(const std::vector<json>& runs, const FormatInfo& f, const char* metric, double scale,
                         const std::function<std::string(double)>& label, const RunFilter& keep) {
  std::vector<Bar> out;
  for (const std::string& q : f.names) {
    std::vector<double> values;
    for (const json& r : runs)
      if (text_of(r, "quant") == q && keep(r))
        if (auto v = number(r, metric)) values.push_back(*v * scale);
    if (values.empty()) continue;
    const MeanInterval m = mean_ci95(values);
    out.push_back({q, f.color.at(q), m.mean, label(m.mean), m.lo, m.hi});
  }
  return out;
}

std::string figure(const std::string& svg, const std::string& caption) {
  return "<figure>" + svg + "<figcaption>" + caption + "</figcaption></figure>\n";
}

// Speed is compared over runs that sampled on the device when there are any: the host path
// (--logprobs, the greedy tie check) copies every step's logits off the device.
RunFilter speed_runs(const std::vector<json>& runs) {
  const bool any_device = std::any_of(runs.begin(), runs.end(), [](const json& r) {
    return computed(r) && !r.value("sampled_on_host", false);
  });
  return [any_device](const json& r) { return computed(r) && (!any_device || !r.value("sampled_on_host", false)); };
}

std::string summary_table(const std::vector<json>& runs, const FormatInfo& f) {
  std::string s =
      "<table class=\"summary\"><tr><th>format</th><th>grid points</th><th>computed runs</th><th>weights</th>"
      "<th>decode tokens/s</th><th>greedy token agreement</th><th>greedy first divergence</th>"
      "<th>ROUGE-L F1 (sampled)</th><th>bf16 mean log-prob</th><th>distinct-2</th></tr>\n";
  const RunFilter fast = speed_runs(runs);
  for (const std::string& q : f.names) {
    std::vector<double> weights, speed, agree, diverge, rouge, logprob, distinct2;
    size_t n = 0, n_computed = 0;
    for (const json& r : runs) {
      if (text_of(r, "quant") != q) continue;
      ++n;
      n_computed += computed(r);
      auto push = [&](std::vector<double>& v, const char* key) {
        if (auto x = number(r, key)) v.push_back(*x);
      };
      if (computed(r)) push(weights, "weight_bytes");
      if (fast(r)) push(speed, "decode_tokens_per_s");
      push(logprob, "ref_mean_logprob");
      push(distinct2, "distinct_2");
      if (greedy(r)) {
        push(agree, "token_agreement");
        push(diverge, "first_divergence");
      } else {
        push(rouge, "rouge_l_f1");
      }
    }
    const std::string weight_text = weights.empty() ? "&ndash;" : bytes_label(mean_ci95(weights).mean);
    s += fmt::format(
        "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        f.color.at(q), html_escape(q), n, n_computed, weight_text, interval_cell(speed, significant3),
        interval_cell(agree, fixed3), interval_cell(diverge, significant3), interval_cell(rouge, fixed3),
        interval_cell(logprob, fixed3), interval_cell(distinct2, fixed3));
  }
  return s + "</table>\n<p class=\"note\">Each cell: the mean over the format's grid points, then its 95% "
             "confidence interval in brackets (Student's t, the points taken as independent samples). Weights, "
             "speed and computed runs count each computed run once; a greedy run stands for every greedy grid "
             "point it answers for in the quality columns.</p>\n";
}

// "T 0, 0.5 x top-k 1, 50 x seed 0, 1" for the grid points a greedy record stands for.
std::string stands_for_text(const json& r) {
  auto it = r.find("stands_for");
  if (it == r.end() || !it->is_array() || it->size() < 2) return "";
  std::map<std::string, std::set<std::string>> values;
  for (const json& p : *it)
    for (const char* key : {"temperature", "top_k", "top_p", "min_p", "seed"})
      if (p.contains(key)) values[key].insert(tick_label(p[key].get<double>()));
  std::string out = fmt::format("{} grid points:", it->size());
  for (const char* key : {"temperature", "top_k", "top_p", "min_p", "seed"}) {
    const auto& v = values[key];
    if (v.size() < 2) continue;
    std::string list;
    for (const std::string& x : v) list += (list.empty() ? "" : ", ") + x;
    out += fmt::format(" {} {{{}}}", key, list);
  }
  return out;
}

std::string runs_table(const std::vector<json>& runs) {
  size_t n = 0;
  std::string rows;
  for (const json& r : runs) {
    if (!computed(r)) continue;
    ++n;
    rows += fmt::format(
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>\n",
        html_escape(text_of(r, "quant")), r.value("implicit_reference", false) ? " (ref)" : "",
        html_escape(text_of(r, "prompt_id")), tick_label(number(r, "temperature").value_or(NAN)),
        text_of(r, "top_k"), tick_label(number(r, "top_p").value_or(NAN)), text_of(r, "max_new_tokens"),
        text_of(r, "seed"), html_escape(stands_for_text(r)), fixed3(number(r, "token_agreement").value_or(NAN)),
        fixed3(number(r, "rouge_l_f1").value_or(NAN)), fixed3(number(r, "ref_mean_logprob").value_or(NAN)),
        number(r, "decode_tokens_per_s") ? significant3(*number(r, "decode_tokens_per_s")) : "&ndash;",
        html_escape(text_of(r, "text")));
  }
  return fmt::format(
      "<details><summary>Every computed run ({} runs; click to open)</summary>\n"
      "<table class=\"runs\"><tr><th>format</th><th>prompt</th><th>T</th><th>top-k</th><th>top-p</th><th>max new</th>"
      "<th>seed</th><th>greedy run stands for</th><th>agree</th><th>ROUGE-L</th><th>log-prob</th><th>tok/s</th>"
      "<th>text</th></tr>\n{}</table></details>\n",
      n, rows);
}

// One sentence ranking the formats by their mean ROUGE-L against bf16 over all grid points, so
// the answer is readable before the charts.
std::string headline(const std::vector<json>& runs, const FormatInfo& f) {
  std::vector<std::pair<MeanInterval, std::string>> ranked;
  for (const std::string& q : f.names) {
    if (q == "bf16") continue;
    std::vector<double> v;
    for (const json& r : runs)
      if (text_of(r, "quant") == q)
        if (auto x = number(r, "rouge_l_f1")) v.push_back(*x);
    if (!v.empty()) ranked.emplace_back(mean_ci95(v), q);
  }
  if (ranked.empty()) return "";
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first.mean > b.first.mean; });
  std::string list;
  for (const auto& [m, q] : ranked)
    list += fmt::format("{}<b>{}</b> {:.2f}{}", list.empty() ? "" : ", ", html_escape(q), m.mean,
                        m.n > 1 ? fmt::format(" [{:.2f}, {:.2f}]", m.lo, m.hi) : std::string());
  return "<p class=\"headline\">Closest to bf16 first (mean ROUGE-L F1 of the text against bf16's, over every "
         "grid point, 95% interval in brackets): " + list + ".</p>\n";
}

std::string prompts_table(const std::vector<json>& runs) {
  std::map<std::string, std::string> prompts;  // id (as text) -> prompt
  for (const json& r : runs) prompts.emplace(text_of(r, "prompt_id"), text_of(r, "prompt"));
  std::string s = "<table class=\"prompts\"><tr><th>prompt id</th><th>prompt</th></tr>\n";
  for (const auto& [id, text] : prompts)
    s += fmt::format("<tr><td>{}</td><td class=\"text\">{}</td></tr>\n", html_escape(id), html_escape(text));
  return s + "</table>\n";
}

// A line chart of `metric` against `axis` over the runs `keep` accepts, or a note when those
// runs hold the axis fixed.
std::string axis_figure(const std::vector<json>& runs, const FormatInfo& f, const char* axis, const char* metric,
                        const ChartSpec& spec, const std::string& caption, const RunFilter& keep) {
  std::set<double> xs = axis_values(runs, axis, keep);
  if (xs.size() < 2)
    return fmt::format("<p class=\"note\">{}: {} ({}), so there is no curve to draw.</p>\n", html_escape(spec.title),
                       xs.empty() ? "no runs" : "one value only", xs.empty() ? "" : tick_label(*xs.begin()));
  return figure(line_chart_svg(spec, series_by(runs, f, axis, metric, keep)), caption);
}

struct MetricSpec {
  const char* key;
  const char* title;
  const char* y_label;
  const char* caption;
};
const MetricSpec kTemperatureMetrics[] = {
    {"rouge_l_f1", "ROUGE-L F1 vs the bf16 text", "ROUGE-L F1 (1 = same words)",
     "Word-level overlap with bf16's text for the same seed. Falling faster with temperature means the format's "
     "small logit errors flip more sampled tokens."},
    {"ref_mean_logprob", "bf16 log-prob of the generated tokens", "mean log-prob per token (nats)",
     "How likely bf16 finds each format's output (teacher-forced). Close to the bf16 line = the format's text is as "
     "plausible to bf16 as bf16's own."},
    {"token_agreement", "Token agreement with bf16", "fraction of positions equal",
     "Same-position token ids equal to bf16's (up to the shorter run); at temperature 0 the greedy agreement."},
    {"distinct_2", "Diversity (distinct-2)", "unique bigrams / bigrams",
     "Repetitiveness of each format's own output; bf16's line is the baseline."},
};

// Quality against temperature, one chart per metric and top-k value: top-k 1 is greedy at every
// temperature, so it is left out of these curves (the table and the top-k chart hold it).
std::string temperature_section(const std::vector<json>& runs, const FormatInfo& f) {
  std::set<double> top_ks = axis_values(runs, "top_k", [](const json&) { return true; });
  top_ks.erase(1);
  std::string h = "<h3>Quality vs temperature, by top-k</h3>\n";
  if (top_ks.empty())
    return h + "<p class=\"note\">Every run has top-k 1, which is greedy at every temperature: there is no "
               "temperature curve to draw.</p>\n";
  h += "<p class=\"note\">One chart per top-k value (top-k 1 is greedy at every temperature and is left out); "
       "each point is the mean over prompts, seeds, repeats and the other axes, with its 95% interval.</p>\n";
  for (const MetricSpec& m : kTemperatureMetrics) {
    h += "<div class=\"row\">\n";
    for (double k : top_ks) {
      const std::string facet = k == 0 ? "top-k off" : fmt::format("top-k {}", tick_label(k));
      h += axis_figure(runs, f, "temperature", m.key, {fmt::format("{} ({})", m.title, facet), "temperature", m.y_label},
                       m.caption, [k](const json& r) { return number(r, "top_k") == k; });
    }
    h += "</div>\n";
  }
  return h;
}

// Tables, charts and runs of one model.
std::string model_section(const std::vector<json>& runs) {
  const FormatInfo f = formats_of(runs);
  std::string h = headline(runs, f);
  h += summary_table(runs, f);
  h += prompts_table(runs);
  h += temperature_section(runs, f);

  const RunFilter once = [](const json& r) { return computed(r); };
  const RunFilter fast = speed_runs(runs);
  double max_weight = 0;
  for (const json& r : runs) max_weight = std::max(max_weight, number(r, "weight_bytes").value_or(0));
  const bool gb = max_weight >= 1e9;
  const double scale = gb ? 1e-9 : 1e-6;
  const char* unit = gb ? "GB" : "MB";
  auto in_unit = [unit](double v) { return significant3(v) + " " + unit; };
  h += "<h3>Speed and memory</h3>\n<div class=\"row\">\n";
  h += figure(bar_chart_svg({"Decode speed", "format", "tokens/s (mean over runs)"},
                            bars_by(runs, f, "decode_tokens_per_s", 1, significant3, fast)),
              "Decode tokens per second after the first token, mean over the computed runs (three significant "
              "digits), with the 95% interval. Runs that sampled on the host are left out when others exist.");
  h += figure(bar_chart_svg({"Weight memory", "format", fmt::format("{} of weights", unit)},
                            bars_by(runs, f, "weight_bytes", scale, in_unit, once)),
              "Exact bytes of every weight resident on the device (codes, scales, zero points; a tied "
              "embedding/head counted once when it is one copy).");
  h += figure(bar_chart_svg({"Peak backend memory", "format", fmt::format("{} (weights + KV cache + activations)", unit)},
                            bars_by(runs, f, "peak_memory_bytes", scale, in_unit, once)),
              "The most memory the format's backend held at once (GPU memory on CUDA, the CPU backend's buffers "
              "on the CPU): what running the model in this format needs.");
  const RunFilter standalone_rss = [](const json& r) { return computed(r) && r.contains("provenance"); };
  if (!bars_by(runs, f, "peak_host_rss_bytes", scale, in_unit, standalone_rss).empty())
    h += figure(bar_chart_svg({"Peak host RSS", "format", fmt::format("{} (VmHWM since the format's load)", unit)},
                              bars_by(runs, f, "peak_host_rss_bytes", scale, in_unit, standalone_rss)),
                "Peak resident host memory from the format's load to each run (the kernel's mark is reset at each "
                "load and only one model is resident), so each format stands alone; it includes the process's "
                "own baseline, and on CUDA it excludes GPU memory.");
  h += "</div>\n<h3>Quality vs top-k and vs max-new-tokens</h3>\n<div class=\"row\">\n";
  h += axis_figure(runs, f, "top_k", "rouge_l_f1", {"ROUGE-L F1 vs top-k (temperature > 0)", "top-k (0 = off)",
                                                    "ROUGE-L F1", true},
                   "Mean over the temperatures above 0 (at temperature 0 top-k has no effect); top-k 1 is greedy.",
                   [](const json& r) { return number(r, "temperature").value_or(0) > 0; });
  h += axis_figure(runs, f, "max_new_tokens", "rouge_l_f1",
                   {"ROUGE-L F1 vs max-new-tokens", "max new tokens", "ROUGE-L F1", true},
                   "Longer runs have more chances to diverge from bf16.", [](const json&) { return true; });
  h += "</div>\n<h3>Runs</h3>\n" + runs_table(runs);
  return h;
}

std::string model_key(const json& r) { return text_of(r, "model") + '\x1f' + provenance_field(r, "model_config_sha256"); }

std::string joined(const std::set<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v)
    if (!x.empty()) s += (s.empty() ? "" : sep) + x;
  return s.empty() ? "not recorded (runs from a lowbit before provenance)" : s;
}

std::string provenance_section(const ReportInput& input) {
  std::set<std::string> builds, devices, commands, dates, models;
  for (const json& r : input.runs) {
    if (!computed(r)) continue;
    const std::string version = provenance_field(r, "lowbit_version");
    if (!version.empty()) builds.insert(fmt::format("{} (commit {})", version, provenance_field(r, "lowbit_commit")));
    std::string device = provenance_field(r, "device_name");
    devices.insert(device.empty() ? text_of(r, "device") : device);
    commands.insert(provenance_field(r, "command"));
    dates.insert(provenance_field(r, "date"));
    const std::string sha = provenance_field(r, "model_config_sha256");
    models.insert(html_escape(text_of(r, "model")) +
                  (sha.empty() ? std::string()
                               : fmt::format(" &mdash; config.json SHA-256 <code>{}</code>, weight files {} bytes", sha,
                                             provenance_field(r, "model_weight_file_bytes"))));
  }
  std::string files;
  for (const std::string& f : input.files) files += (files.empty() ? "" : ", ") + html_escape(f);
  std::string cmd_list;
  for (const std::string& c : commands)
    if (!c.empty()) cmd_list += "<code>" + html_escape(c) + "</code><br>";
  if (cmd_list.empty()) cmd_list = "not recorded";
  std::string date_range = "not recorded";
  dates.erase("");
  if (!dates.empty()) date_range = *dates.begin() + (dates.size() > 1 ? " to " + *dates.rbegin() : "");
  std::string h = "<h2>Provenance</h2>\n<table class=\"prov\">\n";
  h += fmt::format("<tr><th>runs files</th><td>{}</td></tr>\n", files);
  h += fmt::format("<tr><th>model</th><td>{}</td></tr>\n", joined(models, "<br>"));
  h += fmt::format("<tr><th>lowbit</th><td>{}</td></tr>\n", html_escape(joined(builds)));
  h += fmt::format("<tr><th>device</th><td>{}</td></tr>\n", html_escape(joined(devices)));
  h += fmt::format("<tr><th>runs made</th><td>{} (UTC)</td></tr>\n", html_escape(date_range));
  h += fmt::format("<tr><th>command lines</th><td>{}</td></tr>\n", cmd_list);
  h += fmt::format("<tr><th>this page</th><td>lowbit report {} (commit {})</td></tr>\n", lowbit_version(),
                   lowbit_commit());
  return h + "</table>\n";
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

std::string significant3(double v) {
  if (!std::isfinite(v)) return "&ndash;";
  if (v == 0) return "0";
  const int magnitude = int(std::floor(std::log10(std::fabs(v))));
  const int decimals = 2 - magnitude;
  if (decimals > 0) {
    std::string s = fmt::format("{:.{}f}", v, decimals);
    // Rounding may carry into a new digit (9.996 -> "10.00"): keep three significant digits.
    if (std::fabs(std::stod(s)) >= std::pow(10.0, magnitude + 1) && decimals > 1)
      s = fmt::format("{:.{}f}", v, decimals - 1);
    return s;
  }
  const double step = std::pow(10.0, -decimals);
  return fmt::format("{:.0f}", std::round(v / step) * step);
}

std::string bytes_label(double bytes) {
  if (!std::isfinite(bytes)) return "&ndash;";
  if (bytes >= 1e9) return significant3(bytes / 1e9) + " GB";
  if (bytes >= 1e6) return significant3(bytes / 1e6) + " MB";
  if (bytes >= 1e3) return significant3(bytes / 1e3) + " kB";
  return significant3(bytes) + " B";
}

double t_quantile_975(size_t df) {
  // Student's t, two-sided 95% (the 0.975 quantile), for df = 1..30, then 40, 60, 120, infinity.
  static constexpr double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                      2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                      2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df == 0) return NAN;
  if (df <= 30) return kTable[df - 1];
  // Beyond the table, linear in 1/df between the standard points.
  static constexpr std::pair<double, double> kTail[] = {{30, 2.042}, {40, 2.021}, {60, 2.000}, {120, 1.980}};
  const double inv = 1.0 / double(df);
  for (size_t i = 0; i + 1 < std::size(kTail); ++i) {
    const auto [d0, t0] = kTail[i];
    const auto [d1, t1] = kTail[i + 1];
    if (double(df) <= d1) return t0 + (t1 - t0) * (inv - 1 / d0) / (1 / d1 - 1 / d0);
  }
  return 1.960 + (1.980 - 1.960) * inv / (1.0 / 120);
}

MeanInterval mean_ci95(const std::vector<double>& values) {
  MeanInterval m;
  m.n = values.size();
  if (values.empty()) {
    m.mean = m.lo = m.hi = NAN;
    return m;
  }
  double sum = 0;
  for (double v : values) sum += v;
  m.mean = sum / double(values.size());
  m.lo = m.hi = m.mean;
  if (values.size() < 2) return m;
  double ss = 0;
  for (double v : values) ss += (v - m.mean) * (v - m.mean);
  const double sd = std::sqrt(ss / double(values.size() - 1));
  const double half = t_quantile_975(values.size() - 1) * sd / std::sqrt(double(values.size()));
  m.lo = m.mean - half;
  m.hi = m.mean + half;
  return m;
}

std::string line_chart_svg(const ChartSpec& spec, const std::vector<Series>& series) {
  std::set<double> xs;
  double y_lo = INFINITY, y_hi = -INFINITY;
  for (const Series& s : series)
    for (size_t i = 0; i < s.points.size(); ++i) {
      const auto [x, y] = s.points[i];
      xs.insert(x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
      if (i < s.intervals.size() && std::isfinite(s.intervals[i].first) && std::isfinite(s.intervals[i].second)) {
        y_lo = std::min(y_lo, s.intervals[i].first);
        y_hi = std::max(y_hi, s.intervals[i].second);
      }
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
  for (size_t si = 0; si < series.size(); ++si) {
    const Series& ser = series[si];
    // Series side by side by a pixel or two, so equal whiskers of several formats stay visible.
    const double nudge = (double(si) - double(series.size() - 1) / 2) * 1.5;
    std::vector<size_t> order(ser.points.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ser.points[a] < ser.points[b]; });
    std::string d;
    for (size_t i : order)
      d += fmt::format("{}{:.1f},{:.1f} ", d.empty() ? "M" : "L", x_pos(ser.points[i].first) + nudge,
                       p.py(ser.points[i].second));
    if (order.size() > 1)
      s += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-opacity=\"0.85\"/>\n", d,
                       ser.color);
    for (size_t i : order) {
      const auto [x, y] = ser.points[i];
      if (i < ser.intervals.size() && ser.intervals[i].second > ser.intervals[i].first)
        s += whisker(x_pos(x) + nudge, p.py(ser.intervals[i].first), p.py(ser.intervals[i].second), ser.color);
      const std::string interval = i < ser.intervals.size() && ser.intervals[i].second > ser.intervals[i].first
                                       ? fmt::format(" [{:.4f}, {:.4f}]", ser.intervals[i].first, ser.intervals[i].second)
                                       : std::string();
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{}: {} = {:.4f}{}</title></circle>\n",
                       x_pos(x) + nudge, p.py(y), ser.color, html_escape(ser.name), tick_label(x), y, interval);
    }
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
  for (const Bar& b : bars) hi = std::max({hi, b.value, b.hi});
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
    double label_y = p.top + p.height - h - 4;
    if (b.hi > b.lo) {
      s += whisker(x + w / 2, p.py(std::max(b.lo, 0.0)), p.py(b.hi), "#333333");
      label_y = std::min(label_y, p.py(b.hi) - 4);
    }
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n", x + w / 2,
                     label_y, html_escape(b.value_text));
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x + w / 2,
                     p.top + p.height + 16, html_escape(b.label));
  }
  return s + "</svg>\n";
}

ReportInput read_report_runs(const std::vector<std::string>& files) {
  ReportInput in;
  in.files = files;
  // (model, prompt id) -> (prompt, where first seen); run key -> where.
  std::map<std::pair<std::string, std::string>, std::pair<std::string, std::string>> prompts;
  std::map<std::string, std::string> seen;
  for (const std::string& file : files) {
    size_t torn = 0;
    std::vector<JsonlRecord> records = read_jsonl(file, true, &torn);
    if (torn)
      in.warnings.push_back(fmt::format("{}:{}: a torn last line (a write cut by a kill) is left out of the report",
                                        file, torn));
    for (JsonlRecord& rec : records) {
      const std::string where = fmt::format("{}:{}", file, rec.line);
      const json& r = rec.value;
      for (const char* key : {"prompt_id", "quant", "token_ids", "token_agreement", "rouge_l_f1", "temperature", "top_k"})
        if (!r.contains(key))
          throw InputError(fmt::format("{}: not a `lowbit sweep` run (no \"{}\"){}", where, key,
                                       r.contains("id") && r.contains("prompt")
                                           ? "; records with \"id\" are `lowbit batch` output, which report does not read"
                                           : ""));
      const std::string model = model_key(r);
      const std::string prompt = text_of(r, "prompt"), id = text_of(r, "prompt_id");
      auto [it, fresh] = prompts.try_emplace({model, r["prompt_id"].dump()}, prompt, where);
      if (!fresh && it->second.first != prompt)
        throw InputError(fmt::format("{}: prompt id {} is \"{}\" here but \"{}\" at {}: these runs come from sweeps "
                                     "with different prompts under one id (give the prompts distinct ids)",
                                     where, r["prompt_id"].dump(), shorten(prompt, 40), shorten(it->second.first, 40),
                                     it->second.second));
      std::vector<json> points;
      auto stands = r.find("stands_for");
      if (stands != r.end() && stands->is_array() && !stands->empty()) {
        for (const json& p : *stands) {
          json point = r;
          point.erase("stands_for");
          for (const auto& [k, v] : p.items()) point[k] = v;
          points.push_back(std::move(point));
        }
      } else {
        points.push_back(r);
      }
      for (size_t i = 0; i < points.size(); ++i) {
        json& point = points[i];
        json key = json::array({model, text_of(r, "quant"), r["prompt_id"]});
        for (const char* field : kPointFields) key.push_back(point.value(field, json(nullptr)));
        auto [at, unique] = seen.try_emplace(key.dump(), where);
        if (!unique)
          throw InputError(fmt::format("{}: the {} run of prompt {} at temperature {}, top-k {}, seed {} is also at {}: "
                                       "the files overlap (the same shard twice, or a file and its copy?)",
                                       where, text_of(r, "quant"), r["prompt_id"].dump(), text_of(point, "temperature"),
                                       text_of(point, "top_k"), text_of(point, "seed"), at->second));
        point["_computed"] = i == 0;
        point["_source"] = where;
        if (i == 0 && points.size() > 1) point["stands_for"] = *stands;  // the runs table shows what it stands for
        in.runs.push_back(std::move(point));
      }
    }
  }
  if (in.runs.empty()) {
    std::string list;
    for (const std::string& f : files) list += (list.empty() ? "" : ", ") + f;
    throw InputError(fmt::format("{}: no runs in the file{}", list, files.size() > 1 ? "s" : ""));
  }
  return in;
}

std::string render_report(const ReportInput& input) {
  // Models (folder and config hash) in the order they first appear; each gets its own section.
  std::vector<std::string> model_order;
  std::map<std::string, std::vector<json>> by_model;
  for (const json& r : input.runs) {
    const std::string key = model_key(r);
    if (!by_model.count(key)) model_order.push_back(key);
    by_model[key].push_back(r);
  }
  std::set<std::string> prompts, devices;
  size_t computed_runs = 0;
  for (const json& r : input.runs) {
    prompts.insert(text_of(r, "prompt_id"));
    computed_runs += computed(r);
  }
  std::string source;
  for (const std::string& f : input.files) source += (source.empty() ? "" : ", ") + f;
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>lowbit study: " +
      html_escape(source) +
      "</title>\n<style>\n"
      "body{font-family:sans-serif;margin:20px;max-width:1160px;color:#222}\n"
      "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:24px 0 6px;border-bottom:2px solid #999}\n"
      "h3{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #ccc}\n"
      ".row{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555;"
      "max-width:560px}\n"
      "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;"
      "vertical-align:top}\n"
      "table.prov td{text-align:left}td.text{text-align:left;max-width:520px;font-family:monospace;font-size:11px;"
      "white-space:pre-wrap}\n"
      ".ci{color:#666;font-size:11px}.headline{font-size:15px;background:#f4f4f4;padding:6px 10px}\n"
      ".swatch{display:inline-block;width:10px;height:10px;margin-right:5px}.note{color:#777;font-size:13px}\n"
      "summary{cursor:pointer;font-size:14px;margin:6px 0}\n"
      "</style></head><body>\n";
  h += "<h1>How do the weight formats respond to sampling, compared with bf16?</h1>\n";
  h += fmt::format(
      "<p>{} grid points ({} computed runs: greedy grid points that cannot differ ran once) from <code>{}</code>: "
      "{} model(s), {} prompt(s). Quality is measured against the bf16 run with the same prompt, settings and seed "
      "(README &ldquo;Study metrics&rdquo;); each point is a mean over prompts, seeds, repeats and the axes not "
      "shown, with its 95% confidence interval.</p>\n",
      input.runs.size(), computed_runs, html_escape(source), model_order.size(), prompts.size());
  h += provenance_section(input);
  for (const std::string& key : model_order) {
    const std::vector<json>& runs = by_model[key];
    if (model_order.size() > 1) {
      const std::string sha = provenance_field(runs.front(), "model_config_sha256");
      h += fmt::format("<h2>Model {}{}</h2>\n", html_escape(text_of(runs.front(), "model")),
                       sha.empty() ? std::string() : fmt::format(" (config.json SHA-256 {}&hellip;)", sha.substr(0, 12)));
    } else {
      h += "<h2>Results</h2>\n";
    }
    h += model_section(runs);
  }
  h += "</body></html>\n";
  return h;
}

}  // namespace lowbit::study
