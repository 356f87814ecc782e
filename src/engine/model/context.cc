// The reference forward pass: plain C++, one token at a time, the oracle for faster paths.
//
//   x = token_embd[token]
//   per layer:
//     a   = attn_norm(x)
//     q,k,v = Wq a, Wk a, Wv a            (BitLinear: int8 per-token activations, ternary weights)
//     RoPE(q), RoPE(k); append k, v to the cache
//     att = softmax(q k^T / sqrt(head_dim)) v   (causal, grouped-query)
//     x  += Wo attn_sub_norm(att)
//     m   = ffn_norm(x)
//     x  += Wdown ffn_sub_norm(act(Wgate m) * (Wup m))    act = relu^2 (or SiLU)
//   logits = lm_head . output_norm(x)
#include "engine/model/context.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/common/error.h"

namespace trinity {

Context::Context(const Model& model, ContextOptions options)
    : model_(model),
      config_(model.config()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min<int64_t>(config_.n_ctx_train, 4096)),
      pool_(options.n_threads > 0 ? options.n_threads : ThreadPool::DefaultThreads()) {
  if (n_ctx_ <= 0 || n_ctx_ > (int64_t{1} << 20)) Fail("context size {} is out of range", n_ctx_);
  const ModelConfig& c = config_;
  const size_t kv = static_cast<size_t>(c.n_layer * n_ctx_ * c.n_embd_kv());
  k_cache_.assign(kv, 0.0f);
  v_cache_.assign(kv, 0.0f);
  const size_t wide = static_cast<size_t>(std::max(c.n_embd, c.n_ff));
  x_.resize(c.n_embd);
  xn_.resize(wide);
  q_.resize(c.n_embd);
  att_.resize(c.n_embd);
  tmp_.resize(c.n_embd);
  gate_.resize(c.n_ff);
  up_.resize(c.n_ff);
  act_q_.resize(wide);
  scores_.resize(static_cast<size_t>(c.n_head * n_ctx_));
  logits_.resize(c.n_vocab);
}

void Context::Truncate(int64_t n) {
  if (n < 0 || n > n_past_) Fail("cannot truncate a context of {} positions to {}", n_past_, n);
  n_past_ = n;
}

void Context::Linear(const TernaryWeight& w, const float* x, float* y) {
  const float act_scale = kernels::QuantizeActivations(x, w.view.n_in, act_q_.data());
  pool_.ParallelFor(
      w.view.n_out, [&](int64_t begin, int64_t end) { kernels::TernaryMatVec(w.view, act_q_.data(), act_scale, y, begin, end); },
      16);
}

std::span<const float> Context::Eval(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
  if (tokens.empty()) Fail("Eval needs at least one token");
  if (n_past_ + static_cast<int64_t>(tokens.size()) > n_ctx_) {
    Fail("the context is full: {} positions used + {} new tokens > context size {}", n_past_, tokens.size(), n_ctx_);
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= config_.n_vocab) Fail("token id {} is out of range [0, {})", t, config_.n_vocab);
  }
  if (all_logits) all_logits->resize(tokens.size() * static_cast<size_t>(config_.n_vocab));
  for (size_t i = 0; i < tokens.size(); ++i) {
    EvalToken(tokens[i], n_past_);
    ++n_past_;
    if (all_logits) std::copy(logits_.begin(), logits_.end(), all_logits->begin() + i * config_.n_vocab);
  }
  return logits_;
}

void Context::EvalToken(int32_t token, int64_t pos) {
  const ModelConfig& c = config_;
  const int64_t n_kv = c.n_embd_kv();
  kernels::DenseRow(model_.token_embd(), token, x_.data());

  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& l = model_.layers()[static_cast<size_t>(il)];
    float* k_cache = k_cache_.data() + il * n_ctx_ * n_kv;
    float* v_cache = v_cache_.data() + il * n_ctx_ * n_kv;

    // Attention block.
    kernels::RmsNorm(x_.data(), l.attn_norm, c.n_embd, c.rms_eps, xn_.data());
    {
      // q, k and v share one activation quantisation (same input).
      const float act_scale = kernels::QuantizeActivations(xn_.data(), c.n_embd, act_q_.data());
      float* k = k_cache + pos * n_kv;
      float* v = v_cache + pos * n_kv;
      pool_.ParallelFor(c.n_embd + 2 * n_kv, [&](int64_t begin, int64_t end) {
        // Rows [0, n_embd) are q, then k, then v.
        auto run = [&](const TernaryWeight& w, float* y, int64_t offset) {
          const int64_t b = std::clamp(begin - offset, int64_t{0}, w.view.n_out);
          const int64_t e = std::clamp(end - offset, int64_t{0}, w.view.n_out);
          if (b < e) kernels::TernaryMatVec(w.view, act_q_.data(), act_scale, y, b, e);
        };
        run(l.wq, q_.data(), 0);
        run(l.wk, k, c.n_embd);
        run(l.wv, v, c.n_embd + n_kv);
      }, 16);
      kernels::RopeNeox(q_.data(), c.n_head, c.head_dim, c.n_rot, pos, c.rope_theta);
      kernels::RopeNeox(k, c.n_head_kv, c.head_dim, c.n_rot, pos, c.rope_theta);
    }
    pool_.ParallelFor(c.n_head, [&](int64_t begin, int64_t end) {
      kernels::Attention(q_.data(), k_cache, v_cache, pos + 1, c.n_head, c.n_head_kv, c.head_dim, att_.data(),
                         scores_.data() + begin * n_ctx_, begin, end);
    });
    kernels::RmsNorm(att_.data(), l.attn_sub_norm, c.n_embd, c.rms_eps, att_.data());
    Linear(l.wo, att_.data(), tmp_.data());
    for (int64_t i = 0; i < c.n_embd; ++i) x_[i] += tmp_[i];

    // Feed-forward block.
    kernels::RmsNorm(x_.data(), l.ffn_norm, c.n_embd, c.rms_eps, xn_.data());
    {
      const float act_scale = kernels::QuantizeActivations(xn_.data(), c.n_embd, act_q_.data());
      pool_.ParallelFor(2 * c.n_ff, [&](int64_t begin, int64_t end) {
        const int64_t gb = std::min(begin, c.n_ff), ge = std::min(end, c.n_ff);
        if (gb < ge) kernels::TernaryMatVec(l.w_gate.view, act_q_.data(), act_scale, gate_.data(), gb, ge);
        const int64_t ub = std::max(begin, c.n_ff) - c.n_ff, ue = std::max(end, c.n_ff) - c.n_ff;
        if (ub < ue) kernels::TernaryMatVec(l.w_up.view, act_q_.data(), act_scale, up_.data(), ub, ue);
      }, 16);
    }
    for (int64_t i = 0; i < c.n_ff; ++i) {
      const float g = gate_[i];
      const float a = c.activation == FfnActivation::kRelu2 ? (g > 0.0f ? g * g : 0.0f) : g / (1.0f + std::exp(-g));
      gate_[i] = a * up_[i];
    }
    kernels::RmsNorm(gate_.data(), l.ffn_sub_norm, c.n_ff, c.rms_eps, gate_.data());
    Linear(l.w_down, gate_.data(), tmp_.data());
    for (int64_t i = 0; i < c.n_embd; ++i) x_[i] += tmp_[i];
  }

  kernels::RmsNorm(x_.data(), model_.output_norm(), c.n_embd, c.rms_eps, xn_.data());
  pool_.ParallelFor(c.n_vocab, [&](int64_t begin, int64_t end) {
    kernels::DenseMatVec(model_.lm_head(), xn_.data(), logits_.data(), begin, end);
  }, 256);
}

}  // namespace trinity
