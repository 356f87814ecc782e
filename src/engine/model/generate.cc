#include "engine/model/generate.h"

#include <chrono>

#include "engine/common/error.h"

namespace trinity {

namespace {

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

const char* FinishReasonName(FinishReason reason) { return reason == FinishReason::kStop ? "stop" : "length"; }

double GenerateResult::tokens_per_second() const {
  return generate_ms > 0.0 ? static_cast<double>(tokens.size()) * 1000.0 / generate_ms : 0.0;
}

double GenerateResult::prompt_tokens_per_second() const {
  return prompt_ms > 0.0 ? static_cast<double>(n_prompt) * 1000.0 / prompt_ms : 0.0;
}

size_t StopPrefixHold(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops) {
    for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  return hold;
}

GenerateResult Generate(Context& context, Sampler& sampler, std::span<const int32_t> prompt,
                        const GenerateOptions& options) {
  if (prompt.empty()) Fail("the prompt is empty");
  if (options.max_tokens < 0) Fail("max_tokens must be >= 0, got {}", options.max_tokens);
  for (const std::string& s : options.stop) {
    if (s.empty()) Fail("stop strings must not be empty");
  }
  const int64_t room = context.n_ctx() - context.n_past();
  if (static_cast<int64_t>(prompt.size()) > room) {
    Fail("the prompt has {} tokens but only {} of the context's {} positions are free", prompt.size(), room,
         context.n_ctx());
  }
  const Tokenizer& tokenizer = context.model().tokenizer();
  const TokenizerData& vocab = tokenizer.data();
  GenerateResult result;
  result.n_prompt = static_cast<int64_t>(prompt.size());

  const auto start = std::chrono::steady_clock::now();
  std::span<const float> logits = context.Eval(prompt);
  result.prompt_ms = MsSince(start);
  std::vector<int32_t> history(prompt.begin(), prompt.end());

  StreamDecoder decoder(tokenizer);
  std::string pending;  // decoded text not yet passed on (may start a stop string)
  size_t emitted = 0;   // bytes of result.text already given to on_text
  auto emit = [&](size_t upto) -> bool {
    if (upto <= emitted) return true;
    const std::string_view piece(result.text.data() + emitted, upto - emitted);
    emitted = upto;
    return !options.on_text || options.on_text(piece);
  };

  auto first_token_time = start;
  bool stop_string_hit = false;
  result.finish_reason = FinishReason::kLength;
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    const int32_t token = sampler.Sample(logits, history);
    if (i == 0) {
      first_token_time = std::chrono::steady_clock::now();
      result.ttft_ms = MsSince(start);
    }
    if (options.stop_at_eog && (token == vocab.eos_id || token == vocab.eot_id)) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    result.tokens.push_back(token);
    history.push_back(token);
    result.text += decoder.Push(token);

    // Stop strings: cut at the first occurrence; hold back a possible partial match.
    bool stopped = false;
    size_t safe = result.text.size();
    for (const std::string& stop : options.stop) {
      const size_t from = emitted > stop.size() ? emitted - stop.size() : 0;
      const size_t at = result.text.find(stop, from);
      if (at != std::string::npos && at < safe) {
        safe = at;
        stopped = true;
      }
    }
    if (stopped) {
      stop_string_hit = true;
      result.text.resize(safe);
      emit(safe);
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (!emit(result.text.size() - StopPrefixHold(result.text, options.stop))) {
      result.cancelled = true;
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (i + 1 == options.max_tokens) break;
    if (context.n_past() >= context.n_ctx()) break;  // context full: finish with kLength
    const int32_t next[1] = {token};
    logits = context.Eval(next);
  }
  if (!result.cancelled && !stop_string_hit) {
    result.text += decoder.Flush();  // bytes of an unfinished character, or held-back stop prefix
    emit(result.text.size());
  }
  result.generate_ms = result.tokens.empty() ? 0.0 : MsSince(first_token_time);
  result.total_ms = MsSince(start);
  return result;
}

}  // namespace trinity
