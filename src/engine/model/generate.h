// Generation: prefill a prompt, then sample token by token with stop conditions and timings.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model/context.h"
#include "engine/sampler/sampler.h"

namespace trinity {

enum class FinishReason { kStop, kLength };
const char* FinishReasonName(FinishReason reason);  // "stop" | "length"

struct GenerateOptions {
  int32_t max_tokens = 128;
  std::vector<std::string> stop;   // stop strings (not included in the output)
  bool stop_at_eog = true;          // stop at EOS / <|eot_id|> (not included in the output)
  // Called with each piece of text as soon as it is final (never half a UTF-8 character, never
  // text that might still turn out to start a stop string). Return false to cancel (finish: stop).
  std::function<bool(std::string_view text)> on_text;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (the stop token excluded)
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  bool cancelled = false;
  int64_t n_prompt = 0;
  double prompt_ms = 0.0;      // prefill time
  double ttft_ms = 0.0;        // start to first generated token
  double generate_ms = 0.0;    // first token sampled to the end
  double total_ms = 0.0;
  int64_t n_generated() const { return static_cast<int64_t>(tokens.size()); }
  // Generated tokens per second over generate_ms (llama.cpp's predicted_per_second).
  double tokens_per_second() const;
  double prompt_tokens_per_second() const;
};

// Evaluates `prompt` (appended to whatever the context already holds) and generates.
// Throws trinity::Error when the prompt does not fit the context; generation stops with
// kLength when the context fills up.
GenerateResult Generate(Context& context, Sampler& sampler, std::span<const int32_t> prompt,
                        const GenerateOptions& options);

// Length of the longest suffix of `text` that is a proper prefix of one of `stops`
// (text that must be held back because a stop string may be starting).
size_t StopPrefixHold(std::string_view text, const std::vector<std::string>& stops);

}  // namespace trinity
