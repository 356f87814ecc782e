// Perplexity of a model over a text, with the windowing of tools/train/eval_ppl.py:
//   1. tokenize the whole text once (no BOS, special-token text as plain text): ids[0..N-1];
//   2. cut ids into consecutive chunks of n_ctx tokens (the last may be shorter);
//   3. evaluate each chunk c in a fresh context fed [BOS, c[0], ..., c[L-2]]; the logits at
//      position j score c[j], so every token is scored once;
//   4. nll = sum(-log softmax(logits)[target]) / N (in double), ppl = exp(nll).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "engine/model/context.h"

namespace trinity {

struct PerplexityResult {
  int64_t n_tokens = 0;
  int64_t n_chunks = 0;
  int64_t n_ctx = 0;
  double nll = 0.0;  // mean negative log-likelihood per token, nats
  double ppl = 0.0;
  double seconds = 0.0;
};

// n_ctx 0: the model's training context (at most 4096). on_chunk(done, total) reports progress.
PerplexityResult Perplexity(const Model& model, std::string_view text, int64_t n_ctx, ContextOptions options,
                            const std::function<void(int64_t, int64_t)>& on_chunk = nullptr);

}  // namespace trinity
