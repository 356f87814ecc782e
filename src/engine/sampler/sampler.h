// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition / presence / frequency
// penalties, logit bias, seeded and reproducible. Stop strings live in generation (they need text).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

namespace trinity {

struct SamplingParams {
  float temperature = 0.8f;        // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 40;              // <= 0: off
  float top_p = 0.95f;             // in (0, 1]; 1: off
  float min_p = 0.05f;             // in [0, 1]; 0: off
  float repeat_penalty = 1.0f;     // llama.cpp style: divide positive logits, multiply negative
  float presence_penalty = 0.0f;   // OpenAI style: minus once per token present
  float frequency_penalty = 0.0f;  // OpenAI style: minus per occurrence
  int32_t penalty_last_n = 64;     // window of recent tokens penalties look at (-1: all)
  std::unordered_map<int32_t, float> logit_bias;  // added to logits (-inf bans; ids past the
                                                  // vocabulary are ignored)
  uint64_t seed = 0xC0FFEE;
};

// Throws trinity::Error naming the parameter when it is out of range: temperature < 0 or not
// finite, top_p not in (0, 1], min_p not in [0, 1], repeat_penalty <= 0 or not finite, presence /
// frequency penalty not finite, penalty_last_n < -1, a logit_bias with a negative id, NaN or +inf.
void Validate(const SamplingParams& params);

// Order (as llama.cpp): logit bias -> penalties -> (greedy) | top-k -> temperature -> softmax ->
// top-p -> min-p -> draw. Reproducible: the same params, seed and inputs give the same tokens, on
// every standard library (the draw uses the raw 64-bit output of std::mt19937_64 only).
// NaN logits count as -inf; when every logit is -inf (after bias and penalties) the result is the
// argmax of the raw logits.
class Sampler {
 public:
  explicit Sampler(SamplingParams params);  // calls Validate()
  // `history` is every token of the sequence so far (prompt and generated), for the penalties.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> history);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch, reused
  std::vector<float> logits_;                          // scratch, reused
  std::vector<int32_t> window_;                        // scratch: sorted penalty window
};

// argmax, lowest index on ties; NaN entries are skipped (0 when every entry is NaN).
int32_t Argmax(std::span<const float> logits);

}  // namespace trinity
