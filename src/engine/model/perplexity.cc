#include "engine/model/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/common/error.h"

namespace trinity {

PerplexityResult Perplexity(const Model& model, std::string_view text, int64_t n_ctx, ContextOptions options,
                            const std::function<void(int64_t, int64_t)>& on_chunk) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer& tokenizer = model.tokenizer();
  const int32_t bos = tokenizer.data().bos_id;
  if (bos < 0) Fail("perplexity needs a BOS token; the model's tokenizer has none");
  if (n_ctx <= 0) n_ctx = std::min<int64_t>(model.config().n_ctx_train, 4096);
  const std::vector<int32_t> ids = tokenizer.Encode(text, false);
  if (ids.empty()) Fail("the text has no tokens");

  PerplexityResult result;
  result.n_tokens = static_cast<int64_t>(ids.size());
  result.n_ctx = n_ctx;
  result.n_chunks = (result.n_tokens + n_ctx - 1) / n_ctx;
  options.n_ctx = n_ctx;
  Context context(model, options);
  const int64_t n_vocab = model.config().n_vocab;
  std::vector<int32_t> input;
  std::vector<float> logits;
  double total = 0.0;
  for (int64_t c = 0; c < result.n_chunks; ++c) {
    const int64_t begin = c * n_ctx;
    const int64_t len = std::min(n_ctx, result.n_tokens - begin);
    input.assign(1, bos);
    input.insert(input.end(), ids.begin() + begin, ids.begin() + begin + len - 1);
    context.Reset();
    context.Eval(input, &logits);
    for (int64_t j = 0; j < len; ++j) {
      const float* row = logits.data() + j * n_vocab;
      const float max_logit = *std::max_element(row, row + n_vocab);
      double sum = 0.0;
      for (int64_t v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max_logit);
      total += std::log(sum) + max_logit - row[ids[begin + j]];
    }
    if (on_chunk) on_chunk(c + 1, result.n_chunks);
  }
  result.nll = total / static_cast<double>(result.n_tokens);
  result.ppl = std::exp(result.nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace trinity
