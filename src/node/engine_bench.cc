#include "node/engine_bench.h"

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include <sys/resource.h>
#include <vector>

#include "engine/common/error.h"
#include "engine/common/huge_pages.h"
#include "engine/common/read_bandwidth.h"
#include "engine/common/thread_pool.h"
#include "engine/model/batcher.h"
#include "engine/model/context.h"

namespace trinity::node {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Fixed pseudo-random token ids, as llama-bench uses random tokens: the forward pass does the
// same work for any id.
std::vector<int32_t> BenchTokens(size_t n, int32_t n_vocab, uint64_t state) {
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(n_vocab));
  }
  return tokens;
}

// tok/s x bytes per token as a percentage of `gbps` (1e9 bytes/s); 0 when no bandwidth was measured.
double RooflinePct(double tok_per_s, uint64_t bytes_per_token, double gbps) {
  return gbps > 0.0 ? tok_per_s * static_cast<double>(bytes_per_token) / (gbps * 1e9) * 100.0 : 0.0;
}

}  // namespace

EngineBenchResult RunEngineBench(const Model& model, const EngineBenchOptions& options) {
  if (options.n_prompt < 0 || options.n_gen < 0 || options.depth < 0) Fail("-p, -n and -d must be >= 0");
  if (options.n_prompt == 0 && options.n_gen == 0) Fail("nothing to measure: -p and -n are both 0");
  if (options.repetitions < 1) Fail("repetitions must be at least 1");
  const int64_t n_ctx = std::max<int64_t>(options.depth + std::max(options.n_prompt, options.n_gen), 1);
  ContextOptions context_options;
  context_options.n_ctx = n_ctx;
  context_options.n_threads = options.threads;
  context_options.device = options.device;
  context_options.lm_head = options.lm_head;
  context_options.kv_cache = options.kv_cache;
  Context context(model, context_options);
  const int32_t n_vocab = static_cast<int32_t>(model.config().n_vocab);

  EngineBenchResult result;
  result.threads = context.pool().n_threads();
  result.prefetch_mode = kernels::GetStreamPrefetch();
  result.kv_bytes_per_token = static_cast<uint64_t>(options.depth + options.n_gen / 2) * context.KvBytesPerPosition();
  result.bytes_per_token = model.WeightBytesPerToken(options.lm_head == LmHeadFormat::kQ8) + result.kv_bytes_per_token;
  result.device = context.device();
  cuda::Forward* gpu = context.gpu();
  if (gpu) result.device_name = cuda::DeviceDescription(0);
  // The GPU figures below (greedy decode, batched sequences) start from an empty cache.
  if (gpu && options.depth > 0) Fail("-d/--depth is measured on the CPU only (--device cpu)");
  // Warm-up, as llama-bench does, so no measurement pays first-use costs: on a GPU module loading,
  // the decode graph's capture and the first prefill's allocations; on the CPU the first touch of
  // every page of the mapped weights and of the scratch buffers (page faults of ~1 GB for the 2B
  // model, ~15% of a cold tg128).
  {
    const int32_t t0 = 1;
    for (int i = 0; i < 2; ++i) {
      context.Reset();
      context.Eval(std::span<const int32_t>(&t0, 1));
    }
    if (options.n_prompt > 1) {
      context.Reset();
      std::vector<int32_t> warm(static_cast<size_t>(std::min<int64_t>(options.n_prompt, 64)), 1);
      context.Eval(warm);
    }
  }

  const std::vector<int32_t> tokens = BenchTokens(static_cast<size_t>(n_ctx), n_vocab, 0x9E3779B97F4A7C15ull);
  const int32_t* after = tokens.data() + options.depth;  // the measured tokens follow the depth's
  // An empty context, then `depth` tokens in one untimed Eval.
  auto fill = [&] {
    context.Reset();
    if (options.depth > 0) context.Eval(std::span<const int32_t>(tokens.data(), static_cast<size_t>(options.depth)));
  };

  double pp_s = 0.0, tg_s = 0.0;
  for (int rep = 0; rep < options.repetitions; ++rep) {
    if (options.n_prompt > 0) {
      fill();
      const auto start = Clock::now();
      context.Eval(std::span<const int32_t>(after, static_cast<size_t>(options.n_prompt)));
      pp_s += SecondsSince(start);
    }
    if (options.n_gen > 0) {
      fill();
      const kernels::StreamPrefetchCalls calls = kernels::StreamPrefetchCallCounts();
      const auto start = Clock::now();
      for (int64_t i = 0; i < options.n_gen; ++i) {
        context.Eval(std::span<const int32_t>(after + i, 1));
      }
      tg_s += SecondsSince(start);
      const kernels::StreamPrefetchCalls calls_after = kernels::StreamPrefetchCallCounts();
      result.prefetch_on_calls += calls_after.on - calls.on;
      result.prefetch_off_calls += calls_after.off - calls.off;
    }
  }
  const double reps = options.repetitions;
  if (pp_s > 0.0) result.pp_tok_per_s = static_cast<double>(options.n_prompt) * reps / pp_s;
  if (tg_s > 0.0) result.tg_tok_per_s = static_cast<double>(options.n_gen) * reps / tg_s;

  if (gpu) {
    // Greedy decode as a GPU server runs it: the argmax comes back, the logits stay on the GPU.
    if (options.n_gen > 0) {
      double greedy_s = 0.0;
      for (int rep = 0; rep < options.repetitions; ++rep) {
        int32_t token = tokens[0];
        const auto start = Clock::now();
        for (int64_t i = 0; i < options.n_gen; ++i) gpu->Eval(0, &token, 1, i, nullptr, nullptr, &token);
        greedy_s += SecondsSince(start);
      }
      result.tg_greedy_tok_per_s = static_cast<double>(options.n_gen) * reps / greedy_s;
    }
    if (options.n_seq > 0 && options.n_gen > 0) {
      constexpr int64_t kPrompt = 32;
      cuda::ForwardOptions fo;
      fo.n_ctx = kPrompt + options.n_gen;
      fo.n_seq = options.n_seq;
      std::unique_ptr<cuda::Forward> batch = cuda::CreateForward(model, fo);
      const int n = options.n_seq;
      std::vector<int32_t> next(static_cast<size_t>(n)), seqs(static_cast<size_t>(n));
      std::vector<int64_t> pos(static_cast<size_t>(n));
      std::vector<int32_t> prompt(static_cast<size_t>(kPrompt));
      auto prefill = [&] {
        for (int s = 0; s < n; ++s) {  // a different prompt per sequence
          for (int64_t i = 0; i < kPrompt; ++i) prompt[i] = static_cast<int32_t>((i * 7919 + s * 104729 + 1) % n_vocab);
          batch->Eval(s, prompt.data(), kPrompt, 0, nullptr, nullptr, &next[s]);
          seqs[s] = s;
          pos[s] = kPrompt;
        }
      };
      prefill();
      batch->Decode(n, next.data(), seqs.data(), pos.data(), nullptr, next.data());  // warm-up: graph capture
      prefill();
      const auto start = Clock::now();
      for (int64_t i = 0; i < options.n_gen; ++i) {
        batch->Decode(n, next.data(), seqs.data(), pos.data(), nullptr, next.data());
        for (int64_t& p : pos) ++p;
      }
      result.tg_batch_tok_per_s = static_cast<double>(options.n_gen) * n / SecondsSince(start);
      result.n_seq = n;
    }
    result.read_gbps = cuda::MeasureCopyGbps(0, options.bandwidth_bytes);
    result.roofline_pct = RooflinePct(result.tg_greedy_tok_per_s, result.bytes_per_token, result.read_gbps);
    return result;
  }

  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) result.peak_rss_bytes = static_cast<uint64_t>(usage.ru_maxrss) * 1024;
  result.model_file_bytes = model.file().file_size();
  result.read_gbps = MeasureReadGbps(result.threads, options.bandwidth_bytes);
  result.roofline_pct = RooflinePct(result.tg_tok_per_s, result.bytes_per_token, result.read_gbps);
  if (options.alternate && options.n_gen > 0) {
    // In 2 MiB pages where the kernel gives them, as the copied weights are (the faster of the
    // probe's two buffers, huge_pages.h): the stricter denominator.
    ReadProbe probe(context.pool(), options.bandwidth_bytes, TransparentHugePagesAvailable());
    double token_s = 0.0;
    double pass_s[ReadProbe::kPatterns] = {};
    int passes[ReadProbe::kPatterns] = {};
    for (int rep = 0; rep < options.repetitions; ++rep) {  // as tg: n_gen tokens per repetition
      fill();
      for (int64_t i = 0; i < options.n_gen; ++i) {
        const auto start = Clock::now();
        context.Eval(std::span<const int32_t>(after + i, 1));
        token_s += SecondsSince(start);
        const int pattern = static_cast<int>((rep * options.n_gen + i) % ReadProbe::kPatterns);
        const double s = probe.Pass(pattern);
        if (s == 0.0) Fail("the read-bandwidth probe read wrong sums");
        pass_s[pattern] += s;
        ++passes[pattern];
      }
    }
    result.tg_alternated_tok_per_s = static_cast<double>(options.n_gen) * reps / token_s;
    for (int p = 0; p < ReadProbe::kPatterns; ++p) {
      if (passes[p] == 0) continue;
      const double gbps = static_cast<double>(probe.bytes()) * passes[p] / pass_s[p] / 1e9;
      result.read_alternated_gbps = std::max(result.read_alternated_gbps, gbps);
    }
    result.roofline_alternated_pct =
        RooflinePct(result.tg_alternated_tok_per_s, result.bytes_per_token, result.read_alternated_gbps);
  }
  return result;
}

StreamsBenchResult RunStreamsBench(const Model& model, int streams, int64_t n_gen, int threads, LmHeadFormat lm_head,
                                   KvCacheType kv_cache) {
  if (streams < 1 || streams > Context::kMaxBatch) Fail("streams must be in [1, {}]", Context::kMaxBatch);
  if (n_gen < 1) Fail("-n must be >= 1 to measure streams");
  const int32_t n_vocab = static_cast<int32_t>(model.config().n_vocab);
  const int64_t n_ctx = n_gen + 1;
  std::unique_ptr<Batcher> batcher;
  if (streams > 1) {
    BatcherOptions bo;
    bo.n_ctx = n_ctx;
    bo.n_threads = threads;
    bo.lm_head = lm_head;
    batcher = std::make_unique<Batcher>(model, bo);
  }
  std::vector<std::unique_ptr<Context>> contexts;
  for (int s = 0; s < streams; ++s) {
    ContextOptions co(n_ctx, threads);
    co.lm_head = lm_head;
    co.kv_cache = kv_cache;
    co.batcher = batcher.get();
    contexts.push_back(std::make_unique<Context>(model, co));
    // One warm-up token per stream (page faults of the mapped weights), then an empty cache.
    const int32_t t = 0;
    contexts.back()->Eval(std::span<const int32_t>(&t, 1));
    contexts.back()->Reset();
  }
  const BatcherStats before = batcher ? batcher->stats() : BatcherStats{};
  std::barrier start(streams + 1);
  std::vector<std::thread> workers;
  for (int s = 0; s < streams; ++s) {
    workers.emplace_back([&, s] {
      const std::vector<int32_t> tokens = BenchTokens(static_cast<size_t>(n_gen), n_vocab, 0x9E3779B97F4A7C15ull + s);
      start.arrive_and_wait();
      for (int64_t i = 0; i < n_gen; ++i) contexts[s]->Eval(std::span<const int32_t>(tokens.data() + i, 1));
      contexts[s]->Idle();
    });
  }
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  for (auto& t : workers) t.join();
  const double seconds = SecondsSince(t0);
  StreamsBenchResult r;
  r.streams = streams;
  r.tok_per_s = static_cast<double>(streams) * static_cast<double>(n_gen) / seconds;
  r.mean_batch_rows = 1.0;
  r.ms_per_step = seconds * 1000.0 / static_cast<double>(n_gen);
  if (batcher) {
    const BatcherStats after = batcher->stats();
    const uint64_t steps = after.steps - before.steps;
    const double busy = after.busy_seconds - before.busy_seconds;
    if (steps > 0) {
      r.mean_batch_rows = static_cast<double>(after.rows - before.rows) / static_cast<double>(steps);
      r.ms_per_step = busy * 1000.0 / static_cast<double>(steps);
    }
    r.busy_fraction = busy / seconds;
  }
  return r;
}

}  // namespace trinity::node
