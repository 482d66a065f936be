// "Did you mean": the closest known name to a typo (a flag, a command, a JSONL key), by edit
// distance with transpositions, so `lowbit rn` suggests run and --temprature --temperature.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::cli {

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// neighbouring characters each cost 1.
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word` when it is close enough to be a plausible typo: at most
// max(1, length/3) edits, or `word` is a prefix of exactly one candidate. Ties go to the first.
std::optional<std::string> closest_name(std::string_view word, const std::vector<std::string>& candidates);

// " (did you mean X?)" or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace lowbit::cli
