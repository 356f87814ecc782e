// Continuous batching (engine/model/batcher.h) against contexts that compute alone, on the
// synthetic tiny model ($TRINITY_TEST_MODEL).
//
// Every row of a batched step is computed by the same kernels as a row of a lone context: the
// ternary matmuls, norms and quantisation are per row, attention per row and head, and each LM-head
// logit is one row's dot product whatever block it is computed in. So the logits must be
// bit-identical, whichever sequences share the steps and however prompts are chunked.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/common/error.h"
#include "engine/model/batcher.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace trinity {
namespace {

std::string TestModel() {
  const char* path = std::getenv("TRINITY_TEST_MODEL");
  return path ? path : "";
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (TestModel().empty()) GTEST_SKIP() << "TRINITY_TEST_MODEL is not set";
    model_ = Model::Load(TestModel());
  }

  // A prompt of `n` random tokens (seeded by `seed`).
  std::vector<int32_t> Prompt(int n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(model_->config().n_vocab) - 1);
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (auto& t : p) t = dist(rng);
    return p;
  }

  // Prefill `prompt`, then greedy decoding of `steps` tokens; returns every logits vector seen
  // (the prompt's last, then one per step).
  static std::vector<std::vector<float>> Run(Context& ctx, const std::vector<int32_t>& prompt, int steps) {
    std::vector<std::vector<float>> out;
    std::span<const float> logits = ctx.Eval(prompt);
    out.emplace_back(logits.begin(), logits.end());
    for (int i = 0; i < steps; ++i) {
      const int32_t next = Argmax(logits);
      logits = ctx.Eval(std::span<const int32_t>(&next, 1));
      out.emplace_back(logits.begin(), logits.end());
    }
    ctx.Idle();
    return out;
  }

  std::unique_ptr<Model> model_;
};

TEST_F(BatcherTest, ConcurrentSequencesMatchLoneContextsExactly) {
  constexpr int kSeqs = 5;
  constexpr int kSteps = 12;
  // Prompt lengths around and above a step's 64 rows, so prompts are chunked and share steps
  // with decoding sequences.
  const int lengths[kSeqs] = {3, 70, 1, 17, 130};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<std::vector<float>>> want;
  // Odd sequences keep an f16 KV cache: one step mixes both cache types.
  auto cache_of = [](int s) { return s % 2 ? KvCacheType::kF16 : KvCacheType::kF32; };
  for (int s = 0; s < kSeqs; ++s) {
    prompts.push_back(Prompt(lengths[s], 100 + s));
    ContextOptions co(256, 1);
    co.kv_cache = cache_of(s);
    Context lone(*model_, co);
    want.push_back(Run(lone, prompts[s], kSteps));
  }

  // Repeated until some step held rows of several sequences (the threads start together, so the
  // first attempt nearly always does; a loaded machine may serialise one attempt).
  bool shared_steps = false;
  for (int attempt = 0; attempt < 5 && !shared_steps; ++attempt) {
    BatcherOptions bo;
    bo.n_ctx = 256;
    bo.n_threads = 2;
    Batcher batcher(*model_, bo);
    std::vector<std::vector<std::vector<float>>> got(kSeqs);
    {
      std::barrier start(kSeqs);
      std::vector<std::thread> threads;
      for (int s = 0; s < kSeqs; ++s) {
        threads.emplace_back([&, s] {
          ContextOptions co(256);
          co.batcher = &batcher;
          co.kv_cache = cache_of(s);
          Context ctx(*model_, co);
          start.arrive_and_wait();
          got[s] = Run(ctx, prompts[s], kSteps);
        });
      }
      for (auto& t : threads) t.join();
    }
    for (int s = 0; s < kSeqs; ++s) {
      ASSERT_EQ(got[s].size(), want[s].size());
      for (size_t i = 0; i < want[s].size(); ++i) {
        ASSERT_EQ(got[s][i], want[s][i]) << "sequence " << s << ", logits " << i << " (attempt " << attempt << ")";
      }
    }
    const BatcherStats st = batcher.stats();
    shared_steps = st.rows > st.steps && st.decode_rows > 0;
    // Rows: every prompt token and every decoded token, each exactly once.
    uint64_t rows = 0;
    for (int s = 0; s < kSeqs; ++s) rows += static_cast<uint64_t>(lengths[s] + kSteps);
    EXPECT_EQ(st.rows, rows);
    EXPECT_LE(st.steps, rows);
  }
  EXPECT_TRUE(shared_steps) << "no step ever held rows of more than one sequence";
}

TEST_F(BatcherTest, AllLogitsAndTruncateMatchLoneContext) {
  const std::vector<int32_t> prompt = Prompt(90, 7);
  Context lone(*model_, ContextOptions(256, 1));
  std::vector<float> want_all, got_all;
  lone.Eval(std::span<const int32_t>(prompt.data(), 40));
  lone.Eval(std::span<const int32_t>(prompt.data() + 40, 50), &want_all);
  lone.Truncate(45);
  const std::span<const float> want_last = lone.Eval(std::span<const int32_t>(prompt.data(), 3));
  const std::vector<float> want_last_copy(want_last.begin(), want_last.end());

  BatcherOptions bo;
  bo.n_ctx = 256;
  Batcher batcher(*model_, bo);
  ContextOptions co(256);
  co.batcher = &batcher;
  Context ctx(*model_, co);
  ctx.Eval(std::span<const int32_t>(prompt.data(), 40));
  ctx.Eval(std::span<const int32_t>(prompt.data() + 40, 50), &got_all);
  EXPECT_EQ(ctx.n_past(), 90);
  ctx.Truncate(45);
  const std::span<const float> got_last = ctx.Eval(std::span<const int32_t>(prompt.data(), 3));
  EXPECT_EQ(ctx.n_past(), 48);
  EXPECT_EQ(got_all, want_all);
  EXPECT_EQ(std::vector<float>(got_last.begin(), got_last.end()), want_last_copy);
}

TEST_F(BatcherTest, BadInputIsAnErrorAndTheBatcherGoesOn) {
  BatcherOptions bo;
  bo.n_ctx = 64;
  Batcher batcher(*model_, bo);
  ContextOptions co(64);
  co.batcher = &batcher;
  Context ctx(*model_, co);
  const int32_t bad = static_cast<int32_t>(model_->config().n_vocab);
  EXPECT_THROW(ctx.Eval(std::span<const int32_t>(&bad, 1)), Error);
  const std::vector<int32_t> too_long = Prompt(65, 1);
  EXPECT_THROW(ctx.Eval(too_long), Error);
  EXPECT_EQ(ctx.n_past(), 0);
  // A context larger than its batcher's attention scratch is refused.
  ContextOptions big(128);
  big.batcher = &batcher;
  Context large(*model_, big);
  const std::vector<int32_t> p = Prompt(2, 2);
  EXPECT_THROW(large.Eval(p), Error);
  // The batcher still works.
  EXPECT_EQ(ctx.Eval(p).size(), static_cast<size_t>(model_->config().n_vocab));
  EXPECT_EQ(ctx.n_past(), 2);
  // The reference pass does not batch.
  ContextOptions ref(64, 1, /*reference=*/true);
  ref.batcher = &batcher;
  EXPECT_THROW((Context{*model_, ref}), Error);
}

}  // namespace
}  // namespace trinity
