#include "study/grid.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>
#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit::study {

namespace {

constexpr size_t kMaxValues = 10000;
// A range's stop is included when it is within this fraction of a step of the last grid point:
// 0:1:0.1 computes (1-0)/0.1 = 9.999999999999998 steps.
constexpr double kStepTolerance = 1e-6;

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep, start);
    parts.push_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return parts;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

double parse_number(std::string_view flag, std::string_view item, std::string_view text) {
  std::string s(trim(text));
  if (s.empty()) throw UsageError(fmt::format("{} '{}': empty number", flag, item));
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v))
    throw UsageError(fmt::format("{} '{}': '{}' is not a number", flag, item, s));
  return v;
}

double round_to_grid(double v) { return std::round(v * 1e9) / 1e9; }

std::vector<double> expand_item(std::string_view flag, std::string_view item) {
  std::vector<std::string_view> parts = split(item, ':');
  if (parts.size() == 1) return {round_to_grid(parse_number(flag, item, parts[0]))};
  if (parts.size() != 3)
    throw UsageError(fmt::format("{} '{}': a range is start:stop:step (three numbers)", flag, item));
  double start = parse_number(flag, item, parts[0]);
  double stop = parse_number(flag, item, parts[1]);
  double step = parse_number(flag, item, parts[2]);
  if (!(step > 0)) throw UsageError(fmt::format("{} '{}': the step must be > 0", flag, item));
  if (start > stop) throw UsageError(fmt::format("{} '{}': start is greater than stop", flag, item));
  double steps = (stop - start) / step;
  if (steps + 1 > double(kMaxValues))
    throw UsageError(fmt::format("{} '{}': more than {} values", flag, item, kMaxValues));
  size_t n = size_t(std::floor(steps + kStepTolerance)) + 1;
  std::vector<double> values;
  // start + i*step (not repeated addition) so the error does not accumulate along the range.
  for (size_t i = 0; i < n; ++i) values.push_back(round_to_grid(start + double(i) * step));
  return values;
}

}  // namespace

std::vector<double> parse_float_list(std::string_view flag, std::string_view spec) {
  if (trim(spec).empty()) throw UsageError(fmt::format("{}: empty list", flag));
  std::vector<double> values;
  std::set<double> seen;
  for (std::string_view item : split(spec, ',')) {
    if (trim(item).empty()) throw UsageError(fmt::format("{} '{}': empty item in the list", flag, spec));
    for (double v : expand_item(flag, trim(item))) {
      if (!seen.insert(v).second) throw UsageError(fmt::format("{} '{}': the value {} appears twice", flag, spec, v));
      values.push_back(v);
      if (values.size() > kMaxValues) throw UsageError(fmt::format("{}: more than {} values", flag, kMaxValues));
    }
  }
  return values;
}

std::vector<int64_t> parse_int_list(std::string_view flag, std::string_view spec) {
  for (std::string_view item : split(spec, ','))
    for (std::string_view bound : split(item, ':')) {
      std::string_view b = trim(bound);
      if (b.empty()) continue;  // parse_float_list names the empty item
      double v = parse_number(flag, item, b);
      if (v != std::floor(v) || std::fabs(v) > 9.0e15)
        throw UsageError(fmt::format("{} '{}': '{}' is not an integer", flag, trim(item), b));
    }
  std::vector<int64_t> out;
  for (double v : parse_float_list(flag, spec)) out.push_back(int64_t(std::llround(v)));
  return out;
}

std::vector<std::string> parse_name_list(std::string_view flag, std::string_view spec) {
  if (trim(spec).empty()) throw UsageError(fmt::format("{}: empty list", flag));
  std::vector<std::string> names;
  for (std::string_view item : split(spec, ',')) {
    std::string name(trim(item));
    if (name.empty()) throw UsageError(fmt::format("{} '{}': empty item in the list", flag, spec));
    for (const auto& n : names)
      if (n == name) throw UsageError(fmt::format("{} '{}': '{}' appears twice", flag, spec, name));
    names.push_back(name);
  }
  return names;
}

void validate_axes(const SweepAxes& a) {
  for (double t : a.temperature)
    if (t < 0) throw UsageError(fmt::format("--temperature {}: must be >= 0", t));
  for (int64_t k : a.top_k)
    if (k < 0 || k > 1000000000) throw UsageError(fmt::format("--top-k {}: must be >= 0 (0 = off)", k));
  for (double p : a.top_p)
    if (!(p > 0 && p <= 1)) throw UsageError(fmt::format("--top-p {}: must be in (0, 1]", p));
  for (int64_t n : a.max_new_tokens)
    if (n < 1 || n > 1000000000) throw UsageError(fmt::format("--max-new-tokens {}: must be >= 1", n));
  for (int64_t s : a.seed)
    if (s < 0) throw UsageError(fmt::format("--seed {}: must be >= 0", s));
  for (double p : a.min_p)
    if (!(p >= 0 && p <= 1)) throw UsageError(fmt::format("--min-p {}: must be in [0, 1]", p));
  for (double r : a.repetition_penalty)
    if (!(r > 0)) throw UsageError(fmt::format("--repeat-penalty {}: must be > 0 (1 = off)", r));
  if (a.repeats < 1 || a.repeats > 10000) throw UsageError(fmt::format("--repeats {}: must be from 1 to 10000", a.repeats));
}

std::vector<SweepSetting> expand_grid(const SweepAxes& a) {
  std::vector<SweepSetting> out;
  for (double t : a.temperature)
    for (int64_t k : a.top_k)
      for (double p : a.top_p)
        for (double mp : a.min_p)
          for (double rp : a.repetition_penalty)
            for (int64_t n : a.max_new_tokens)
              for (int64_t s : a.seed)
                for (int r = 0; r < a.repeats; ++r) {
                  SweepSetting g;
                  g.temperature = t;
                  g.top_k = int(k);
                  g.top_p = p;
                  g.min_p = mp;
                  g.repetition_penalty = rp;
                  g.max_new_tokens = int(n);
                  g.base_seed = uint64_t(s);
                  g.seed = uint64_t(s) + uint64_t(r);
                  g.repeat = r;
                  out.push_back(g);
                }
  return out;
}

std::vector<WorkItem> plan_work(const std::vector<SweepSetting>& grid, const std::vector<bool>& take) {
  std::vector<WorkItem> items;
  // Greedy classes by (max_new_tokens, repetition penalty): what a greedy run still depends on.
  std::vector<std::pair<std::pair<int, double>, size_t>> class_item;  // key -> index into items
  for (size_t i = 0; i < grid.size(); ++i) {
    if (!take.empty() && !take[i]) continue;
    const SweepSetting& g = grid[i];
    if (!is_greedy(g)) {
      items.push_back({{i}, false});
      continue;
    }
    const std::pair<int, double> key{g.max_new_tokens, g.repetition_penalty};
    auto it = std::find_if(class_item.begin(), class_item.end(), [&](const auto& c) { return c.first == key; });
    if (it == class_item.end()) {
      class_item.push_back({key, items.size()});
      items.push_back({{i}, true});
    } else {
      items[it->second].points.push_back(i);
    }
  }
  // The representative is a temperature-0 point when there is one: its record then shows the
  // settings that define the greedy run.
  for (WorkItem& w : items) {
    auto t0 = std::find_if(w.points.begin(), w.points.end(), [&](size_t i) { return grid[i].temperature == 0; });
    if (t0 != w.points.end()) std::rotate(w.points.begin(), t0, t0 + 1);
  }
  return items;
}

}  // namespace lowbit::study
