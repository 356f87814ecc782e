// The GPU forward pass (--device cuda) against the CPU fast path on the synthetic tiny model
// ($TRINITY_TEST_MODEL), and the device plumbing that works without a GPU.
//
// Tolerance, as tests/engine_fast_path_test.cc argues for the CPU paths: the ternary matmuls and
// quantisation are bit-identical, attention and the LM head sum floats in another order, and a
// .5 rounding flip of one int8 activation can follow. Bounds per position: max |gpu - cpu| <= 5%
// of the position's logit standard deviation; mean over positions <= 0.1% of it; argmax equal.
// Greedy decoding: the same 64 tokens, except that a step where the CPU's top-2 margin is under
// 1% of the logits' std may pick the other token (then the sequences legitimately part; the
// comparison stops there and must have covered at least 16 steps).
// GPU tests skip when no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/cuda/cuda.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace trinity {
namespace {

constexpr int kGreedySteps = 64;

std::string TestModel() {
  const char* path = std::getenv("TRINITY_TEST_MODEL");
  return path ? path : "";
}

#define TRINITY_REQUIRE_GPU_AND_MODEL()                                      \
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";           \
  if (TestModel().empty()) GTEST_SKIP() << "TRINITY_TEST_MODEL is not set"

int32_t Argmax(const float* v, int64_t n) { return static_cast<int32_t>(std::max_element(v, v + n) - v); }

double StdDev(const float* v, int64_t n) {
  double sum = 0.0, sum2 = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += v[i], sum2 += static_cast<double>(v[i]) * v[i];
  const double mean = sum / n;
  return std::max(1e-12, std::sqrt(std::max(0.0, sum2 / n - mean * mean)));
}

// Top-2 margin of a logits row in units of its std.
double Margin(const float* v, int64_t n) {
  std::vector<float> top(v, v + n);
  std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<float>());
  return (top[0] - top[1]) / StdDev(v, n);
}

void ExpectClose(const float* gpu, const float* cpu, int64_t rows, int64_t n_vocab, const std::string& what) {
  double worst = 0.0, mean = 0.0;
  int argmax_mismatches = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = cpu + r * n_vocab;
    const float* b = gpu + r * n_vocab;
    const double sd = StdDev(a, n_vocab);
    double max_abs = 0.0, sum_abs = 0.0;
    for (int64_t i = 0; i < n_vocab; ++i) {
      ASSERT_TRUE(std::isfinite(b[i])) << what << ": row " << r << " logit " << i;
      const double e = std::fabs(static_cast<double>(a[i]) - b[i]);
      max_abs = std::max(max_abs, e);
      sum_abs += e;
    }
    worst = std::max(worst, max_abs / sd);
    mean += sum_abs / n_vocab / sd / static_cast<double>(rows);
    if (Argmax(a, n_vocab) != Argmax(b, n_vocab) && Margin(a, n_vocab) > 0.01) ++argmax_mismatches;
  }
  std::printf("%s: worst max|gpu-cpu|/std %.3g, mean %.3g over %lld positions\n", what.c_str(), worst, mean,
              static_cast<long long>(rows));
  EXPECT_LE(worst, 0.05) << what;
  EXPECT_LE(mean, 0.001) << what;
  EXPECT_EQ(argmax_mismatches, 0) << what;
}

std::vector<int32_t> Prompt(int64_t n, int64_t n_vocab, uint64_t seed) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int32_t& t : tokens) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(n_vocab));
  }
  return tokens;
}

// Greedy continuation on both devices; returns the steps compared before a legitimate parting.
int CompareGreedy(Context& cpu, Context& gpu, std::span<const int32_t> prompt, int steps, const std::string& what) {
  const int64_t n_vocab = cpu.model().config().n_vocab;
  std::span<const float> lc = cpu.Eval(prompt);
  std::span<const float> lg = gpu.Eval(prompt);
  for (int step = 0; step < steps; ++step) {
    const int32_t tc = Argmax(lc.data(), n_vocab), tg = Argmax(lg.data(), n_vocab);
    if (tc != tg) {
      const double margin = Margin(lc.data(), n_vocab);
      EXPECT_LT(margin, 0.01) << what << ": greedy step " << step << " cpu " << tc << " gpu " << tg;
      return step;
    }
    if (cpu.n_past() >= cpu.n_ctx()) return step + 1;
    lc = cpu.Eval(std::span<const int32_t>(&tc, 1));
    lg = gpu.Eval(std::span<const int32_t>(&tg, 1));
  }
  return steps;
}

TEST(EngineCuda, ParseDevice) {
  EXPECT_EQ(ParseDevice("cpu"), Device::kCpu);
  EXPECT_EQ(ParseDevice("cuda"), Device::kCuda);
  EXPECT_EQ(ParseDevice("auto"), Device::kAuto);
  EXPECT_THROW(ParseDevice("tpu"), Error);
  EXPECT_EQ(ResolveDevice(Device::kCpu), Device::kCpu);
  EXPECT_EQ(ResolveDevice(Device::kAuto), cuda::DeviceCount() > 0 ? Device::kCuda : Device::kCpu);
}

// Without CUDA (or without a GPU), asking for the GPU is a clear error, and auto stays on the CPU.
TEST(EngineCuda, NoDeviceIsAClearError) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  if (TestModel().empty()) GTEST_SKIP() << "TRINITY_TEST_MODEL is not set";
  const auto model = Model::Load(TestModel());
  ContextOptions options(64, 1);
  options.device = Device::kCuda;
  try {
    Context context(*model, options);
    ADD_FAILURE() << "expected trinity::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    if (cuda::Built()) {
      EXPECT_NE(message.find("no CUDA device"), std::string::npos) << message;
    } else {
      EXPECT_NE(message.find("built without CUDA"), std::string::npos) << message;
    }
  }
  options.device = Device::kAuto;
  Context context(*model, options);
  EXPECT_EQ(context.device(), Device::kCpu);
}

TEST(EngineCuda, PrefillLogitsMatchCpu) {
  TRINITY_REQUIRE_GPU_AND_MODEL();
  const auto model = Model::Load(TestModel());
  const int64_t n_vocab = model->config().n_vocab;
  ContextOptions cpu_options(256, 0);
  ContextOptions gpu_options(256, 0);
  gpu_options.device = Device::kCuda;
  Context cpu(*model, cpu_options), gpu(*model, gpu_options);
  ASSERT_EQ(gpu.device(), Device::kCuda);
  // 100 tokens: the CPU evaluates them in batches of 64, the GPU in one; then a second chunk that
  // attends to the first, and single tokens.
  const std::vector<int32_t> prompt = Prompt(100, n_vocab, 1);
  std::vector<float> lc, lg;
  cpu.Eval(prompt, &lc);
  gpu.Eval(prompt, &lg);
  ExpectClose(lg.data(), lc.data(), 100, n_vocab, "prefill 100");
  const std::vector<int32_t> more = Prompt(37, n_vocab, 2);
  cpu.Eval(more, &lc);
  gpu.Eval(more, &lg);
  ExpectClose(lg.data(), lc.data(), 37, n_vocab, "second chunk of 37");
  for (int i = 0; i < 5; ++i) {
    const int32_t t = more[static_cast<size_t>(i)];
    std::span<const float> c = cpu.Eval(std::span<const int32_t>(&t, 1));
    std::span<const float> g = gpu.Eval(std::span<const int32_t>(&t, 1));
    ExpectClose(g.data(), c.data(), 1, n_vocab, "decode step " + std::to_string(i));
  }
  EXPECT_EQ(gpu.gpu()->graphs_built(), 1);  // one graph, replayed for every decode step
}

TEST(EngineCuda, Greedy64TokensMatchCpu) {
  TRINITY_REQUIRE_GPU_AND_MODEL();
  const auto model = Model::Load(TestModel());
  const int64_t n_vocab = model->config().n_vocab;
  ContextOptions gpu_options(256, 0);
  gpu_options.device = Device::kCuda;
  for (uint64_t seed : {3, 4}) {
    Context cpu(*model, ContextOptions(256, 0)), gpu(*model, gpu_options);
    const std::vector<int32_t> prompt = Prompt(12, n_vocab, seed);
    const int compared = CompareGreedy(cpu, gpu, prompt, kGreedySteps, "seed " + std::to_string(seed));
    std::printf("seed %llu: %d greedy steps identical\n", static_cast<unsigned long long>(seed), compared);
    EXPECT_GE(compared, 16);
  }
}

TEST(EngineCuda, ResetAndTruncateReuseTheCache) {
  TRINITY_REQUIRE_GPU_AND_MODEL();
  const auto model = Model::Load(TestModel());
  const int64_t n_vocab = model->config().n_vocab;
  ContextOptions gpu_options(128, 0);
  gpu_options.device = Device::kCuda;
  Context cpu(*model, ContextOptions(128, 0)), gpu(*model, gpu_options);
  const std::vector<int32_t> a = Prompt(20, n_vocab, 5), b = Prompt(9, n_vocab, 6);
  gpu.Eval(a);
  gpu.Reset();
  std::vector<float> lc, lg;
  cpu.Eval(b, &lc);
  gpu.Eval(b, &lg);
  ExpectClose(lg.data(), lc.data(), 9, n_vocab, "after Reset");
  cpu.Truncate(4);
  gpu.Truncate(4);
  cpu.Eval(a, &lc);
  gpu.Eval(a, &lg);
  ExpectClose(lg.data(), lc.data(), 20, n_vocab, "after Truncate");
}

// Batched decode: four sequences in one step each, against each sequence on the CPU alone.
TEST(EngineCuda, BatchedDecodeMatchesCpuPerSequence) {
  TRINITY_REQUIRE_GPU_AND_MODEL();
  const auto model = Model::Load(TestModel());
  const int64_t n_vocab = model->config().n_vocab;
  constexpr int kSeqs = 4, kSteps = 12;
  cuda::ForwardOptions fo;
  fo.n_ctx = 128;
  fo.n_seq = kSeqs;
  std::unique_ptr<cuda::Forward> forward = cuda::CreateForward(*model, fo);
  std::vector<std::unique_ptr<Context>> cpus;
  std::vector<int32_t> next(kSeqs);
  std::vector<int64_t> pos(kSeqs);
  std::vector<int32_t> seqs(kSeqs);
  std::iota(seqs.begin(), seqs.end(), 0);
  for (int s = 0; s < kSeqs; ++s) {
    const std::vector<int32_t> prompt = Prompt(5 + 7 * s, n_vocab, 10 + s);  // different lengths
    cpus.push_back(std::make_unique<Context>(*model, ContextOptions(128, 0)));
    std::span<const float> lc = cpus.back()->Eval(prompt);
    std::vector<float> lg(static_cast<size_t>(n_vocab));
    int32_t greedy = -1;
    forward->Eval(s, prompt.data(), static_cast<int64_t>(prompt.size()), 0, lg.data(), nullptr, &greedy);
    ExpectClose(lg.data(), lc.data(), 1, n_vocab, "prompt of sequence " + std::to_string(s));
    EXPECT_EQ(greedy, Argmax(lg.data(), n_vocab));
    next[s] = Argmax(lc.data(), n_vocab);
    pos[s] = static_cast<int64_t>(prompt.size());
  }
  std::vector<float> logits(static_cast<size_t>(kSeqs * n_vocab));
  std::vector<int32_t> greedy(kSeqs);
  for (int step = 0; step < kSteps; ++step) {
    forward->Decode(kSeqs, next.data(), seqs.data(), pos.data(), logits.data(), greedy.data());
    for (int s = 0; s < kSeqs; ++s) {
      std::span<const float> lc = cpus[s]->Eval(std::span<const int32_t>(&next[s], 1));
      ExpectClose(logits.data() + s * n_vocab, lc.data(), 1, n_vocab,
                  "step " + std::to_string(step) + " sequence " + std::to_string(s));
      EXPECT_EQ(greedy[s], Argmax(logits.data() + s * n_vocab, n_vocab));
      next[s] = Argmax(lc.data(), n_vocab);  // follow the CPU so both stay on one path
      ++pos[s];
    }
  }
  EXPECT_EQ(forward->graphs_built(), 1);
}

}  // namespace
}  // namespace trinity
