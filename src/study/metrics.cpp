#include "study/metrics.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace lowbit::study {

TokenAgreement token_agreement(std::span<const int32_t> a, std::span<const int32_t> b) {
  TokenAgreement r;
  const size_t n = std::min(a.size(), b.size());
  if (n == 0) {
    r.fraction = a.size() == b.size() ? 1.0 : 0.0;
    r.first_divergence = a.size() == b.size() ? -1 : 0;
    return r;
  }
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    if (a[i] == b[i])
      ++same;
    else if (r.first_divergence < 0)
      r.first_divergence = int64_t(i);
  }
  if (r.first_divergence < 0 && a.size() != b.size()) r.first_divergence = int64_t(n);
  r.fraction = double(same) / double(n);
  return r;
}

std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) words.push_back(text.substr(start, i - start));
  }
  return words;
}

size_t lcs_length(std::span<const std::string_view> a, std::span<const std::string_view> b) {
  // One row of the DP table: row[j] = LCS(a[:i], b[:j]).
  std::vector<size_t> row(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = 0;  // LCS(a[:i-1], b[:j-1])
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = a[i - 1] == b[j - 1] ? diagonal + 1 : std::max(row[j], row[j - 1]);
      diagonal = above;
    }
  }
  return row[b.size()];
}

double rouge_l_f1(std::string_view reference, std::string_view candidate) {
  auto ref = split_words(reference), cand = split_words(candidate);
  if (ref.empty() || cand.empty()) return ref.empty() && cand.empty() ? 1.0 : 0.0;
  double lcs = double(lcs_length(ref, cand));
  if (lcs == 0) return 0.0;
  double precision = lcs / double(cand.size()), recall = lcs / double(ref.size());
  return 2 * precision * recall / (precision + recall);
}

double distinct_n(std::span<const int32_t> ids, int n) {
  if (n < 1 || ids.size() < size_t(n)) return 0.0;
  std::set<std::vector<int32_t>> unique;
  const size_t total = ids.size() - size_t(n) + 1;
  for (size_t i = 0; i < total; ++i) unique.emplace(ids.begin() + long(i), ids.begin() + long(i) + n);
  return double(unique.size()) / double(total);
}

}  // namespace lowbit::study
