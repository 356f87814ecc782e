// Continuous batching: several sequences share each forward step.
//
// Every context attached to a Batcher (ContextOptions::batcher) keeps its own KV cache, but its
// Eval calls do not compute: they queue the tokens and block. One step thread repeatedly takes
// what is queued — the next token of every decoding sequence, then chunks of waiting prompts up
// to kMaxBatch rows in all — and evaluates it as one forward pass (Context::EvalRows): every
// weight matrix, the LM head included, is streamed from memory once per step for all sequences
// instead of once per sequence. Sequences join between steps and leave when they stop calling.
//
// After a step the thread waits a little (at most a quarter of a step, at most `gather`) for the
// sequences of that step to come back with their next token, so that decoding sequences stay in
// one step instead of alternating between two. Context::Idle() says a sequence is not coming
// back (its request ended), so the wait does not wait for it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "engine/kernels/cpu.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace trinity {

struct BatcherOptions {
  int64_t n_ctx = 0;    // the largest context size of the attached sequences (0: the model's, <= 4096)
  int n_threads = 0;    // threads of the forward pass (0: one per available core)
  std::optional<kernels::CpuPath> cpu_path;        // unset: kernels::ActiveCpuPath()
  LmHeadFormat lm_head = LmHeadFormat::kFile;      // the batched pass's LM head (kQ8: the 8-bit copy)
  int64_t max_rows = Context::kMaxBatch;           // rows per step, 1 .. kMaxBatch
  std::chrono::microseconds gather{20000};         // longest wait for returning sequences
};

struct BatcherStats {
  uint64_t steps = 0;
  uint64_t rows = 0;         // rows evaluated, all steps together
  uint64_t decode_rows = 0;  // of which rows of single-token requests (decoding)
  double busy_seconds = 0.0; // time inside the steps' forward passes (the rest: gathering, idle)
};

class Batcher {
 public:
  Batcher(const Model& model, BatcherOptions options = {});
  ~Batcher();  // the attached contexts must be gone (or idle) by then
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  BatcherStats stats() const;
  int n_threads() const { return engine_.pool_.n_threads(); }
  int64_t n_ctx() const { return engine_.n_ctx(); }

 private:
  friend class Context;
  // A queued Eval: tokens of one sequence, `done` of them evaluated so far.
  struct Request {
    Context* seq;
    std::span<const int32_t> tokens;
    float* all_logits;  // [tokens][n_vocab] or null (then only the last token's, into seq->logits_)
    size_t done = 0;
    bool finished = false;
    std::exception_ptr error;
  };

  // Context's side (validated by Context::Eval): blocks until the tokens are evaluated.
  void Eval(Context& seq, std::span<const int32_t> tokens, float* all_logits);
  void Idle(Context& seq);
  void Detach(Context& seq);

  void Loop();
  bool ExpectedAllBack() const;  // under mu_

  Context engine_;  // scratch and threads of the forward pass; no KV cache
  const int64_t max_rows_;
  const std::chrono::microseconds gather_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // a request arrived, a sequence went idle, or stopping
  std::condition_variable done_cv_;  // a step finished
  std::deque<Request*> pending_;
  std::vector<Context*> expected_;   // sequences of the last step whose request it finished
  std::chrono::nanoseconds last_step_{0};
  bool stopping_ = false;
  std::atomic<uint64_t> steps_{0}, rows_{0}, decode_rows_{0}, busy_ns_{0};
  std::thread thread_;
};

}  // namespace trinity
