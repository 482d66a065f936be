// Sweep grids from flags: each axis is a comma-separated list of values and/or start:stop:step
// ranges (numbers only; the stop is included when it lies on the grid within a float tolerance,
// so 0:1:0.1 gives 11 values). Errors are UsageErrors naming the flag.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::study {

// "0,0.5,1" or "0:1:0.1" or "0,0.05:0.2:0.05". Values are rounded to 1e-9 so 0.1*3 prints as 0.3.
// Rejects empty items, non-numbers, step <= 0, start > stop, duplicates and grids over 10000 values.
std::vector<double> parse_float_list(std::string_view flag, std::string_view spec);
// As parse_float_list, with every value (range bounds and steps included) an integer.
std::vector<int64_t> parse_int_list(std::string_view flag, std::string_view spec);
// "bf16,nf4,fp4": comma-separated names, no ranges; rejects empty items and duplicates.
std::vector<std::string> parse_name_list(std::string_view flag, std::string_view spec);

// One point of the grid (formats and prompts are looped outside it).
struct SweepSetting {
  double temperature = 0;
  int top_k = 0;
  double top_p = 1;
  double min_p = 0;
  double repetition_penalty = 1;
  int max_new_tokens = 0;
  uint64_t seed = 0;   // the seed this run uses: base seed + repeat
  uint64_t base_seed = 0;
  int repeat = 0;
};

struct SweepAxes {
  std::vector<double> temperature, top_p;
  std::vector<int64_t> top_k, max_new_tokens, seed;
  int repeats = 1;
  std::vector<double> min_p{0}, repetition_penalty{1};
};

// Range checks per axis (temperature >= 0, top-k >= 0, top-p in (0, 1], min-p in [0, 1],
// repetition penalty > 0, max-new-tokens >= 1, seed >= 0, repeats >= 1); throws UsageError
// naming the flag.
void validate_axes(const SweepAxes& axes);

// Cartesian product, in the order temperature, top_k, top_p, min_p, repetition_penalty,
// max_new_tokens, seed, repeat (the last varies fastest). Repeat r of base seed s runs with seed s + r.
std::vector<SweepSetting> expand_grid(const SweepAxes& axes);

// Greedy: every draw is the argmax, whatever the seed, top-p and min-p. Temperature 0 is greedy
// by definition; top-k 1 keeps only the largest logit (and any exactly tied with it), so it is
// greedy unless two logits tie exactly for the top: the sweep checks that (WorkItem).
inline bool is_greedy(const SweepSetting& g) { return g.temperature == 0 || g.top_k == 1; }

// What a sweep computes for one prompt and format: a greedy class (every greedy grid point with
// the same max_new_tokens and repetition penalty, which cannot differ) once, every sampled
// point on its own. `points` index the grid; the first is the representative whose settings
// the record shows.
struct WorkItem {
  std::vector<size_t> points;
  bool greedy = false;
};
// The grid's work items in grid order (a class sits where its first point is). `take` filters
// the points (e.g. those not yet in the runs file); items left without points are dropped.
std::vector<WorkItem> plan_work(const std::vector<SweepSetting>& grid, const std::vector<bool>& take);

}  // namespace lowbit::study
