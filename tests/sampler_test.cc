#include "engine/sampler/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "engine/common/error.h"

namespace trinity {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Plain sampling: every filter off, temperature 1.
SamplingParams Plain(uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

SamplingParams Greedy() {
  SamplingParams p = Plain();
  p.temperature = 0.0f;
  return p;
}

std::vector<float> LogOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Every token drawn in `n_draws` draws.
std::set<int32_t> Support(const SamplingParams& params, const std::vector<float>& logits,
                          int n_draws = 2000) {
  Sampler sampler(params);
  std::set<int32_t> seen;
  for (int i = 0; i < n_draws; ++i) seen.insert(sampler.Sample(logits, {}));
  return seen;
}

std::vector<double> Frequencies(const SamplingParams& params, const std::vector<float>& logits,
                                int n_draws) {
  Sampler sampler(params);
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < n_draws; ++i) freq[sampler.Sample(logits, {})] += 1.0 / n_draws;
  return freq;
}

TEST(ArgmaxTest, LowestIdWinsTiesAndNaNIsSkipped) {
  EXPECT_EQ(Argmax(std::vector<float>{1, 3, 2, 3}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{kNaN, -1, kNaN, -1}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{-kInf, -kInf}), 0);
  EXPECT_EQ(Argmax(std::vector<float>{kNaN, kNaN}), 0);
}

TEST(SamplerTest, GreedyTakesLowestIdOnTies) {
  Sampler sampler(Greedy());
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.5f, 2.0f, 2.0f, -1.0f}, {}), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{7.0f, 7.0f, 7.0f}, {}), 0);
}

TEST(SamplerTest, LogitBiasMinusInfBansEvenInGreedy) {
  SamplingParams p = Greedy();
  p.logit_bias = {{1, -kInf}, {99, 5.0f}};  // an id past the vocabulary is ignored
  Sampler greedy(p);
  EXPECT_EQ(greedy.Sample(std::vector<float>{1.0f, 5.0f, 3.0f}, {}), 2);

  SamplingParams q = Plain();
  q.logit_bias = {{0, -kInf}, {2, -kInf}};
  EXPECT_EQ(Support(q, {0.0f, 0.0f, 0.0f, 0.0f}), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, PositiveBiasChangesGreedyChoice) {
  SamplingParams p = Greedy();
  p.logit_bias = {{0, 4.5f}};
  Sampler sampler(p);
  EXPECT_EQ(sampler.Sample(std::vector<float>{1.0f, 5.0f, 3.0f}, {}), 0);
}

// The logit token `id` has after bias and penalties, pinned exactly: a sentinel token appended
// after the vocabulary (higher id, so it loses ties) beats it only when its logit is larger.
void ExpectPenalised(SamplingParams p, std::vector<float> logits,
                     const std::vector<int32_t>& history, int32_t id, float expected) {
  p.temperature = 0.0f;
  const auto sentinel = static_cast<int32_t>(logits.size());
  for (int32_t i = 0; i < sentinel; ++i) {
    if (i != id) p.logit_bias[i] = -kInf;
  }
  logits.push_back(expected);
  EXPECT_EQ(Sampler(p).Sample(logits, history), id) << "token " << id << " below " << expected;
  logits.back() = std::nextafter(expected, kInf);
  EXPECT_EQ(Sampler(p).Sample(logits, history), sentinel)
      << "token " << id << " above " << expected;
}

TEST(SamplerTest, PenaltiesArithmetic) {
  SamplingParams p = Plain();
  p.repeat_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.penalty_last_n = 3;
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f};
  const std::vector<int32_t> history = {3, 0, 1, 1};  // window (last 3): 0 once, 1 twice
  ExpectPenalised(p, logits, history, 0, 2.0f / 2 - 0.5f - 0.25f * 1);   // 0.25
  ExpectPenalised(p, logits, history, 1, -1.0f * 2 - 0.5f - 0.25f * 2);  // -3
  ExpectPenalised(p, logits, history, 2, 0.5f);                          // not in history
  ExpectPenalised(p, logits, history, 3, 3.0f);                          // outside window

  p.penalty_last_n = -1;  // whole history: token 3 too
  ExpectPenalised(p, logits, history, 3, 3.0f / 2 - 0.5f - 0.25f);
  p.penalty_last_n = 0;  // off
  ExpectPenalised(p, logits, history, 1, -1.0f);
}

TEST(SamplerTest, PenaltiesChangeGreedyChoiceAndLogitBiasComesFirst) {
  SamplingParams p = Greedy();
  p.repeat_penalty = 4.0f;
  const std::vector<float> logits = {4.0f, 3.0f};
  EXPECT_EQ(Sampler(p).Sample(logits, std::vector<int32_t>{0}), 1);  // 4 / 4 = 1 < 3
  // A bias that makes the logit negative: the penalty then multiplies (-2 * 4 = -8).
  p.logit_bias = {{1, -5.0f}};
  p.repeat_penalty = 4.0f;
  ExpectPenalised(p, logits, std::vector<int32_t>{1}, 1, -8.0f);
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  std::mt19937_64 rng(7);
  std::vector<float> logits(1000);
  for (float& l : logits) l = static_cast<float>(rng() % 50);  // many ties
  SamplingParams p = Plain();
  p.top_k = 1;
  p.top_p = 0.5f;
  p.min_p = 0.1f;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    p.seed = seed;
    EXPECT_EQ(Sampler(p).Sample(logits, {}), Argmax(logits));
  }
}

TEST(SamplerTest, TopKKeepsTheKMostLikely) {
  SamplingParams p = Plain();
  p.top_k = 2;
  EXPECT_EQ(Support(p, {1.0f, 3.0f, 2.0f, 2.9f}), (std::set<int32_t>{1, 3}));
  p.top_k = 10;  // more than the vocabulary: off
  EXPECT_EQ(Support(p, {0.0f, 0.0f, 0.0f}), (std::set<int32_t>{0, 1, 2}));
}

// Top-k selects the k best in one pass with a heap; the draw must be the one a partial_sort of all
// candidates (higher logit first, lower id on ties) followed by the specified draw gives. Rows
// with many ties and some impossible tokens; the draw depends on the survivors' order, so this
// checks the order too.
TEST(SamplerTest, TopKMatchesPartialSortReference) {
  std::mt19937_64 rows(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(3000);
    for (float& l : logits) l = static_cast<float>(rows() % 8);  // ties everywhere
    for (int i = 0; i < 50; ++i) logits[rows() % logits.size()] = i % 2 ? -kInf : kNaN;
    for (int top_k : {1, 3, 40, 1000}) {
      SamplingParams p = Plain(100 + trial);
      p.top_k = top_k;
      Sampler sampler(p);
      std::mt19937_64 rng(100 + trial);
      std::vector<std::pair<float, int32_t>> ref;
      for (size_t i = 0; i < logits.size(); ++i) {
        if (!std::isnan(logits[i]) && logits[i] != -kInf) ref.emplace_back(logits[i], static_cast<int32_t>(i));
      }
      std::partial_sort(ref.begin(), ref.begin() + top_k, ref.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      ref.resize(static_cast<size_t>(top_k));
      double sum = 0.0;
      std::vector<float> probs;
      for (const auto& [l, id] : ref) {
        probs.push_back(std::exp((l - ref.front().first) / 1.0f));
        sum += probs.back();
      }
      for (int draw = 0; draw < 50; ++draw) {
        const double target = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
        double cumulative = 0.0;
        int32_t expected = ref.back().second;
        for (size_t i = 0; i < ref.size(); ++i) {
          cumulative += probs[i];
          if (cumulative > target) {
            expected = ref[i].second;
            break;
          }
        }
        ASSERT_EQ(sampler.Sample(logits, {}), expected) << "trial " << trial << " top_k " << top_k << " draw " << draw;
      }
    }
  }
}

TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  const std::vector<float> logits = LogOf({0.15, 0.5, 0.05, 0.3});
  SamplingParams p = Plain();
  p.top_p = 0.45f;
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{1}));
  p.top_p = 0.75f;
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{1, 3}));
  p.top_p = 0.9f;
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{0, 1, 3}));
  p.top_p = 1.0f;
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{0, 1, 2, 3}));
  // The survivors are renormalised: 0.5 / 0.8 and 0.3 / 0.8.
  p.top_p = 0.75f;
  const std::vector<double> freq = Frequencies(p, logits, 20000);
  EXPECT_NEAR(freq[1], 0.625, 0.02);
  EXPECT_NEAR(freq[3], 0.375, 0.02);
}

// A flat row of 1000 equal logits needs 601 tokens for 60.05% of the mass: ids 0..600 (lowest id
// first on ties). Nothing can be pruned before the sort here.
TEST(SamplerTest, TopPOnAFlatRow) {
  SamplingParams p = Plain(9);
  p.top_p = 0.6005f;
  std::set<int32_t> expected;
  for (int32_t i = 0; i <= 600; ++i) expected.insert(i);
  EXPECT_EQ(Support(p, std::vector<float>(1000, 0.0f), 10000), expected);
  // With top-k in front the same rule applies to the k survivors.
  p.top_k = 700;
  EXPECT_EQ(Support(p, std::vector<float>(1000, 0.0f), 10000),
            (std::set<int32_t>(expected.begin(), std::next(expected.begin(), 421))));
}

// Top-p prunes unlikely tokens before sorting; the kept set must be the one a full sort gives.
TEST(SamplerTest, TopPMatchesFullSortReference) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(5000);
  for (float& l : logits) l = normal(rng);
  for (float top_p : {0.3f, 0.9f, 0.99f}) {
    SamplingParams p = Plain(5);
    p.top_p = top_p;
    // Reference: sort everything by probability, take the smallest prefix reaching top_p.
    std::vector<std::pair<double, int32_t>> order;
    double total = 0.0;
    for (size_t i = 0; i < logits.size(); ++i) {
      order.emplace_back(std::exp(static_cast<double>(logits[i])), static_cast<int32_t>(i));
      total += order.back().first;
    }
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    std::set<int32_t> allowed;
    double cumulative = 0.0;
    for (const auto& [prob, id] : order) {
      allowed.insert(id);
      cumulative += prob;
      if (cumulative >= top_p * total) break;
    }
    const std::set<int32_t> seen = Support(p, logits, 1000);
    for (int32_t id : seen) EXPECT_TRUE(allowed.count(id)) << "token " << id << " top_p " << top_p;
    EXPECT_TRUE(seen.count(order.front().second));
  }
}

TEST(SamplerTest, TinyTemperatureIsNearlyGreedy) {
  SamplingParams p = Plain();
  p.temperature = 1e-40f;  // denormal: 1 / T overflows
  EXPECT_EQ(Support(p, {1.0f, 3.0f, 2.0f, 3.0f}, 200), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(Support(p, {1.0f, 3.0f, 2.0f, 2.5f}, 200), (std::set<int32_t>{1}));
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  const std::vector<float> logits = LogOf({0.15, 0.5, 0.05, 0.3});
  SamplingParams p = Plain();
  p.min_p = 0.2f;  // threshold 0.1
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{0, 1, 3}));
  p.min_p = 0.5f;  // threshold 0.25
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{1, 3}));
  p.min_p = 1.0f;
  EXPECT_EQ(Support(p, logits), (std::set<int32_t>{1}));
}

TEST(SamplerTest, FrequenciesMatchSoftmaxWithTemperature) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.3f, 2.0f};
  for (float temperature : {0.7f, 1.0f, 1.5f}) {
    SamplingParams p = Plain(42);
    p.temperature = temperature;
    const std::vector<double> freq = Frequencies(p, logits, 20000);
    double sum = 0.0;
    std::vector<double> expected;
    for (float l : logits) expected.push_back(std::exp(l / temperature));
    for (double e : expected) sum += e;
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_NEAR(freq[i], expected[i] / sum, 0.02) << "token " << i << " T " << temperature;
    }
  }
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedsDiffer) {
  std::vector<float> logits(1000, 0.0f);
  std::vector<int32_t> a, b, c;
  Sampler sa(Plain(123)), sb(Plain(123)), sc(Plain(124));
  for (int i = 0; i < 200; ++i) {
    a.push_back(sa.Sample(logits, {}));
    b.push_back(sb.Sample(logits, {}));
    c.push_back(sc.Sample(logits, {}));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// The draw is specified, not left to the standard library: u = (x >> 11) * 2^-53 for x the raw
// std::mt19937_64 output (itself fully specified by the C++ standard). With a uniform row the
// token is exactly floor(u * n_vocab).
TEST(SamplerTest, DrawIsPortable) {
  constexpr int kVocab = 1000;
  std::vector<float> logits(kVocab, 0.0f);
  Sampler sampler(Plain(2024));
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 100; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    EXPECT_EQ(sampler.Sample(logits, {}), static_cast<int32_t>(u * kVocab));
  }
}

TEST(SamplerTest, NaNLogitsNeverChosenAndAllBannedFallsBack) {
  SamplingParams p = Plain();
  EXPECT_EQ(Support(p, {kNaN, 0.0f, kNaN, 0.0f}), (std::set<int32_t>{1, 3}));
  // Every token banned: the argmax of the raw logits.
  p.logit_bias = {{0, -kInf}, {1, -kInf}, {2, -kInf}};
  EXPECT_EQ(Sampler(p).Sample(std::vector<float>{1.0f, 3.0f, 2.0f}, {}), 1);
  p.temperature = 0.0f;
  EXPECT_EQ(Sampler(p).Sample(std::vector<float>{1.0f, 3.0f, 2.0f}, {}), 1);
  // All NaN, all -inf: no crash, token 0.
  EXPECT_EQ(Sampler(Plain()).Sample(std::vector<float>{kNaN, kNaN}, {}), 0);
  EXPECT_EQ(Sampler(Plain()).Sample(std::vector<float>{-kInf, -kInf}, {}), 0);
  // +inf wins outright.
  EXPECT_EQ(Support(Plain(), {0.0f, kInf, 5.0f}), (std::set<int32_t>{1}));
}

TEST(SamplerTest, EmptyLogitsThrow) {
  Sampler sampler(Plain());
  EXPECT_THROW(sampler.Sample(std::span<const float>{}, {}), Error);
}

TEST(SamplerTest, FullVocabularyDefaultsAndTopPWithoutTopK) {
  constexpr int kVocab = 128256;
  std::mt19937_64 rng(3);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = static_cast<float>(rng() >> 40) * 0x1.0p-24f * 20.0f - 10.0f;
  std::vector<int32_t> history;
  SamplingParams defaults;
  defaults.repeat_penalty = 1.1f;
  SamplingParams top_p_only = Plain();
  top_p_only.top_p = 0.9f;
  for (const SamplingParams& p : {defaults, top_p_only}) {
    Sampler sampler(p);
    for (int i = 0; i < 20; ++i) {
      const int32_t id = sampler.Sample(logits, history);
      ASSERT_GE(id, 0);
      ASSERT_LT(id, kVocab);
      history.push_back(id);
    }
  }
}

TEST(SamplerTest, ValidateRejectsOutOfRange) {
  EXPECT_NO_THROW(Validate(SamplingParams{}));
  EXPECT_NO_THROW(Validate(Greedy()));
  const auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    EXPECT_THROW(Validate(p), Error);
    EXPECT_THROW(Sampler{p}, Error);
  };
  bad([](SamplingParams& p) { p.temperature = -0.1f; });
  bad([](SamplingParams& p) { p.temperature = kNaN; });
  bad([](SamplingParams& p) { p.temperature = kInf; });
  bad([](SamplingParams& p) { p.top_p = 0.0f; });
  bad([](SamplingParams& p) { p.top_p = 1.5f; });
  bad([](SamplingParams& p) { p.top_p = kNaN; });
  bad([](SamplingParams& p) { p.min_p = -0.1f; });
  bad([](SamplingParams& p) { p.min_p = 1.1f; });
  bad([](SamplingParams& p) { p.min_p = kNaN; });
  bad([](SamplingParams& p) { p.repeat_penalty = 0.0f; });
  bad([](SamplingParams& p) { p.repeat_penalty = -1.0f; });
  bad([](SamplingParams& p) { p.repeat_penalty = kNaN; });
  bad([](SamplingParams& p) { p.presence_penalty = kNaN; });
  bad([](SamplingParams& p) { p.frequency_penalty = kInf; });
  bad([](SamplingParams& p) { p.penalty_last_n = -2; });
  bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; });
  bad([](SamplingParams& p) { p.logit_bias = {{5, kNaN}}; });
  bad([](SamplingParams& p) { p.logit_bias = {{5, kInf}}; });
  try {
    SamplingParams p;
    p.top_p = 2.0f;
    Validate(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trinity
