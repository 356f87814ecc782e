#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "engine/common/error.h"

namespace trinity {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using Candidate = std::pair<float, int32_t>;  // (logit, then probability; token id)

// Total order: higher value first, lower id on ties. A total order makes nth_element,
// partial_sort and sort give one result on every standard library.
bool Before(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// A double in [0, 1) from the 53 high bits of one 64-bit draw. Portable, unlike
// std::uniform_real_distribution, whose algorithm is left to the standard library.
double UniformDouble(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

void Validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    Fail("sampling: temperature must be a finite number >= 0 (0 is greedy), got {}", p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    Fail("sampling: top_p must be in (0, 1] (1 turns it off), got {}", p.top_p);
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    Fail("sampling: min_p must be in [0, 1] (0 turns it off), got {}", p.min_p);
  }
  if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty)) {
    Fail("sampling: repeat_penalty must be a finite number > 0 (1 turns it off), got {}",
         p.repeat_penalty);
  }
  if (!std::isfinite(p.presence_penalty)) {
    Fail("sampling: presence_penalty must be finite, got {}", p.presence_penalty);
  }
  if (!std::isfinite(p.frequency_penalty)) {
    Fail("sampling: frequency_penalty must be finite, got {}", p.frequency_penalty);
  }
  if (p.penalty_last_n < -1) {
    Fail("sampling: penalty_last_n must be >= -1 (-1: whole history, 0: off), got {}",
         p.penalty_last_n);
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0) Fail("sampling: logit_bias token id must be >= 0, got {}", id);
    // -inf bans a token; +inf would turn the softmax into inf - inf = NaN.
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity()) {
      Fail("sampling: logit_bias for token {} must be a number or -inf, got {}", id, bias);
    }
  }
}

int32_t Argmax(std::span<const float> logits) {
  int32_t best = -1;
  float best_value = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (best < 0 || v > best_value) {  // strict: the lowest id wins ties
      best = static_cast<int32_t>(i);
      best_value = v;
    }
  }
  return best < 0 ? 0 : best;
}

Sampler::Sampler(SamplingParams params) : params_(std::move(params)) {
  Validate(params_);
  rng_.seed(params_.seed);
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  const size_t n_vocab = logits.size();
  if (n_vocab == 0) Fail("sampling: empty logits row");
  if (n_vocab > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    Fail("sampling: logits row of {} entries is too long", n_vocab);
  }
  const auto in_vocab = [n_vocab](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < n_vocab;
  };
  logits_.assign(logits.begin(), logits.end());  // (n_vocab) f32

  // 1. Logit bias.
  for (const auto& [id, bias] : params_.logit_bias) {
    if (in_vocab(id)) logits_[id] += bias;
  }

  // 2. Penalties over the last penalty_last_n tokens of the history. Distinct tokens and their
  // counts come from sorting a copy of the window (no hashing, small: 64 by default).
  const bool repeat = params_.repeat_penalty != 1.0f;
  const bool additive = params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if ((repeat || additive) && params_.penalty_last_n != 0 && !history.empty()) {
    size_t n_window = history.size();
    if (params_.penalty_last_n > 0) {
      n_window = std::min(n_window, static_cast<size_t>(params_.penalty_last_n));
    }
    window_.assign(history.end() - n_window, history.end());
    std::sort(window_.begin(), window_.end());
    for (size_t i = 0; i < window_.size();) {
      size_t j = i;
      while (j < window_.size() && window_[j] == window_[i]) ++j;
      const int32_t id = window_[i];
      const auto count = static_cast<float>(j - i);
      i = j;
      if (!in_vocab(id)) continue;
      float& l = logits_[id];
      if (repeat) l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
      l -= params_.presence_penalty + params_.frequency_penalty * count;
    }
  }

  // NaN (from the model, or -inf + bias) counts as -inf; +inf becomes the largest finite value
  // so that the softmax below never computes inf - inf.
  size_t n_possible = 0;
  for (float& l : logits_) {
    if (std::isnan(l)) {
      l = kNegInf;
    } else if (l == std::numeric_limits<float>::infinity()) {
      l = std::numeric_limits<float>::max();
    }
    n_possible += l != kNegInf;
  }
  // Everything banned or broken: fall back to the model's own choice.
  if (n_possible == 0) return Argmax(logits);

  // 3. Greedy.
  if (params_.temperature <= 0.0f) return Argmax(logits_);

  // 4. Top-k, and the candidates: every token that is still possible, or with top-k only the k
  // best, sorted (what top-p needs; exp keeps the order). The k best come from one pass with a
  // heap of k whose front is the worst kept: a token enters only when its logit beats that one
  // (strictly: tokens come in id order, so on a tie the kept one has the lower id and wins, as
  // Before says). Same survivors in the same order as a partial_sort of all candidates, at about
  // one compare per token instead of the whole vocabulary copied and partially sorted (a fifth
  // of a small model's time per token was sampling, measured with perf).
  candidates_.clear();
  bool sorted = false;
  const auto top_k = static_cast<size_t>(std::max(params_.top_k, 0));
  if (top_k > 0 && top_k < n_possible) {
    for (size_t i = 0; i < n_vocab; ++i) {
      const float l = logits_[i];
      if (l == kNegInf) continue;
      if (candidates_.size() < top_k) {
        candidates_.emplace_back(l, static_cast<int32_t>(i));
        std::push_heap(candidates_.begin(), candidates_.end(), Before);
      } else if (l > candidates_.front().first) {
        std::pop_heap(candidates_.begin(), candidates_.end(), Before);
        candidates_.back() = {l, static_cast<int32_t>(i)};
        std::push_heap(candidates_.begin(), candidates_.end(), Before);
      }
    }
    std::sort_heap(candidates_.begin(), candidates_.end(), Before);
    sorted = true;
  } else {
    for (size_t i = 0; i < n_vocab; ++i) {
      if (logits_[i] != kNegInf) candidates_.emplace_back(logits_[i], static_cast<int32_t>(i));
    }
  }

  // 5-6. Temperature and softmax, unnormalised: p_i = exp((l_i - l_max) / T), so p_max = 1.
  // Divides (not multiplies by 1 / T): a tiny T would make 1 / T = inf and 0 * inf = NaN.
  // From here on candidates_ holds probabilities; sums are in double.
  float max_logit = kNegInf;
  for (const auto& c : candidates_) max_logit = std::max(max_logit, c.first);
  double sum = 0.0;
  for (auto& c : candidates_) {
    c.first = std::exp((c.first - max_logit) / params_.temperature);
    sum += c.first;
  }

  // 7. Top-p: the smallest prefix (in probability order) whose mass reaches top_p; at least 1.
  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * sum;
    if (!sorted) {
      // Tokens with p < eps hold less than n * eps = (1 - top_p) / 2 of the mass together, so the
      // prefix reaching top_p lies among the others: drop them, then sort once what is left (a
      // few hundred tokens for a peaked row, instead of the whole vocabulary). The prefix is the
      // one a full sort would give.
      const double eps =
          0.5 * (1.0 - params_.top_p) * sum / static_cast<double>(candidates_.size());
      std::erase_if(candidates_, [eps](const Candidate& c) { return c.first < eps; });
      std::sort(candidates_.begin(), candidates_.end(), Before);
    }
    double cumulative = 0.0;
    size_t keep = candidates_.size();
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cumulative += candidates_[i].first;
      if (cumulative >= target) {
        keep = i + 1;
        break;
      }
    }
    candidates_.resize(keep);
    sum = cumulative;
  }

  // 8. Min-p: drop tokens with p < min_p * p_max, p_max = 1 (the ratio does not depend on
  // normalisation). The most likely token always survives since min_p <= 1.
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p;
    std::erase_if(candidates_, [threshold](const Candidate& c) { return c.first < threshold; });
    sum = 0.0;
    for (const auto& c : candidates_) sum += c.first;
  }

  // 9. Renormalise and draw: the first candidate whose cumulative mass exceeds u * sum.
  const double target = UniformDouble(rng_) * sum;
  double cumulative = 0.0;
  int32_t last_possible = candidates_.front().second;
  for (const auto& c : candidates_) {
    cumulative += c.first;
    if (cumulative > target) return c.second;
    if (c.first > 0.0f) last_possible = c.second;
  }
  return last_possible;  // rounding: u * sum at the very top
}

}  // namespace trinity
