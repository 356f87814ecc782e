// Kernel micro-benchmarks (Google Benchmark), every CPU path this machine runs, one thread.
//
//   build-cpu/bench/kernels_bench [--benchmark_filter=Gemv]
//
// Memory-bound kernels (ternary GEMV, F16 GEMV) cycle over enough copies of the matrix to miss
// every cache and report GB/s of weight bytes read plus pct_peak: that rate as a percentage of
// this process's measured one-thread read bandwidth (the probe of `trinity bench --engine`, run
// once at start; BM_ReadBandwidth reports it as peak_GBps_measured beside a one-stream read).
// The compute-bound ternary GEMM (prefill) reports GMAC/s per CPU second and pct_vnni_peak: that
// rate as a percentage of one core's measured zmm vpdpbusd rate. Other rates use wall time (UseRealTime):
// the machine may be shared, and a memory-bound kernel's wall rate is what decoding sees.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/common/fp16.h"
#include "engine/common/huge_pages.h"
#include "engine/common/read_bandwidth.h"
#include "engine/kernels/cpu.h"

namespace trinity::kernels {
namespace {

constexpr size_t kColdBytes = size_t{256} << 20;  // >> any L3 this runs on

// Weight matrices live where the engine keeps them: in 2 MiB pages where the kernel has them
// (engine/common/huge_pages.h, Model's WeightPlacement::kCopy). A 4 KiB-page copy read ~2x
// slower end to end, which a benchmark in ordinary vectors would hide.
template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) {
    // One HugePageBuffer per allocation, kept in a list until deallocate.
    HugePageBuffer buffer(n * sizeof(T));
    T* p = reinterpret_cast<T*>(buffer.data());
    Buffers().emplace_back(std::move(buffer));
    return p;
  }
  void deallocate(T* p, size_t) {
    auto& all = Buffers();
    for (auto it = all.begin(); it != all.end(); ++it) {
      if (reinterpret_cast<T*>(it->data()) == p) {
        all.erase(it);
        return;
      }
    }
  }
  static std::vector<HugePageBuffer>& Buffers() {
    static std::vector<HugePageBuffer> buffers;
    return buffers;
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};
template <typename T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

uint64_t SumWords(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
  return a + b + c + d;
}

// One-thread read bandwidth, the probe `trinity bench --engine` uses (best of its access patterns
// over 256 MiB), GB/s.
double PeakReadGbps() {
  static const double gbps = MeasureReadGbps(1, static_cast<int64_t>(kColdBytes));
  return gbps;
}

void SetBandwidth(benchmark::State& state, double bytes_per_iter) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter * static_cast<double>(state.iterations())));
  state.counters["GBps"] = benchmark::Counter(bytes_per_iter * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  // pct_peak is filled relative to the measured one-thread read bandwidth.
  state.counters["pct_peak"] = benchmark::Counter(
      bytes_per_iter * static_cast<double>(state.iterations()) / 1e9 / PeakReadGbps() * 100.0, benchmark::Counter::kIsRate);
}

// One sequential stream (GBps) against the probe's best pattern (peak_GBps_measured).
void BM_ReadBandwidth(benchmark::State& state) {
  std::vector<uint64_t> buf(kColdBytes / 8, 1);
  for (auto _ : state) benchmark::DoNotOptimize(SumWords(buf.data(), buf.size()));
  SetBandwidth(state, static_cast<double>(kColdBytes));
  state.counters["peak_GBps_measured"] = PeakReadGbps();
}
BENCHMARK(BM_ReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

struct TernarySet {
  HugeVector<uint8_t> codes;  // copies x (n_out x n_in/4)
  int64_t n_in, n_out, copies;
  TernaryView View(int64_t i) const {
    TernaryView v;
    v.codes = codes.data() + i * n_out * n_in / 4;
    v.n_in = n_in;
    v.n_out = n_out;
    v.scale = 0.5f;
    return v;
  }
};

TernarySet MakeSet(int64_t n_in, int64_t n_out, size_t target_bytes) {
  TernarySet s{{}, n_in, n_out, 0};
  const size_t one = static_cast<size_t>(n_in * n_out / 4);
  s.copies = static_cast<int64_t>(std::max<size_t>(1, target_bytes / one));
  s.codes.resize(one * s.copies);
  // One random copy (codes 0..2 in each 2-bit field), repeated: the kernels' speed does not
  // depend on the values, and filling 256 MiB value by value takes seconds per shape.
  std::mt19937 rng(1);
  for (size_t j = 0; j < one; ++j) s.codes[j] = static_cast<uint8_t>(rng() % 3 << 6 | rng() % 3 << 4 | rng() % 3 << 2 | rng() % 3);
  for (int64_t c = 1; c < s.copies; ++c) std::memcpy(s.codes.data() + c * one, s.codes.data(), one);
  return s;
}

// args: path, n_in, n_out
void BM_TernaryGemv(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n_in = state.range(1), n_out = state.range(2);
  const TernarySet set = MakeSet(n_in, n_out, kColdBytes);
  std::vector<int8_t> q(n_in);
  std::mt19937 rng(2);
  for (auto& v : q) v = static_cast<int8_t>(rng());
  int32_t q_sum = 0;
  for (auto v : q) q_sum += v;
  std::vector<float> y(n_out);
  int64_t i = 0;
  for (auto _ : state) {
    k.ternary_gemv(set.View(i), q.data(), q_sum, 1.0f, y.data(), 0, n_out);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % set.copies;
  }
  SetBandwidth(state, static_cast<double>(n_in * n_out / 4));
  state.SetLabel(CpuPathName(path));
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

#if defined(__x86_64__)
// One core's int8 peak: 12 independent zmm vpdpbusd per loop iteration (64 MACs each), best of
// 5 runs timed in thread CPU time (the machine may be shared), GMAC/s. Only called on machines that run the AVX-512 VNNI path.
__attribute__((target("avx512f,avx512vnni"))) double MeasureVnniPeakGmacs() {
  constexpr int64_t kIters = 10'000'000;
  double best = 1e30;
  for (int pass = 0; pass < 5; ++pass) {
    const double t0 = ThreadCpuSeconds();
    for (int64_t i = 0; i < kIters; ++i) {
#define TRINITY_DP(n) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #n "\n\t"
      __asm__ volatile(TRINITY_DP(0) TRINITY_DP(1) TRINITY_DP(2) TRINITY_DP(3) TRINITY_DP(4) TRINITY_DP(5)
                           TRINITY_DP(6) TRINITY_DP(7) TRINITY_DP(8) TRINITY_DP(9) TRINITY_DP(10) TRINITY_DP(11)
                       :
                       :
                       : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                         "xmm11");
#undef TRINITY_DP
    }
    best = std::min(best, ThreadCpuSeconds() - t0);
  }
  return static_cast<double>(kIters) * 12 * 64 / best / 1e9;
}
#endif

double VnniPeakGmacs() {
  static const double gmacs = [] {
#if defined(__x86_64__)
    if (CpuPathSupported(CpuPath::kAvx512)) return MeasureVnniPeakGmacs();
#endif
    return 0.0;
  }();
  return gmacs;
}

// The first element of buf (with >= 128 bytes to spare) on a cache line, as the engine's activation
// buffers (page-aligned); with $TRINITY_BENCH_MISALIGN set, 16 bytes past one, as a std::vector's
// data tends to be (every 64-byte load then spans two lines: 8-token GEMM 0.52 -> 0.67 ms).
template <typename T>
T* CacheLineStart(std::vector<T>& buf) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(buf.data());
  const uintptr_t skip = (64 - at % 64) % 64 + (std::getenv("TRINITY_BENCH_MISALIGN") != nullptr ? 16 : 0);
  return reinterpret_cast<T*>(at + skip);
}

// args: path, n_in, n_out, n_tok, cold (1: weights from DRAM, copies cycled through 64 MiB; 0:
// one copy, cache-resident when small: the compute ceiling)
void BM_TernaryGemm(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n_in = state.range(1), n_out = state.range(2), n_tok = state.range(3);
  const TernarySet set = MakeSet(n_in, n_out, state.range(4) != 0 ? size_t{64} << 20 : 0);
  std::vector<int8_t> q_buf(n_in * n_tok + 128);
  int8_t* q = CacheLineStart(q_buf);
  std::mt19937 rng(2);
  for (int64_t j = 0; j < n_in * n_tok; ++j) q[j] = static_cast<int8_t>(rng());
  std::vector<int32_t> sums(n_tok, 0);
  std::vector<float> scales(n_tok, 1.0f), y(n_out * n_tok);
  int64_t i = 0;
  for (auto _ : state) {
    k.ternary_gemm(set.View(i), q, n_in, sums.data(), scales.data(), n_tok, y.data(), n_out, 0, n_out);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % set.copies;
  }
  const double gmac = static_cast<double>(n_in * n_out * n_tok) * static_cast<double>(state.iterations()) / 1e9;
  state.counters["GMACps"] = benchmark::Counter(gmac, benchmark::Counter::kIsRate);
  // Percentage of one core's measured zmm vpdpbusd peak (64 int8 MACs per instruction).
  if (VnniPeakGmacs() > 0.0) {
    state.counters["pct_vnni_peak"] = benchmark::Counter(gmac / VnniPeakGmacs() * 100.0, benchmark::Counter::kIsRate);
    state.counters["vnni_peak_GMACps"] = VnniPeakGmacs();
  }
  state.SetLabel(CpuPathName(path));
}

// args: path, n_in, n_rows (F16 LM-head slice)
void BM_DenseGemvF16(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n_in = state.range(1), n_rows = state.range(2);
  HugeVector<uint16_t> w(static_cast<size_t>(n_in * n_rows));
  for (size_t j = 0; j < w.size(); ++j) w[j] = Fp32ToFp16(static_cast<float>(j % 97) * 0.01f - 0.4f);
  std::vector<float> x(n_in, 0.5f), y(n_rows);
  DenseView view{TensorType::kF16, reinterpret_cast<const uint8_t*>(w.data()), n_in, n_rows, static_cast<uint64_t>(2 * n_in)};
  for (auto _ : state) {
    k.dense_gemv(view, x.data(), y.data(), 0, n_rows);
    benchmark::DoNotOptimize(y.data());
  }
  SetBandwidth(state, static_cast<double>(2 * n_in * n_rows));
  state.SetLabel(CpuPathName(path));
}

// The batched LM head: n_x vectors against F16 rows (32768 rows of 2560: 168 MB, beyond the
// caches). Bytes are the weights read once; items are (row, vector) dot products, so items/s
// compares n_x = 1 (the GEMV) with batches.
void BM_DenseGemmF16(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n_in = state.range(1), n_rows = state.range(2), n_x = state.range(3);
  HugeVector<uint16_t> w(static_cast<size_t>(n_in * n_rows));
  for (size_t j = 0; j < w.size(); ++j) w[j] = Fp32ToFp16(static_cast<float>(j % 97) * 0.01f - 0.4f);
  std::vector<float> x_buf(static_cast<size_t>(n_in * n_x + 32), 0.5f), y(static_cast<size_t>(n_rows * n_x));
  float* x = CacheLineStart(x_buf);
  std::vector<float*> ys;
  for (int64_t i = 0; i < n_x; ++i) ys.push_back(y.data() + i * n_rows);
  DenseView view{TensorType::kF16, reinterpret_cast<const uint8_t*>(w.data()), n_in, n_rows, static_cast<uint64_t>(2 * n_in)};
  for (auto _ : state) {
    k.dense_gemm(view, x, n_in, n_x, ys.data(), 0, n_rows);
    benchmark::DoNotOptimize(y.data());
  }
  SetBandwidth(state, static_cast<double>(2 * n_in * n_rows));
  state.SetItemsProcessed(state.iterations() * n_rows * n_x);
  state.SetLabel(CpuPathName(path));
}

// Prefill attention, 2B-4T heads (20 query heads, 5 KV heads, head_dim 128): a batch of n_tok
// query tokens at positions pos .. pos+n_tok-1 over the cache, one thread. args: path, batched
// (0: the one-token kernel per token, as decode runs it; 1: attention_prefill), pos, n_tok.
// GFLOPs counts 2 x 2 x head_dim flops per (query head, visible key): q.k and p.v.
void BM_AttentionPrefill(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const bool batched = state.range(1) != 0;
  if (batched && k.attention_prefill == nullptr) return state.SkipWithError("no batched attention on this path");
  const int64_t n_head = 20, n_head_kv = 5, head_dim = 128, pos = state.range(2), n_tok = state.range(3);
  const int64_t width = n_head * head_dim, kv_width = n_head_kv * head_dim, n_kv = pos + n_tok;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(n_tok * width), kc(n_kv * kv_width), vc(kc.size()), out(q.size()), scratch(n_kv);
  for (float& v : q) v = normal(rng);
  for (float& v : kc) v = normal(rng);
  for (float& v : vc) v = normal(rng);
  for (auto _ : state) {
    if (batched) {
      k.attention_prefill(q.data(), width, kc.data(), vc.data(), pos, n_head, n_head_kv, head_dim, out.data(), width, 0,
                          n_tok, 0, n_head_kv);
    } else {
      for (int64_t t = 0; t < n_tok; ++t)
        k.attention(q.data() + t * width, kc.data(), vc.data(), pos + t + 1, n_head, n_head_kv, head_dim,
                    out.data() + t * width, scratch.data(), 0, n_head);
    }
    benchmark::DoNotOptimize(out.data());
  }
  double keys = 0.0;
  for (int64_t t = 0; t < n_tok; ++t) keys += static_cast<double>(pos + t + 1);
  state.counters["GFLOPs"] = benchmark::Counter(4.0 * static_cast<double>(head_dim * n_head) * keys *
                                                    static_cast<double>(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
  state.SetLabel(std::string(CpuPathName(path)) + (batched ? " batched" : " per token"));
}
BENCHMARK(BM_AttentionPrefill)
    ->ArgNames({"path", "batched", "pos", "n_tok"})
    ->Args({1, 0, 448, 64})
    ->Args({1, 1, 448, 64})
    ->Args({2, 0, 448, 64})
    ->Args({2, 1, 448, 64})
    ->Args({2, 0, 0, 64})
    ->Args({2, 1, 0, 64})
    ->Args({1, 1, 3008, 64})
    ->Unit(benchmark::kMillisecond);

// Decode attention, 2B-4T heads (20 query heads, 5 KV heads, head_dim 128): one query token
// over n_kv cached positions, one thread, caches cycled over copies that exceed the last-level
// cache (as the 30 layers of a real cache do). args: path, mode (0: the one-token kernel, heads
// in turn, as decode ran before; 1: attention_decode over kDecodeKeys ranges, then
// MergeAttentionParts; 2: the same over an f16 cache, attention_decode_f16), n_kv. GBps: the
// caches' bytes (keys and values once) per call: half as many for mode 2, so compare times.
void BM_AttentionDecode(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const bool ranges = state.range(1) != 0, half = state.range(1) == 2;
  if (ranges && k.attention_decode == nullptr) return state.SkipWithError("no attention_decode on this path");
  const int64_t n_head = 20, n_head_kv = 5, head_dim = 128, n_kv = state.range(2), width = n_head * head_dim;
  const int64_t cache_floats = n_kv * n_head_kv * head_dim;
  const int64_t copies = std::max<int64_t>(2, static_cast<int64_t>(kColdBytes / (2 * sizeof(float) * cache_floats)));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(width), kc(copies * cache_floats), vc(kc.size()), out(width), scratch(n_kv);
  for (float& v : q) v = normal(rng);
  for (size_t i = 0; i < kc.size(); ++i) kc[i] = static_cast<float>(i % 7) * 0.1f, vc[i] = static_cast<float>(i % 5) * 0.1f;
  std::vector<uint16_t> kh, vh;  // mode 2: the caches as halves (the float copies then go unused)
  if (half) {
    kh.resize(kc.size()), vh.resize(vc.size());
    for (size_t i = 0; i < kc.size(); ++i) kh[i] = Fp32ToFp16(kc[i]), vh[i] = Fp32ToFp16(vc[i]);
    kc = {}, vc = {};
  }
  const int64_t n_parts = (n_kv + kDecodeKeys - 1) / kDecodeKeys;
  std::vector<float> po(n_parts * width), pm(n_parts * n_head), pl(pm.size());
  int64_t copy = 0;
  for (auto _ : state) {
    const int64_t at = copy * cache_floats;
    copy = (copy + 1) % copies;
    if (half) {
      for (int64_t p = 0; p < n_parts; ++p) {
        k.attention_decode_f16(q.data(), kh.data() + at, vh.data() + at, n_head, n_head_kv, head_dim, p * kDecodeKeys,
                               std::min(n_kv, (p + 1) * kDecodeKeys), po.data() + p * width, pm.data() + p * n_head,
                               pl.data() + p * n_head);
      }
      MergeAttentionParts(po.data(), pm.data(), pl.data(), n_parts, n_head, head_dim, out.data());
    } else if (ranges) {
      const float* kp = kc.data() + at;
      const float* vp = vc.data() + at;
      for (int64_t p = 0; p < n_parts; ++p) {
        k.attention_decode(q.data(), kp, vp, n_head, n_head_kv, head_dim, p * kDecodeKeys, std::min(n_kv, (p + 1) * kDecodeKeys),
                           po.data() + p * width, pm.data() + p * n_head, pl.data() + p * n_head);
      }
      MergeAttentionParts(po.data(), pm.data(), pl.data(), n_parts, n_head, head_dim, out.data());
    } else {
      k.attention(q.data(), kc.data() + at, vc.data() + at, n_kv, n_head, n_head_kv, head_dim, out.data(), scratch.data(),
                  0, n_head);
    }
    benchmark::DoNotOptimize(out.data());
  }
  SetBandwidth(state, 2.0 * (half ? sizeof(uint16_t) : sizeof(float)) * static_cast<double>(cache_floats));
  state.SetLabel(std::string(CpuPathName(path)) + (half ? " key ranges, f16 cache" : ranges ? " key ranges" : " per head"));
}
BENCHMARK(BM_AttentionDecode)
    ->ArgNames({"path", "ranges", "n_kv"})
    ->Args({1, 0, 3072})
    ->Args({1, 1, 3072})
    ->Args({1, 2, 3072})
    ->Args({1, 0, 1024})
    ->Args({1, 1, 1024})
    ->Args({1, 2, 1024})
    ->Args({1, 0, 128})
    ->Args({1, 1, 128})
    ->Args({1, 2, 128})
    ->Args({2, 0, 3072})
    ->Args({2, 1, 3072})
    ->Args({2, 2, 3072})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_Q8Gemv(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n_in = state.range(1), n_rows = state.range(2);
  const size_t one = static_cast<size_t>(n_in * n_rows);
  const size_t copies = std::max<size_t>(1, kColdBytes / one);
  HugeVector<uint8_t> w(one * copies);
  std::mt19937 rng(3);
  for (size_t j = 0; j < one; ++j) w[j] = static_cast<uint8_t>(1 + rng() % 255);
  for (size_t c = 1; c < copies; ++c) std::memcpy(w.data() + c * one, w.data(), one);
  std::vector<float> scales(n_rows, 0.01f), y(n_rows);
  std::vector<int8_t> q(n_in);
  for (auto& v : q) v = static_cast<int8_t>(rng() % 255 - 127);
  size_t i = 0;
  for (auto _ : state) {
    const Q8View view{w.data() + i * one, n_in, n_rows, static_cast<uint64_t>(n_in), scales.data()};
    k.q8_gemv(view, q.data(), 0, 1.0f, y.data(), 0, n_rows);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % copies;
  }
  SetBandwidth(state, static_cast<double>(one));
  state.SetLabel(CpuPathName(path));
}


void BM_Quantize(benchmark::State& state) {
  const auto path = static_cast<CpuPath>(state.range(0));
  if (!CpuPathSupported(path)) return state.SkipWithError("path not supported here");
  const CpuKernels& k = GetCpuKernels(path);
  const int64_t n = state.range(1);
  std::vector<float> x(n);
  for (int64_t j = 0; j < n; ++j) x[j] = static_cast<float>(j % 101) * 0.03f - 1.4f;
  std::vector<int8_t> q(n);
  int32_t sum;
  for (auto _ : state) benchmark::DoNotOptimize(k.quantize(x.data(), n, q.data(), &sum));
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel(CpuPathName(path));
}

// The 2B-4T shapes: q/o (2560 -> 2560), gate/up (2560 -> 6912), down (6912 -> 2560).
void Shapes(benchmark::internal::Benchmark* b) {
  for (int p : {0, 4, 1, 2}) {  // ref, generic, avx2, avx512
    b->Args({p, 2560, 2560});
    b->Args({p, 2560, 6912});
    b->Args({p, 6912, 2560});
  }
}
BENCHMARK(BM_TernaryGemv)->Apply(Shapes)->ArgNames({"path", "n_in", "n_out"})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TernaryGemm)
    ->ArgNames({"path", "n_in", "n_out", "n_tok", "cold"})
    ->Args({0, 2560, 6912, 64, 1})
    ->Args({4, 2560, 6912, 64, 1})
    ->Args({1, 2560, 6912, 64, 1})
    ->Args({1, 2560, 6912, 8, 1})
    ->Args({1, 2560, 6912, 16, 1})
    ->Args({1, 2560, 256, 64, 0})
    ->Args({2, 2560, 6912, 4, 1})
    ->Args({2, 2560, 6912, 8, 1})
    ->Args({2, 2560, 6912, 12, 1})
    ->Args({2, 2560, 6912, 16, 1})
    ->Args({2, 2560, 2560, 64, 1})
    ->Args({2, 2560, 6912, 64, 1})
    ->Args({2, 6912, 2560, 64, 1})
    ->Args({2, 2560, 6912, 128, 1})
    ->Args({2, 2560, 256, 4, 0})  // weights in L2: the compute ceiling
    ->Args({2, 2560, 256, 8, 0})
    ->Args({2, 2560, 256, 16, 0})
    ->Unit(benchmark::kMillisecond);  // CPU time: compute-bound, and the machine may be shared
BENCHMARK(BM_DenseGemvF16)
    ->ArgNames({"path", "n_in", "n_rows"})
    ->Args({0, 2560, 32768})
    ->Args({4, 2560, 32768})
    ->Args({1, 2560, 32768})
    ->Args({2, 2560, 32768})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_DenseGemmF16)
    ->ArgNames({"path", "n_in", "n_rows", "n_x"})
    ->Args({2, 2560, 32768, 1})
    ->Args({2, 2560, 32768, 4})
    ->Args({2, 2560, 32768, 8})
    ->Args({1, 2560, 32768, 8})
    ->Args({2, 2560, 64, 1})  // weights in L2: the compute ceiling
    ->Args({2, 2560, 64, 8})
    ->Args({1, 2560, 64, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Q8Gemv)
    ->ArgNames({"path", "n_in", "n_rows"})
    ->Args({0, 2560, 32768})
    ->Args({4, 2560, 32768})
    ->Args({1, 2560, 32768})
    ->Args({2, 2560, 32768})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Quantize)->ArgNames({"path", "n"})->Args({0, 6912})->Args({1, 6912})->Args({2, 6912});

}  // namespace
}  // namespace trinity::kernels

BENCHMARK_MAIN();
