// An inference context: one sequence's KV cache plus the scratch buffers of the forward pass.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/common/thread_pool.h"
#include "engine/model/model.h"

namespace trinity {

struct ContextOptions {
  int64_t n_ctx = 0;    // 0: the model's training context, at most 4096
  int n_threads = 0;    // 0: one per available core
};

class Context {
 public:
  Context(const Model& model, ContextOptions options = {});

  // Runs `tokens` at positions n_past() .. n_past()+n-1, appending them to the KV cache, and
  // returns the logits of the last one (n_vocab floats, valid until the next call). When
  // `all_logits` is given it receives the logits of every token, [n][n_vocab].
  // Throws trinity::Error for an out-of-range token or when the context would overflow.
  std::span<const float> Eval(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr);

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  void Reset() { n_past_ = 0; }
  // Forgets every position from n on (n <= n_past()).
  void Truncate(int64_t n);
  const Model& model() const { return model_; }
  ThreadPool& pool() { return pool_; }

 private:
  void EvalToken(int32_t token, int64_t pos);
  void Linear(const TernaryWeight& w, const float* x, float* y);  // y = W x with int8-quantised x

  const Model& model_;
  ModelConfig config_;
  int64_t n_ctx_;
  int64_t n_past_ = 0;
  ThreadPool pool_;

  // KV cache, f32: (n_layer, n_ctx, n_embd_kv) each.
  std::vector<float> k_cache_, v_cache_;
  // Scratch: x (n_embd) residual stream, xn (max(n_embd, n_ff)) normed input, q (n_embd),
  // att (n_embd), gate/up (n_ff), act_q (max(n_embd, n_ff)) int8, scores (n_threads * n_ctx).
  std::vector<float> x_, xn_, q_, att_, tmp_, gate_, up_, scores_, logits_;
  std::vector<int8_t> act_q_;
};

}  // namespace trinity
