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
  int max_new_tokens = 0;
  uint64_t seed = 0;   // the seed this run uses: base seed + repeat
  uint64_t base_seed = 0;
  int repeat = 0;
};

struct SweepAxes {
  std::vector<double> temperature, top_p;
  std::vector<int64_t> top_k, max_new_tokens, seed;
  int repeats = 1;
};

// Range checks per axis (temperature >= 0, top-k >= 0, top-p in (0, 1], max-new-tokens >= 1,
// seed >= 0, repeats >= 1); throws UsageError naming the flag.
void validate_axes(const SweepAxes& axes);

// Cartesian product, in the order temperature, top_k, top_p, max_new_tokens, seed, repeat
// (the last varies fastest). Repeat r of base seed s runs with seed s + r.
std::vector<SweepSetting> expand_grid(const SweepAxes& axes);

}  // namespace lowbit::study
