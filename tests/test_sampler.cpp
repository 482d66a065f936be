// Sampler tests: each filter against hand-computed distributions, the chain against
// transformers' own processors (tests/data/sampler/goldens.json, from
// tools/make_sampler_goldens.py), and the draws against their distribution by chi-square.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "sampler/sampler.h"
#include "test_util.h"

using lowbit::SamplingParams;

namespace {

const std::vector<int32_t> kNoHistory;

// Logits whose plain softmax is exactly proportional to `weights`.
std::vector<float> logits_for_weights(const std::vector<double>& weights) {
  std::vector<float> logits;
  for (double w : weights) logits.push_back(static_cast<float>(std::log(w)));
  return logits;
}

void check_probs(const std::vector<double>& actual, const std::vector<double>& expected,
                 double tolerance = 1e-6) {
  REQUIRE(actual.size() == expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    INFO("token " << i);
    CHECK(actual[i] == Approx(expected[i]).margin(tolerance));
  }
}

std::string usage_error_message(const SamplingParams& p) {
  try {
    lowbit::validate(p);
  } catch (const lowbit::UsageError& e) {
    return e.what();
  }
  return "";
}

// Pearson's statistic of observed counts against expected probabilities; categories with
// probability 0 must have no draws at all and are checked separately.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double statistic = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0.0) continue;
    const double expected = probs[i] * draws;
    statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return statistic;
}

std::vector<int> histogram(const std::vector<float>& logits, const SamplingParams& p, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int step = 0; step < draws; ++step) {
    const int32_t token = lowbit::sample_token(logits, p, kNoHistory, static_cast<uint64_t>(step));
    if (token < 0 || static_cast<size_t>(token) >= logits.size()) FAIL("token " << token);
    ++counts[static_cast<size_t>(token)];
  }
  return counts;
}

}  // namespace

TEST_CASE("validate names the flag at fault", "[sampler]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SamplingParams ok;
  REQUIRE_NOTHROW(lowbit::validate(ok));
  ok.temperature = 0.0f;
  ok.top_p = 1.0f;
  ok.min_p = 1.0f;
  ok.top_k = 0;
  REQUIRE_NOTHROW(lowbit::validate(ok));

  struct Bad {
    SamplingParams params;
    const char* flag;
  };
  std::vector<Bad> bad;
  auto with = [](auto change) {
    SamplingParams p;
    change(p);
    return p;
  };
  bad.push_back({with([](SamplingParams& p) { p.temperature = -0.5f; }), "--temperature"});
  bad.push_back({with([&](SamplingParams& p) { p.temperature = nan; }), "--temperature"});
  bad.push_back({with([](SamplingParams& p) { p.top_k = -1; }), "--top-k"});
  bad.push_back({with([](SamplingParams& p) { p.top_p = 0.0f; }), "--top-p"});
  bad.push_back({with([](SamplingParams& p) { p.top_p = 1.5f; }), "--top-p"});
  bad.push_back({with([&](SamplingParams& p) { p.top_p = nan; }), "--top-p"});
  bad.push_back({with([](SamplingParams& p) { p.min_p = -0.1f; }), "--min-p"});
  bad.push_back({with([](SamplingParams& p) { p.min_p = 1.1f; }), "--min-p"});
  bad.push_back({with([&](SamplingParams& p) { p.min_p = nan; }), "--min-p"});
  bad.push_back({with([](SamplingParams& p) { p.repetition_penalty = 0.0f; }), "--repeat-penalty"});
  bad.push_back({with([](SamplingParams& p) { p.repetition_penalty = -1.0f; }), "--repeat-penalty"});
  bad.push_back({with([&](SamplingParams& p) { p.repetition_penalty = nan; }), "--repeat-penalty"});
  for (const Bad& b : bad) {
    INFO(b.flag);
    const std::string message = usage_error_message(b.params);
    CHECK(message.find(b.flag) != std::string::npos);
  }
  // The draw functions validate too, and UsageError carries the usage exit code.
  const std::vector<float> logits{0.0f, 1.0f};
  try {
    lowbit::sample_token(logits, bad[0].params, kNoHistory, 0);
    FAIL("no exception");
  } catch (const lowbit::UsageError& e) {
    CHECK(e.code() == lowbit::ExitCode::usage);
  }
}

TEST_CASE("uniform01 is a fixed function of seed and step", "[sampler]") {
  // Values from an independent Python implementation of splitmix64 (see sampler.cpp).
  CHECK(lowbit::uniform01(0, 0) == 0.8833108082136426);
  CHECK(lowbit::uniform01(0, 1) == 0.43152799704850997);
  CHECK(lowbit::uniform01(42, 7) == 0.15289334222649975);
  CHECK(lowbit::uniform01(UINT64_MAX, uint64_t{1} << 40) == 0.5151470646275071);
  double sum = 0.0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = lowbit::uniform01(7, static_cast<uint64_t>(i));
    if (!(u >= 0.0 && u < 1.0)) FAIL("uniform01 gave " << u);
    sum += u;
  }
  // Mean of n uniforms has sd 1/sqrt(12 n) ~ 6.5e-4; 0.004 is over 6 sd.
  CHECK(sum / n == Approx(0.5).margin(0.004));
}

TEST_CASE("softmax and temperature", "[sampler]") {
  const std::vector<float> logits = logits_for_weights({1, 2, 3, 4});
  SamplingParams p;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0.1, 0.2, 0.3, 0.4});
  p.temperature = 0.5f;  // squares the weights
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory),
              {1 / 30.0, 4 / 30.0, 9 / 30.0, 16 / 30.0});
  p.temperature = 2.0f;  // square roots of the weights
  const double s = 1 + std::sqrt(2.0) + std::sqrt(3.0) + 2;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory),
              {1 / s, std::sqrt(2.0) / s, std::sqrt(3.0) / s, 2 / s});
}

TEST_CASE("top-k keeps the k largest and every tie with the k-th", "[sampler]") {
  const std::vector<float> logits = logits_for_weights({1, 2, 3, 4});
  SamplingParams p;
  p.top_k = 2;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 3 / 7.0, 4 / 7.0});
  p.top_k = 1;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 0, 1});
  p.top_k = 4;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0.1, 0.2, 0.3, 0.4});
  p.top_k = 100;  // larger than the vocabulary: no-op
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0.1, 0.2, 0.3, 0.4});

  // torch: logits < topk_values[-1] are removed, so top_k 2 over {1,3,3,2,3} keeps all three 3s.
  const std::vector<float> tied{1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  p.top_k = 2;
  check_probs(lowbit::sampling_distribution(tied, p, kNoHistory), {0, 1 / 3.0, 1 / 3.0, 0, 1 / 3.0});
  // top_k 4: the 4th largest is 2, so only the 1 goes.
  p.top_k = 4;
  const double w = std::exp(-1.0);
  const double z = 3 + w;
  check_probs(lowbit::sampling_distribution(tied, p, kNoHistory), {0, 1 / z, 1 / z, w / z, 1 / z});
}

TEST_CASE("top-p removes the low tail whose mass is <= 1 - top_p", "[sampler]") {
  // Ascending cumulative sums: 0.1, 0.3, 0.6, 1.0.
  const std::vector<float> logits = logits_for_weights({1, 2, 3, 4});
  SamplingParams p;
  p.top_p = 0.5f;  // remove cumsum <= 0.5: ids 0, 1
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 3 / 7.0, 4 / 7.0});
  p.top_p = 0.8f;  // remove cumsum <= 0.2: id 0
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 2 / 9.0, 3 / 9.0, 4 / 9.0});
  p.top_p = 0.35f;  // remove cumsum <= 0.65: ids 0, 1, 2
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 0, 1});
  p.top_p = 0.01f;  // everything would go; min_tokens_to_keep keeps the top token
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 0, 1});
  p.top_p = 1.0f;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0.1, 0.2, 0.3, 0.4});

  // A tie across the threshold: a stable ascending sort puts ids 0..3 in order, cumulative sums
  // 0.25, 0.5, 0.75, 1, so top-p 0.5 removes ids 0 and 1 (0.5 <= 0.5 is exact here).
  const std::vector<float> flat{0.0f, 0.0f, 0.0f, 0.0f};
  p.top_p = 0.5f;
  check_probs(lowbit::sampling_distribution(flat, p, kNoHistory), {0, 0, 0.5, 0.5});
}

TEST_CASE("top-p on a large vocabulary equals a full ascending sort", "[sampler]") {
  // The sampler sorts only a growing prefix from the top; this reference is transformers'
  // algorithm written out: full ascending sort, softmax, cumulative sum, remove <= 1 - top_p.
  const size_t vocab = 5000;
  std::vector<float> logits(vocab);
  uint64_t state = 1;
  for (float& l : logits) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    l = static_cast<float>(state >> 40) / static_cast<float>(1u << 24) * 8.0f;  // [0, 8)
  }
  for (float top_p : {0.05f, 0.5f, 0.9f, 0.99f}) {
    INFO("top_p " << top_p);
    std::vector<size_t> ascending(vocab);
    std::iota(ascending.begin(), ascending.end(), size_t{0});
    std::stable_sort(ascending.begin(), ascending.end(),
                     [&](size_t a, size_t b) { return logits[a] < logits[b]; });
    double z = 0.0;
    for (float l : logits) z += std::exp(static_cast<double>(l));
    std::vector<bool> removed(vocab, false);
    double cumulative = 0.0;
    for (size_t i = 0; i + 1 < vocab; ++i) {
      cumulative += std::exp(static_cast<double>(logits[ascending[i]])) / z;
      removed[ascending[i]] = cumulative <= 1.0 - static_cast<double>(top_p);
    }
    double kept_z = 0.0;
    for (size_t i = 0; i < vocab; ++i) {
      if (!removed[i]) kept_z += std::exp(static_cast<double>(logits[i]));
    }
    SamplingParams p;
    p.top_p = top_p;
    const std::vector<double> probs = lowbit::sampling_distribution(logits, p, kNoHistory);
    size_t mismatches = 0;
    for (size_t i = 0; i < vocab; ++i) {
      const double expected = removed[i] ? 0.0 : std::exp(static_cast<double>(logits[i])) / kept_z;
      if (std::abs(probs[i] - expected) > 1e-12 || (probs[i] == 0.0) != removed[i]) ++mismatches;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("min-p removes tokens below min_p times the top probability", "[sampler]") {
  const std::vector<float> logits = logits_for_weights({1, 2, 3, 4});
  SamplingParams p;
  p.min_p = 0.6f;  // threshold 0.24
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 3 / 7.0, 4 / 7.0});
  p.min_p = 0.4f;  // threshold 0.16
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 2 / 9.0, 3 / 9.0, 4 / 9.0});
  p.min_p = 1.0f;  // only the maximum, and ties with it
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 0, 1});
  const std::vector<float> tied{1.0f, 1.0f, 0.0f};
  check_probs(lowbit::sampling_distribution(tied, p, kNoHistory), {0.5, 0.5, 0});
}

TEST_CASE("temperature applies before top-p, as in transformers", "[sampler]") {
  // Weights {1,2,3,4} at temperature 0.5 become {1,4,9,16}/30: cumulative 1/30, 5/30, 14/30,
  // so top-p 0.5 keeps only id 3. llama.cpp's order (top-p first, temperature last) would keep
  // ids 2 and 3.
  const std::vector<float> logits = logits_for_weights({1, 2, 3, 4});
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_p = 0.5f;
  check_probs(lowbit::sampling_distribution(logits, p, kNoHistory), {0, 0, 0, 1});
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits", "[sampler]") {
  const std::vector<float> logits{2.0f, -2.0f, 0.0f, 1.0f};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  // Ids 0, 1, 2 seen (0 twice: penalized once); 99 and -1 are outside the vocabulary and ignored.
  const std::vector<int32_t> history{0, 1, 2, 0, 99, -1};
  // Penalized logits: {1, -4, 0, 1}.
  const double e1 = std::exp(1.0), em4 = std::exp(-4.0);
  const double z = e1 + em4 + 1 + e1;
  check_probs(lowbit::sampling_distribution(logits, p, history), {e1 / z, em4 / z, 1 / z, e1 / z});

  // A penalty below 1 favours repeats: {4, -1, 0, 1}.
  p.repetition_penalty = 0.5f;
  const double z2 = std::exp(4.0) + std::exp(-1.0) + 1 + e1;
  check_probs(lowbit::sampling_distribution(logits, p, history),
              {std::exp(4.0) / z2, std::exp(-1.0) / z2, 1 / z2, e1 / z2});
}

TEST_CASE("every filter in sequence", "[sampler]") {
  // Hand trace: penalty 2 on ids {4, 1} -> {2, -2, 1, 0.5, 1.5, -2}; temperature 0.5 ->
  // {4, -4, 2, 1, 3, -4}; top-k 4 keeps scores >= 1: ids 0, 2, 3, 4; top-p 0.9 over
  // softmax(4, 3, 2, 1) = (.644, .237, .087, .032) removes id 3 (cumsum .032 <= .1, next .119 is
  // not); min-p 0.2 over softmax(4, 3, 2): id 2 has ratio e^-2 = .135 < .2 and goes.
  const std::vector<float> logits{2.0f, -1.0f, 1.0f, 0.5f, 3.0f, -2.0f};
  const std::vector<int32_t> history{4, 1, 4};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.temperature = 0.5f;
  p.top_k = 4;
  p.top_p = 0.9f;
  p.min_p = 0.2f;
  const double top = 1 / (1 + std::exp(-1.0));
  check_probs(lowbit::sampling_distribution(logits, p, history), {top, 0, 0, 0, 1 - top, 0});
}

TEST_CASE("greedy is argmax after the penalty, lowest id on ties", "[sampler]") {
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = 1;  // warpers do not matter for greedy
  const std::vector<float> tied{1.0f, 3.0f, 3.0f, 2.0f};
  check_probs(lowbit::sampling_distribution(tied, p, kNoHistory), {0, 1, 0, 0});
  for (uint64_t step = 0; step < 20; ++step) {
    p.seed = step * 7919;
    CHECK(lowbit::sample_token(tied, p, kNoHistory, step) == 1);
  }
  // The penalty still applies, as in generate(do_sample=False): 3 / 2 = 1.5 < 2.5.
  const std::vector<float> logits{3.0f, 2.5f};
  const std::vector<int32_t> history{0};
  p.repetition_penalty = 2.0f;
  CHECK(lowbit::sample_token(logits, p, history, 0) == 1);
  p.repetition_penalty = 1.0f;
  CHECK(lowbit::sample_token(logits, p, history, 0) == 0);
}

TEST_CASE("bad logits are reported", "[sampler]") {
  SamplingParams p;
  CHECK_THROWS_AS(lowbit::sampling_distribution(std::vector<float>{}, p, kNoHistory),
                  lowbit::InputError);
  const std::vector<float> with_nan{0.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK_THROWS_WITH(lowbit::sampling_distribution(with_nan, p, kNoHistory),
                    Catch::Contains("token 1"));
}

TEST_CASE("distributions equal transformers' processors", "[sampler]") {
  const std::string path = lowbit::test::data_dir() + "/sampler/goldens.json";
  std::ifstream file(path);
  REQUIRE(file.good());
  const nlohmann::json goldens = nlohmann::json::parse(file);
  REQUIRE(goldens.at("cases").size() >= 10);
  for (const auto& c : goldens.at("cases")) {
    const std::string name = c.at("name");
    INFO("case " << name);
    const std::vector<double> logits_double = c.at("logits").get<std::vector<double>>();
    // The JSON holds float32 values written exactly, so this narrowing is exact.
    const std::vector<float> logits(logits_double.begin(), logits_double.end());
    const std::vector<int32_t> history = c.at("history").get<std::vector<int32_t>>();
    const auto& params = c.at("params");
    SamplingParams p;
    p.temperature = params.at("temperature").get<float>();
    p.top_k = params.at("top_k").get<int>();
    p.top_p = params.at("top_p").get<float>();
    p.min_p = params.at("min_p").get<float>();
    p.repetition_penalty = params.at("repetition_penalty").get<float>();
    const std::vector<double> expected = c.at("probs").get<std::vector<double>>();
    const std::vector<double> actual = lowbit::sampling_distribution(logits, p, history);
    REQUIRE(actual.size() == expected.size());
    for (size_t i = 0; i < actual.size(); ++i) {
      INFO("token " << i);
      CHECK(actual[i] == Approx(expected[i]).margin(1e-6).epsilon(0));
      // The support must match exactly: a token transformers removed is never drawn here.
      CHECK((actual[i] == 0.0) == (expected[i] == 0.0));
    }
  }
}

TEST_CASE("draws follow the distribution (chi-square)", "[sampler]") {
  const int draws = 200000;
  const std::vector<double> probs{0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02};
  const std::vector<float> logits = logits_for_weights(probs);
  SamplingParams p;
  p.seed = 12345;
  const std::vector<int> counts = histogram(logits, p, draws);
  // 7 degrees of freedom: P(chi2 > 45) ~ 1.4e-7, so a correct sampler passes for all but a
  // vanishing fraction of seeds.
  const double statistic = chi_square(counts, probs, draws);
  INFO("chi-square " << statistic);
  CHECK(statistic < 45.0);
  // The same counts against a distribution moved by 0.01 must fail clearly (expected ~ 735):
  // the test can tell a wrong sampler from a right one.
  std::vector<double> perturbed = probs;
  perturbed[0] -= 0.01;
  perturbed[7] += 0.01;
  CHECK(chi_square(counts, perturbed, draws) > 200.0);

  // With filters: only ids 0 and 4 of the "every filter" example can be drawn, in e : 1.
  const std::vector<float> filtered_logits{2.0f, -1.0f, 1.0f, 0.5f, 3.0f, -2.0f};
  SamplingParams q;
  q.temperature = 0.5f;
  q.top_k = 4;
  q.top_p = 0.9f;
  q.min_p = 0.2f;
  q.repetition_penalty = 2.0f;
  q.seed = 99;
  const std::vector<int32_t> history{4, 1};
  std::vector<int> filtered_counts(filtered_logits.size(), 0);
  for (int step = 0; step < draws; ++step) {
    ++filtered_counts[static_cast<size_t>(
        lowbit::sample_token(filtered_logits, q, history, static_cast<uint64_t>(step)))];
  }
  const double top = 1 / (1 + std::exp(-1.0));
  const std::vector<double> filtered_probs{top, 0, 0, 0, 1 - top, 0};
  CHECK(filtered_counts[1] + filtered_counts[2] + filtered_counts[3] + filtered_counts[5] == 0);
  // 1 degree of freedom: P(chi2 > 30) ~ 4e-8.
  CHECK(chi_square(filtered_counts, filtered_probs, draws) < 30.0);
}

TEST_CASE("the same seed repeats, another seed differs", "[sampler]") {
  const std::vector<float> logits = logits_for_weights({1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  SamplingParams p;
  auto sequence = [&](uint64_t seed) {
    p.seed = seed;
    std::vector<int32_t> tokens;
    for (uint64_t step = 0; step < 64; ++step) {
      tokens.push_back(lowbit::sample_token(logits, p, kNoHistory, step));
    }
    return tokens;
  };
  CHECK(sequence(1) == sequence(1));
  CHECK(sequence(1) != sequence(2));
  CHECK(sequence(0) != sequence(1));
}

TEST_CASE("top-k on a 128k vocabulary keeps exactly the k largest", "[sampler]") {
  const size_t vocab = 128256;
  std::vector<float> logits(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    // Distinct values in a scrambled order.
    logits[i] = static_cast<float>((i * 2654435761u) % vocab) / 1000.0f;
  }
  SamplingParams p;
  p.top_k = 40;
  const std::vector<double> probs = lowbit::sampling_distribution(logits, p, kNoHistory);
  std::vector<size_t> order(vocab);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  double kept_mass = 0.0;
  for (size_t rank = 0; rank < vocab; ++rank) {
    const double prob = probs[order[rank]];
    if (rank < 40) {
      CHECK(prob > 0.0);
      kept_mass += prob;
    } else if (prob != 0.0) {
      FAIL("token of rank " << rank << " kept");
    }
  }
  CHECK(kept_mass == Approx(1.0).margin(1e-12));
  const int32_t token = lowbit::sample_token(logits, p, kNoHistory, 3);
  CHECK(probs[static_cast<size_t>(token)] > 0.0);
}
