// AVX-512 (F/BW/VL) + VNNI kernels. Compiled for that target with a pragma after the standard
// headers, so no inline function of the standard library is emitted with AVX-512 code in it; the
// dispatcher (cpu_dispatch.cc) only calls these after cpuid said the machine runs them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/common/fp16.h"
#include "engine/kernels/cpu.h"
#include "engine/kernels/row_streams.h"

#if defined(__x86_64__)
#pragma GCC push_options
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* placeholders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>

namespace trinity::kernels {

namespace {

inline __mmask16 TailMask16(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// acc += vpdpbusd(u8 a, s8 b), accumulating in place. Inline asm rather than the intrinsic: with
// the intrinsic, GCC 12 copies the tied accumulator of every vpdpbusd into a fresh register and
// back, and spills the accumulators of a 24-accumulator tile to the stack (4x slower). Both
// operands in registers: with a memory operand allowed, GCC folds the same activation load into
// every row's vpdpbusd, and the loads then bound the tile.
inline __m512i Dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// a * b + acc (vfmadd231ps) with both operands in registers, for the same reason.
inline __m512 FmaddReg(__m512 a, __m512 b, __m512 acc) {
  __asm__("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// ---- activation quantisation ------------------------------------------------------------------
// Reference (ref.h): a = 127 / max(max|x|, 1e-5); q = clamp(round_half_even(x * a), -128, 127).
// Same float operations in the same order (one multiply per element), so bit-identical.
float Quantize(const float* x, int64_t n, int8_t* q, int32_t* q_sum) {
  __m512 vmax = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  if (i < n) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(TailMask16(n - i), x + i)));
  const float max_abs = _mm512_reduce_max_ps(vmax);
  const float a = 127.0f / std::max(max_abs, 1e-5f);
  const __m512 va = _mm512_set1_ps(a);
  const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
  __m512i vsum = _mm512_setzero_si512();
  for (i = 0; i + 16 <= n; i += 16) {
    __m512i v = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), va),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    vsum = _mm512_add_epi32(vsum, v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(v));
  }
  if (i < n) {
    const __mmask16 m = TailMask16(n - i);
    __m512i v = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), va),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    vsum = _mm512_add_epi32(vsum, v);  // masked-off lanes loaded 0.0 -> 0
    _mm512_mask_cvtepi32_storeu_epi8(q + i, m, v);
  }
  *q_sum = _mm512_reduce_add_epi32(vsum);
  return a;
}

// ---- RmsNorm + quantisation, fused ------------------------------------------------------------
// Three passes over x (in L1): sum of squares in double (h*h is exact in double; 2 x 8 lanes),
// max |h * inv * w|, then q = round(h * inv * w * a) with the same float operations as RmsNorm
// followed by Quantize, so only the double sum's order differs from the reference. kRelu2: h =
// relu^2(x) * up, recomputed in each pass (cheaper than a store and reload).
template <bool kRelu2>
inline __m512 NormInput(const float* x, const float* up, int64_t j, __mmask16 m) {
  const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
  if constexpr (!kRelu2) {
    return v;
  } else {
    const __m512 a = _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), v, v);
    return _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, up + j));
  }
}

template <bool kRelu2>
float NormQuantizeT(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                    int32_t* q_sum) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask16(n - i);
    const __m512 h = NormInput<kRelu2>(x, up, i, m);  // masked-off lanes are 0
    const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(h));
    const __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1)));
    s0 = _mm512_fmadd_pd(a, a, s0);
    s1 = _mm512_fmadd_pd(b, b, s1);
  }
  const double sum_sq = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  const __m512 vinv = _mm512_set1_ps(inv);
  auto normed = [&](int64_t j, __mmask16 m) {
    return _mm512_mul_ps(_mm512_mul_ps(NormInput<kRelu2>(x, up, j, m), vinv), _mm512_maskz_loadu_ps(m, weight + j));
  };
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask16(n - i);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(normed(i, m)));
  }
  const float a = 127.0f / std::max(_mm512_reduce_max_ps(vmax), 1e-5f);
  const __m512 va = _mm512_set1_ps(a);
  const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
  __m512i vsum = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask16(n - i);
    __m512i v = _mm512_cvt_roundps_epi32(_mm512_mul_ps(normed(i, m), va), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    vsum = _mm512_add_epi32(vsum, v);  // masked-off lanes are 0
    _mm512_mask_cvtepi32_storeu_epi8(q + i, m, v);
  }
  *q_sum = _mm512_reduce_add_epi32(vsum);
  return a;
}

float NormQuantize(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                   int32_t* q_sum) {
  return up != nullptr ? NormQuantizeT<true>(x, up, weight, n, eps, q, q_sum)
                       : NormQuantizeT<false>(x, up, weight, n, eps, q, q_sum);
}

// Sums of the 16 lanes of a, b, c, d as one vector {sum a, sum b, sum c, sum d}.
inline __m128i Hsum4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

// ---- ternary GEMV (decode) ----------------------------------------------------------------------
// Reference: y[r] = (sum_c (code[r,c] - 1) * q[c]) * scale / act_scale, integer sum.
// One 32-byte I2_S block holds values 0..31 / 32..63 / 64..95 / 96..127 in bits 7-6 / 5-4 / 3-2 /
// 1-0. A 64-byte load takes two blocks; masked with 0xC0 | 0x30 | 0x0C | 0x03 it gives the codes of
// one plane of both blocks, scaled by 64 | 16 | 4 | 1. The activations are rearranged once per
// call to match (PlaneActivations), so vpdpbusd (u8 codes x s8 activations) takes each masked
// vector as it is: per 64 weight bytes 1 load + 4 and + 4 vpdpbusd, the four activation vectors
// shared by the R rows of a tile. Each plane's accumulator is an exact multiple of its scale, so
// an arithmetic shift undoes it exactly at the end. Lane bound: 4 x 192 x 128 per block pair,
// < 2^31 up to n_in ~ 5.6M.
//
// Rows as four row streams (row_streams.h). Zen 5, one thread, the 2560 x 6912 GEMV over 512 MiB
// of copies in 2 MiB pages, median of 2000 calls, two alternated rounds (bench/RESULTS.md,
// fourteenth session): one row at a time with broadcast 32-byte blocks (before) 30.4-30.5 GB/s,
// four streams 40.9-41.2 (a plain read of the same bytes 40-45); two threads 55.7-57.9 -> 73.7-74.7
// (plain read 81.5-83.9). From L2 (2560 x 256) 38 -> 71 GB/s: the old kernel was bound by its
// instructions, not by memory, once two cores shared the bandwidth. Four ADJACENT rows were the
// slowest of all from memory (about half the one-row kernel): one-row streams, as measured on
// Zen 4 before. Each stream prefetched 2 KB ahead (row_streams.h): 2B-4T decode, two threads,
// tokens alternated in one process, the F16 head's streams prefetched in both, 42.9 -> 46.4 tok/s
// (1 KB 45.7, 3 KB 47.3, 4 KB 45.4). Since the seventeenth session 1 KB into L1 plus 4 KB into L2
// (row_streams.h); since the eighteenth, with or without, as PrefetchTrial measures per thread.

// pairs x 256 activations from q (n values; a missing last block reads as zeros): for blocks j and
// j + 1, p[256 * (j / 2) + 64 * k + 32 * h + i] = q[128 * (j + h) + 32 * k + i].
void PlaneActivations(const int8_t* q, int64_t n, int8_t* p) {
  for (int64_t c = 0; c < n; c += 256, p += 256) {
    auto load = [&](int64_t at) {
      if (c + at + 64 <= n) return _mm512_loadu_si512(q + c + at);
      if (c + at >= n) return _mm512_setzero_si512();
      return _mm512_maskz_loadu_epi8(~uint64_t{0} >> (64 - (n - c - at)), q + c + at);
    };
    const __m512i q0 = load(0), q1 = load(64), q2 = load(128), q3 = load(192);
    _mm512_storeu_si512(p, _mm512_shuffle_i64x2(q0, q2, 0x44));  // [q0 low half, q2 low half]
    _mm512_storeu_si512(p + 64, _mm512_shuffle_i64x2(q0, q2, 0xEE));  // high halves
    _mm512_storeu_si512(p + 128, _mm512_shuffle_i64x2(q1, q3, 0x44));
    _mm512_storeu_si512(p + 192, _mm512_shuffle_i64x2(q1, q3, 0xEE));
  }
}

// A row's four plane accumulators (scaled by 64 | 16 | 4 | 1) as one vector of its integer sums.
inline __m512i PlaneSum(const __m512i (&a)[4]) {
  return _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(a[0], 6), _mm512_srai_epi32(a[1], 4)),
                          _mm512_add_epi32(_mm512_srai_epi32(a[2], 2), a[3]));
}

// Rows row0 + i * stride (i < R): out[i] = the row's integer sum over `blocks` blocks;
// kPrefetch: PrefetchStreams ahead (row_streams.h).
template <int R, bool kPrefetch>
__attribute__((always_inline)) inline void GemvTile(const uint8_t* row0, uint64_t stride, const int8_t* p, int64_t blocks,
                                                    int32_t* out) {
  const __m512i m0 = _mm512_set1_epi8(static_cast<char>(0xC0)), m1 = _mm512_set1_epi8(0x30);
  const __m512i m2 = _mm512_set1_epi8(0x0C), m3 = _mm512_set1_epi8(0x03);
  __m512i acc[R][4];
  for (int i = 0; i < R; ++i)
    for (int k = 0; k < 4; ++k) acc[i][k] = _mm512_setzero_si512();
  // Plain loads of the weights: with a masked load in the loop (to take an odd last block in it
  // too) the kernel read half as fast from memory; a lambda for the step, or arrays of the
  // activation vectors, kept the accumulators in memory; a branch in the loop cost register moves.
  int64_t j = 0;
  for (; j + 2 <= blocks; j += 2) {
    const int8_t* pj = p + 128 * j;
    const __m512i p0 = _mm512_loadu_si512(pj), p1 = _mm512_loadu_si512(pj + 64);
    const __m512i p2 = _mm512_loadu_si512(pj + 128), p3 = _mm512_loadu_si512(pj + 192);
    if constexpr (kPrefetch) PrefetchStreams<R>(row0 + 32 * j, stride);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const __m512i w = _mm512_loadu_si512(row0 + i * stride + 32 * j);
      acc[i][0] = Dpbusd(acc[i][0], _mm512_and_si512(w, m0), p0);
      acc[i][1] = Dpbusd(acc[i][1], _mm512_and_si512(w, m1), p1);
      acc[i][2] = Dpbusd(acc[i][2], _mm512_and_si512(w, m2), p2);
      acc[i][3] = Dpbusd(acc[i][3], _mm512_and_si512(w, m3), p3);
    }
  }
  if (j < blocks) {  // the last block alone: its pair's other half is zero
    const int8_t* pj = p + 128 * j;
    const __m512i p0 = _mm512_loadu_si512(pj), p1 = _mm512_loadu_si512(pj + 64);
    const __m512i p2 = _mm512_loadu_si512(pj + 128), p3 = _mm512_loadu_si512(pj + 192);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const __m512i w =
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row0 + i * stride + 32 * j)));
      acc[i][0] = Dpbusd(acc[i][0], _mm512_and_si512(w, m0), p0);
      acc[i][1] = Dpbusd(acc[i][1], _mm512_and_si512(w, m1), p1);
      acc[i][2] = Dpbusd(acc[i][2], _mm512_and_si512(w, m2), p2);
      acc[i][3] = Dpbusd(acc[i][3], _mm512_and_si512(w, m3), p3);
    }
  }
  if constexpr (R == 4) {  // the four rows' lanes summed together
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     Hsum4(PlaneSum(acc[0]), PlaneSum(acc[1]), PlaneSum(acc[2]), PlaneSum(acc[3])));
  } else {
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_epi32(PlaneSum(acc[i]));
  }
}

void TernaryGemv(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
                 int64_t row_end) {
  if (w.group_scales != nullptr) {  // per-128 group scales (rare TQ2_0 files): the reference
    TernaryMatVec(w, q, act_scale, y, row_begin, row_end);
    return;
  }
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  // The rearranged activations, 64-byte aligned: no activation load splits a cache line.
  thread_local std::vector<int8_t> buffer;
  buffer.resize(static_cast<size_t>((blocks + 1) / 2 * 256 + 64));
  int8_t* planes = buffer.data() + (-reinterpret_cast<uintptr_t>(buffer.data()) & 63);
  PlaneActivations(q, w.n_in, planes);
  auto store = [&](int64_t r, int32_t dot) { y[r] = static_cast<float>(dot - q_sum) * w.scale / act_scale; };
  const __m128i vq_sum = _mm_set1_epi32(q_sum);
  const __m128 vscale = _mm_set1_ps(w.scale), vact_scale = _mm_set1_ps(act_scale);
  thread_local PrefetchTrial trial(64, 8192);  // ~200 calls per 2B-4T token
  PrefetchedRowStreams<4>(
      trial, row_begin, row_end, static_cast<uint64_t>(row_bytes),
      [&](int64_t r, int64_t part, auto prefetch) {
        alignas(16) int32_t dot[4];
        GemvTile<4, decltype(prefetch)::value>(w.codes + r * row_bytes, static_cast<uint64_t>(part * row_bytes), planes,
                                               blocks, dot);
        // store() for the four rows at once: the same operations in the same order, per lane.
        alignas(16) float out[4];
        const __m128 v = _mm_cvtepi32_ps(_mm_sub_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(dot)), vq_sum));
        _mm_store_ps(out, _mm_div_ps(_mm_mul_ps(v, vscale), vact_scale));
        for (int i = 0; i < 4; ++i) y[r + i * part] = out[i];
      },
      [&](int64_t r, auto prefetch) {
        int32_t dot;
        GemvTile<1, decltype(prefetch)::value>(w.codes + r * row_bytes, static_cast<uint64_t>(row_bytes), planes,
                                               blocks, &dot);
        store(r, dot);
      });
}

// Values per pass of the GEMM kernels (chunks of equal length): 8 tokens' activations stay in L1.
constexpr int64_t kChunk = 2560;

// ---- ternary GEMM (prefill, batched decode) -----------------------------------------------------
// Same sum as the GEMV for R rows x T tokens, the codes unpacked in registers. One 32-byte block,
// broadcast to both halves of a zmm, gives the codes of values 0..63 scaled by 64|16 (& 0xC0|0x30,
// as the GEMV) and, shifted left by 4 bits first, the codes of values 64..127 at the SAME scales:
// both go into one accumulator per (row, token), whose lanes are exact multiples of 64|16 and are
// shifted back once at the end. Per block: R loads + R shifts + 2R ands, 2T activation loads and
// 2RT vpdpbusd. Lane bound: 2 x 4 x 192 x 128 per block, < 2^31 up to n_in ~ 1.4M.
template <int R, int T>
inline void GemmTile(const uint8_t* w0, int64_t row_bytes, const int8_t* q, int64_t q_stride, int64_t blocks,
                     int32_t (*out)[8]) {
  const __m512i mask = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(0xC0)), _mm256_set1_epi8(0x30), 1);
  __m512i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t j = 0; j < blocks; ++j) {
    __m512i ca[R], cb[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i w = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + r * row_bytes + 32 * j)));
      ca[r] = _mm512_and_si512(w, mask);
      cb[r] = _mm512_and_si512(_mm512_slli_epi16(w, 4), mask);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512i qa = _mm512_loadu_si512(q + t * q_stride + 128 * j);
      const __m512i qb = _mm512_loadu_si512(q + t * q_stride + 128 * j + 64);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r][t] = Dpbusd(acc[r][t], ca[r], qa);
        acc[r][t] = Dpbusd(acc[r][t], cb[r], qb);
      }
    }
  }
  // Four tokens' sums of a row at once: shift back, then interleave-add (Hsum4).
  const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi32(6), _mm256_set1_epi32(4), 1);
  const __m512i zero = _mm512_setzero_si512();
  auto lane = [&](int r, int t) { return t < T ? _mm512_srav_epi32(acc[r][t < T ? t : 0], shift) : zero; };
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int t = 0; t < T; t += 4) {
      __m128i* o = reinterpret_cast<__m128i*>(&out[r][t]);
      _mm_storeu_si128(o, _mm_add_epi32(_mm_loadu_si128(o), Hsum4(lane(r, t), lane(r, t + 1), lane(r, t + 2), lane(r, t + 3))));
    }
  }
}

// Tiles of R <= 4 rows x T <= 4 tokens, and of R <= 2 rows x 5..8 tokens (at most 16 accumulators).
template <int R>
void GemmTileT(int t_count, const uint8_t* w0, int64_t row_bytes, const int8_t* q, int64_t q_stride, int64_t blocks,
               int32_t (*out)[8]) {
  if constexpr (R <= 2) {
    switch (t_count) {
      case 8: return GemmTile<R, 8>(w0, row_bytes, q, q_stride, blocks, out);
      case 7: return GemmTile<R, 7>(w0, row_bytes, q, q_stride, blocks, out);
      case 6: return GemmTile<R, 6>(w0, row_bytes, q, q_stride, blocks, out);
      case 5: return GemmTile<R, 5>(w0, row_bytes, q, q_stride, blocks, out);
      default: break;
    }
  }
  switch (t_count) {
    case 4: return GemmTile<R, 4>(w0, row_bytes, q, q_stride, blocks, out);
    case 3: return GemmTile<R, 3>(w0, row_bytes, q, q_stride, blocks, out);
    case 2: return GemmTile<R, 2>(w0, row_bytes, q, q_stride, blocks, out);
    default: return GemmTile<R, 1>(w0, row_bytes, q, q_stride, blocks, out);
  }
}

// Batches of few tokens (batched decode: one token per sequence): the register tile over panels
// of kRegPanelRows rows, kRegTokens tokens at a time (2 rows x 8 tokens = 16 accumulators; 4 rows
// when at most 4 tokens), the values in chunks of at most kChunk (8 tokens' activations, 20 KB,
// stay in L1 while the rows stream by). Each row is read from memory once per call when n_tok <=
// kRegTokens. Integer partial sums per chunk, one float epilogue: bit-identical to the reference.
constexpr int64_t kRegTokens = 8;
constexpr int64_t kRegPanelRows = 16;

void TernaryGemmRegs(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t* q_sums,
                     const float* act_scales, int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  const int64_t n_chunks = (w.n_in + kChunk - 1) / kChunk;
  const int64_t chunk_blocks = (blocks + n_chunks - 1) / n_chunks;
  for (int64_t p0 = row_begin; p0 < row_end; p0 += kRegPanelRows) {
    const int64_t pr = std::min(kRegPanelRows, row_end - p0);
    {  // The next panel is fetched meanwhile: 8 tokens of 2560 x 6912 took 1.2 ms without, 0.6 with.
      const int64_t next = p0 + pr, nr = std::min(kRegPanelRows, row_end - next);
      const uint8_t* np = w.codes + next * row_bytes;
      for (int64_t o = 0; o < nr * row_bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(np + o), _MM_HINT_T1);
    }
    for (int64_t tb = 0; tb < n_tok; tb += kRegTokens) {
      const int tc = static_cast<int>(std::min(kRegTokens, n_tok - tb));
      const int tile_rows = tc <= 4 ? 4 : 2;
      alignas(16) int32_t dot[kRegPanelRows][8] = {};
      for (int64_t jb = 0; jb < blocks; jb += chunk_blocks) {
        const int64_t nb = std::min(chunk_blocks, blocks - jb);
        const int8_t* qt = q + tb * q_stride + 128 * jb;
        for (int64_t r = 0; r < pr; r += tile_rows) {
          const uint8_t* w0 = w.codes + (p0 + r) * row_bytes + 32 * jb;
          switch (std::min<int64_t>(tile_rows, pr - r)) {
            case 4: GemmTileT<4>(tc, w0, row_bytes, qt, q_stride, nb, dot + r); break;
            case 3: GemmTileT<3>(tc, w0, row_bytes, qt, q_stride, nb, dot + r); break;
            case 2: GemmTileT<2>(tc, w0, row_bytes, qt, q_stride, nb, dot + r); break;
            default: GemmTileT<1>(tc, w0, row_bytes, qt, q_stride, nb, dot + r); break;
          }
        }
      }
      for (int64_t i = 0; i < pr; ++i)
        for (int k = 0; k < tc; ++k)
          y[(tb + k) * y_stride + p0 + i] = static_cast<float>(dot[i][k] - q_sums[tb + k]) * w.scale / act_scales[tb + k];
    }
  }
}

// Prefill batches (many tokens): the rows a thread owns are unpacked once per call, a panel of
// kPanelRows rows at a time, into a stack scratch of u8 codes in activation order (kPanelRows x
// n_in bytes, L2-resident), and every token of the batch then runs over that panel with no
// unpacking in the inner loop: a 4-row x 6-token register tile holds 24 accumulators, and per 64
// values it does 4 code loads + 6 activation loads for 24 vpdpbusd. The values are split into
// chunks of at most kChunk (the tile's 6 activation rows + 4 code rows of one chunk stay in L1
// while the panel's 4-row groups take turns). Each chunk's 24 lane-wise sums are reduced four
// rows at a time (interleave + add) into one vector of 4 row sums per token and added to int32
// partial sums; the float epilogue runs once. Same integer sums as the reference, same float
// epilogue, so bit-identical.
constexpr int kTileRows = 4;
constexpr int kTileTokens = 6;
constexpr int64_t kPanelRows = 16;
constexpr int64_t kScratchBytes = 128 * 1024;
// Below this many tokens the unpack-to-scratch pass costs more than it saves (each unpacked
// panel is reused by too few tokens): the register-tile kernel above unpacks in registers. 8
// tokens (8-stream decode), 2560 x 6912, kernels_bench alternated: registers 0.58-0.84 ms,
// scratch 0.69-1.0; 12 tokens 0.93-1.10 against 1.09-1.18; 16 tokens even.
constexpr int64_t kScratchMinTokens = 16;

// One I2_S row (blocks x 32 bytes) -> blocks x 128 u8 codes in activation order.
inline void UnpackRow(const uint8_t* row, int64_t blocks, uint8_t* out) {
  const __m512i shift_a = _mm512_inserti64x4(_mm512_set1_epi16(6), _mm256_set1_epi16(4), 1);
  const __m512i shift_b = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(0), 1);
  const __m512i three = _mm512_set1_epi8(3);
  for (int64_t j = 0; j < blocks; ++j) {
    const __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * j)));
    _mm512_store_si512(out + 128 * j, _mm512_and_si512(_mm512_srlv_epi16(w, shift_a), three));
    _mm512_store_si512(out + 128 * j + 64, _mm512_and_si512(_mm512_srlv_epi16(w, shift_b), three));
  }
}

// R rows (u8 codes, n_in apart, 64-byte aligned) x T tokens over values [0, len) of wu and q:
// dot[t][0..4) += the R row sums of token t (lanes >= R get 0). Not inlined: GCC then keeps all
// 24 accumulators in registers.
template <int R, int T>
__attribute__((noinline)) void ScratchTile(const uint8_t* wu, int64_t n_in, const int8_t* q, int64_t q_stride,
                                           int64_t len, __m128i* dot) {
  __m512i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t c = 0; c < len; c += 64) {
    __m512i w[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) w[r] = _mm512_load_si512(wu + r * n_in + c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512i qv = _mm512_loadu_si512(q + t * q_stride + c);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = Dpbusd(acc[r][t], w[r], qv);
    }
  }
  const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    dot[t] = _mm_add_epi32(dot[t], Hsum4(acc[0][t], R > 1 ? acc[R > 1 ? 1 : 0][t] : zero,
                                         R > 2 ? acc[R > 2 ? 2 : 0][t] : zero, R > 3 ? acc[R > 3 ? 3 : 0][t] : zero));
  }
}

template <int R>
void ScratchTileT(int t_count, const uint8_t* wu, int64_t n_in, const int8_t* q, int64_t q_stride, int64_t len,
                  __m128i* dot) {
  switch (t_count) {
    case 6: ScratchTile<R, 6>(wu, n_in, q, q_stride, len, dot); break;
    case 5: ScratchTile<R, 5>(wu, n_in, q, q_stride, len, dot); break;
    case 4: ScratchTile<R, 4>(wu, n_in, q, q_stride, len, dot); break;
    case 3: ScratchTile<R, 3>(wu, n_in, q, q_stride, len, dot); break;
    case 2: ScratchTile<R, 2>(wu, n_in, q, q_stride, len, dot); break;
    default: ScratchTile<R, 1>(wu, n_in, q, q_stride, len, dot); break;
  }
}

void TernaryGemmScratch(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t* q_sums,
                        const float* act_scales, int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin,
                        int64_t row_end) {
  const int64_t n_in = w.n_in, row_bytes = n_in / 4, blocks = n_in / 128;
  // The scratch lives on this thread's stack (no allocation; no standard-library template gets
  // instantiated in this AVX-512 file). n_in is a multiple of 128, so rows stay 64-byte aligned.
  alignas(64) uint8_t scratch[kScratchBytes];
  const int64_t panel_rows = std::min<int64_t>(kPanelRows, kScratchBytes / n_in);
  // Chunks of equal length (multiples of 64) of at most kChunk values.
  const int64_t n_chunks = (n_in + kChunk - 1) / kChunk;
  const int64_t chunk = (n_in / 64 + n_chunks - 1) / n_chunks * 64;
  const __m128 vscale = _mm_set1_ps(w.scale);
  for (int64_t p0 = row_begin; p0 < row_end; p0 += panel_rows) {
    const int64_t pr = std::min(panel_rows, row_end - p0);
    for (int64_t i = 0; i < pr; ++i) UnpackRow(w.codes + (p0 + i) * row_bytes, blocks, scratch + i * n_in);
    // The next panel's codes are fetched while this one computes: unpacking waited on each
    // panel's loads (without them in the way, 8 tokens of 2560 x 6912 took 0.44 ms instead of
    // 0.96); with this prefetch 0.77-0.87 ms (16 tokens 1.32 -> 1.17-1.23, 64 tokens 3.75 ->
    // 3.58-3.66; kernels_bench, alternated).
    {
      const int64_t next = p0 + pr, nr = std::min(panel_rows, row_end - next);
      const uint8_t* np = w.codes + next * row_bytes;
      for (int64_t o = 0; o < nr * row_bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(np + o), _MM_HINT_T1);
    }
    for (int64_t t = 0; t < n_tok; t += kTileTokens) {
      const int tc = static_cast<int>(std::min<int64_t>(kTileTokens, n_tok - t));
      __m128i dot[kPanelRows / kTileRows][kTileTokens];
      for (auto& row_group : dot)
        for (__m128i& d : row_group) d = _mm_setzero_si128();
      for (int64_t c = 0; c < n_in; c += chunk) {
        const int64_t len = std::min(chunk, n_in - c);
        const int8_t* qt = q + t * q_stride + c;
        for (int64_t r = 0; r < pr; r += kTileRows) {
          const int rc = static_cast<int>(std::min<int64_t>(kTileRows, pr - r));
          const uint8_t* wu = scratch + r * n_in + c;
          __m128i* d = dot[r / kTileRows];
          switch (rc) {
            case 4: ScratchTileT<4>(tc, wu, n_in, qt, q_stride, len, d); break;
            case 3: ScratchTileT<3>(tc, wu, n_in, qt, q_stride, len, d); break;
            case 2: ScratchTileT<2>(tc, wu, n_in, qt, q_stride, len, d); break;
            default: ScratchTileT<1>(tc, wu, n_in, qt, q_stride, len, d); break;
          }
        }
      }
      // y = (dot - q_sum) * scale / act_scale, as the reference (float(int) * scale / act_scale).
      for (int64_t r = 0; r < pr; r += kTileRows) {
        const __mmask8 m = static_cast<__mmask8>((1u << std::min<int64_t>(kTileRows, pr - r)) - 1u);
        for (int k = 0; k < tc; ++k) {
          const __m128 v = _mm_div_ps(
              _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(dot[r / kTileRows][k], _mm_set1_epi32(q_sums[t + k]))), vscale),
              _mm_set1_ps(act_scales[t + k]));
          _mm_mask_storeu_ps(y + (t + k) * y_stride + p0 + r, m, v);
        }
      }
    }
  }
}

void TernaryGemm(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t* q_sums,
                 const float* act_scales, int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin,
                 int64_t row_end) {
  if (n_tok == 1) {
    TernaryGemv(w, q, q_sums[0], act_scales[0], y, row_begin, row_end);
    return;
  }
  if (w.group_scales != nullptr) {
    for (int64_t t = 0; t < n_tok; ++t)
      TernaryMatVec(w, q + t * q_stride, act_scales[t], y + t * y_stride, row_begin, row_end);
    return;
  }
  if (n_tok >= kScratchMinTokens && w.n_in <= kScratchBytes) {
    TernaryGemmScratch(w, q, q_stride, q_sums, act_scales, n_tok, y, y_stride, row_begin, row_end);
    return;
  }
  TernaryGemmRegs(w, q, q_stride, q_sums, act_scales, n_tok, y, y_stride, row_begin, row_end);
}

// ---- dense GEMV (LM head) -------------------------------------------------------------------------
// Reference: y[r] = sum_c W[r,c] x[c]. F16 rows: R rows x V vectors at a time, two accumulators per
// (row, vector) pair over steps of 32 values (vcvtph2ps, f32 FMA), the tail in steps of 16 (the
// last masked) into the first, then one lane reduction. Every pair sees the same operations in the
// same order whatever R and V are, so the GEMV (R = 4 rows from four row streams, V = 1; rows
// r_step apart) and the batched head (dense_gemm, R = 4 adjacent rows x V = 3: 24 accumulators)
// give bit-identical results: batched decode does not change any sequence's logits. The streams
// against one row at a time, Zen 5, one thread, 2560 x 8192 slices, three alternated rounds
// (bench/gemv_best_bench f16): mean 24.4-25.0 -> 24.3-32.6 GB/s, best 29.1-29.8 -> 33.4-40.6.
// The GEMV's streams prefetched ahead (row_streams.h), the whole 2B-4T head in a pool, calls
// alternated: two threads, median 54.7 -> 61.2 GB/s (1.5 KB ahead 64.3, 3 KB 55.8); one thread
// 23.9 -> 28.3 (1.5 KB 29.9). On the eighteenth session's host the prefetch cost instead (one
// thread 24 GB/s with, 28-30 without, a plain read 28-29), so PrefetchTrial picks. That host's
// ceiling from cache, ~59 GB/s, is its 512-bit rate (one zmm FMA a cycle): an integer conversion
// instead of vcvtph2ps (vpmovsxwd, shift, and; activations scaled by 2^112, exact) was slower.
// Two accumulators rather than four let the batched tile hold 12 pairs instead of 6: per 16
// values 4 conversions + 7 loads for 12 FMAs, against 2 + 5 for 6 (8 vectors x 32768 rows,
// kernels_bench: 21.5-22.1 -> 15.6 ms; in L2 0.033 -> 0.017 ms).
// F32 rows: one row, four accumulators (64 values per step). Float sums in another order than the
// reference: equal to within rounding.
// kPrefetch (the GEMV's row streams, V = 1): PrefetchStreams ahead; the batched head reads blocks
// from L2 and does not.
template <int R, int V, bool kPrefetch = false>
inline void DenseRowsDotsF16(const uint16_t* row0, uint64_t row_stride, const float* x, int64_t x_stride, int64_t n,
                             float* const* ys, int64_t r, int64_t r_step = 1) {
  __m512 acc[R][V][2];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v][0] = acc[i][v][1] = _mm512_setzero_ps();
  auto step = [&](int64_t c, int k, __mmask16 m) {
    __m512 wv[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) wv[i] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row0 + i * row_stride + c));
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + v * x_stride + c);
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) acc[i][v][k] = FmaddReg(wv[i], xv, acc[i][v][k]);
    }
  };
  constexpr __mmask16 kAll = 0xffff;
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    if constexpr (kPrefetch) PrefetchStreams<R>(row0 + c, 2 * row_stride);
    step(c, 0, kAll);
    step(c + 16, 1, kAll);
  }
  for (; c < n; c += 16) step(c, 0, n - c >= 16 ? kAll : TailMask16(n - c));  // masked-off lanes load 0
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) ys[v][r + i * r_step] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][v][0], acc[i][v][1]));
}

// Rows [row_begin, row_end) x V vectors, R rows at a time and the rest one by one.
template <int R, int V>
void DenseRowsF16(const DenseView& w, const float* x, int64_t x_stride, float* const* ys, int64_t row_begin,
                  int64_t row_end) {
  const uint64_t stride = w.row_bytes / 2;
  auto row = [&](int64_t r) { return reinterpret_cast<const uint16_t*>(w.data + r * w.row_bytes); };
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) DenseRowsDotsF16<R, V>(row(r), stride, x, x_stride, w.n_in, ys, r);
  for (; r < row_end; ++r) DenseRowsDotsF16<1, V>(row(r), stride, x, x_stride, w.n_in, ys, r);
}

inline float DenseRowDotF32(const float* row, const float* x, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= n; c += 64) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c), _mm512_loadu_ps(x + c), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 16), _mm512_loadu_ps(x + c + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 32), _mm512_loadu_ps(x + c + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(row + c + 48), _mm512_loadu_ps(x + c + 48), acc3);
  }
  for (; c < n; c += 16) {
    const __mmask16 m = n - c >= 16 ? static_cast<__mmask16>(0xffff) : TailMask16(n - c);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, row + c), _mm512_maskz_loadu_ps(m, x + c), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

void DenseGemv(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (w.type == TensorType::kF16) {
    // Four row streams (row_streams.h), each row's sum as in a one-row tile.
    float* ys[1] = {y};
    const uint64_t stride = w.row_bytes / 2;
    auto row = [&](int64_t r) { return reinterpret_cast<const uint16_t*>(w.data + r * w.row_bytes); };
    thread_local PrefetchTrial trial(8, 128);  // one call per token and thread
    PrefetchedRowStreams<4>(
        trial, row_begin, row_end, w.row_bytes,
        [&](int64_t r, int64_t part, auto prefetch) {
          DenseRowsDotsF16<4, 1, decltype(prefetch)::value>(row(r), part * stride, x, 0, w.n_in, ys, r, part);
        },
        [&](int64_t r, auto prefetch) {
          DenseRowsDotsF16<1, 1, decltype(prefetch)::value>(row(r), stride, x, 0, w.n_in, ys, r);
        });
    return;
  }
  if (w.type == TensorType::kF32) {
    for (int64_t r = row_begin; r < row_end; ++r)
      y[r] = DenseRowDotF32(reinterpret_cast<const float*>(w.data + r * w.row_bytes), x, w.n_in);
    return;
  }
  DenseMatVec(w, x, y, row_begin, row_end);
}

// Batched LM head: rows go in blocks of kDenseBlock (F16: 160 KB at n_in 2560, L2-resident), and
// every tile of up to kDenseTile vectors runs over the whole block before the next tile, so a tile's
// vectors (3 x 10 KB) stay in L1 while the block's rows come from DRAM once and from L2 for the
// later tiles. (Software prefetch of the next block, in one burst or spread over the first tile,
// measured no different in kernels_bench or end to end: the hardware prefetcher keeps up.)
void DenseGemm(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys, int64_t row_begin,
               int64_t row_end) {
  if (w.type != TensorType::kF16 || n_x == 1) {
    for (int64_t i = 0; i < n_x; ++i) DenseGemv(w, x + i * x_stride, ys[i], row_begin, row_end);
    return;
  }
  constexpr int kTileRows = 4;
  constexpr int64_t kDenseTile = 3;
  constexpr int64_t kDenseBlock = 32;
  for (int64_t b = row_begin; b < row_end; b += kDenseBlock) {
    const int64_t e = std::min(row_end, b + kDenseBlock);
    for (int64_t i = 0; i < n_x; i += kDenseTile) {
      const float* xi = x + i * x_stride;
      float* const* yi = ys + i;
      switch (std::min(kDenseTile, n_x - i)) {
        case 3: DenseRowsF16<kTileRows, 3>(w, xi, x_stride, yi, b, e); break;
        case 2: DenseRowsF16<kTileRows, 2>(w, xi, x_stride, yi, b, e); break;
        default: DenseRowsF16<kTileRows, 1>(w, xi, x_stride, yi, b, e); break;
      }
    }
  }
}

// ---- 8-bit GEMV (optional quantised LM head) --------------------------------------------------------
// Reference: y[r] = (sum_c (b[r,c] - 128) * q[c]) * scales[r] / act_scale, integer sum. The stored
// bytes b are the unsigned operand of vpdpbusd as they are: sum(b*q) - 128*sum(q) is the dot. One
// load + one vpdpbusd per 64 weight bytes, two accumulators per row; four row streams, prefetched
// ahead where PrefetchTrial finds that it pays (row_streams.h). Lane bound: n_in/64 steps x 4 x
// 255 x 128 < 2^31 up to n_in ~ 4M.
// Rows row0 + i * stride (i < R): out[i] = the row's integer dot with q (n values).
template <int R, bool kPrefetch>
inline void Q8Tile(const uint8_t* row0, uint64_t stride, const int8_t* q, int64_t n, int32_t* out) {
  __m512i acc[R][2];
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
  int64_t c = 0;
  for (; c + 128 <= n; c += 128) {
    const __m512i q0 = _mm512_loadu_si512(q + c), q1 = _mm512_loadu_si512(q + c + 64);
    if constexpr (kPrefetch) {
      PrefetchStreams<R>(row0 + c, stride);
      PrefetchStreams<R>(row0 + c + 64, stride);
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = row0 + i * stride + c;
      acc[i][0] = Dpbusd(acc[i][0], _mm512_loadu_si512(row), q0);
      acc[i][1] = Dpbusd(acc[i][1], _mm512_loadu_si512(row + 64), q1);
    }
  }
  for (; c < n; c += 64) {  // masked-off lanes load 0 on both sides and add nothing
    const __mmask64 m = n - c >= 64 ? ~__mmask64{0} : (~uint64_t{0}) >> (64 - (n - c));
    const __m512i qv = _mm512_maskz_loadu_epi8(m, q + c);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) acc[i][0] = Dpbusd(acc[i][0], _mm512_maskz_loadu_epi8(m, row0 + i * stride + c), qv);
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) out[i] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[i][0], acc[i][1]));
}

// Four row streams (row_streams.h), as the ternary GEMV and the F16 head: Zen 5, one thread,
// 2560 x 8192 slices, three alternated rounds (bench/gemv_best_bench q8): one row at a time with
// the 4 KB prefetch mean 24.1-24.7 GB/s, four streams 30.7-31.9; without the prefetch 20.1-22.4.
// With four streams 2 KB ahead beat 4 KB: 2B-4T decode with this head, two threads, tokens
// alternated in one process, 56.2 -> 58.9 tok/s (1 KB 59.3, 3 KB 57.7). Since the seventeenth
// session 1 KB into L1 plus 4 KB into L2 (row_streams.h): 1.36 -> 1.43x the F16-head decode in one
// alternated run, 1.40 -> 1.38x in another.
// Since the eighteenth session, with or without, as PrefetchTrial measures per thread.
void Q8Gemv(const Q8View& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
            int64_t row_end) {
  const int32_t offset = 128 * q_sum;
  auto store = [&](int64_t r, int32_t dot) { y[r] = static_cast<float>(dot - offset) * w.scales[r] / act_scale; };
  thread_local PrefetchTrial trial(8, 128);  // one call per token and thread
  PrefetchedRowStreams<4>(
      trial, row_begin, row_end, w.row_bytes,
      [&](int64_t r, int64_t part, auto prefetch) {
        int32_t dot[4];
        Q8Tile<4, decltype(prefetch)::value>(w.data + r * w.row_bytes, part * w.row_bytes, q, w.n_in, dot);
        for (int i = 0; i < 4; ++i) store(r + i * part, dot[i]);
      },
      [&](int64_t r, auto prefetch) {
        int32_t dot;
        Q8Tile<1, decltype(prefetch)::value>(w.data + r * w.row_bytes, w.row_bytes, q, w.n_in, &dot);
        store(r, dot);
      });
}

// ---- attention --------------------------------------------------------------------------------------
// Reference (ref.h): scores = q.k / sqrt(head_dim); softmax (max-subtracted, f32); out = sum p v.
// Vectorised dot products and p*v accumulation; exp stays std::exp (same as the reference).
inline float Dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc);
  if (d < n) {
    const __mmask16 m = TailMask16(n - d);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

void AttentionHeads(const float* q, const float* k_cache, const float* v_cache, int64_t n_kv, int64_t n_head,
                    int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
                    int64_t head_end) {
  const int64_t group = n_head / n_head_kv;
  const int64_t kv_stride = n_head_kv * head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t h = head_begin; h < head_end; ++h) {
    const float* qh = q + h * head_dim;
    const int64_t kvh = h / group;
    float max_score = -INFINITY;
    for (int64_t t = 0; t < n_kv; ++t) {
      scratch[t] = Dot(qh, k_cache + t * kv_stride + kvh * head_dim, head_dim) * scale;
      max_score = std::max(max_score, scratch[t]);
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n_kv; ++t) {
      scratch[t] = std::exp(scratch[t] - max_score);
      sum += scratch[t];
    }
    float* oh = out + h * head_dim;
    for (int64_t d = 0; d < head_dim; d += 64) {
      // Four 16-float accumulators cover 64 dims; masked at the tail.
      __m512 acc[4];
      __mmask16 m[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t left = head_dim - d - 16 * i;
        m[i] = left >= 16 ? static_cast<__mmask16>(0xffff) : left > 0 ? TailMask16(left) : static_cast<__mmask16>(0);
        acc[i] = _mm512_setzero_ps();
      }
      const float* v = v_cache + kvh * head_dim + d;
      for (int64_t t = 0; t < n_kv; ++t, v += kv_stride) {
        const __m512 p = _mm512_set1_ps(scratch[t] / sum);
        for (int i = 0; i < 4; ++i) acc[i] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[i], v + 16 * i), acc[i]);
      }
      for (int i = 0; i < 4; ++i) _mm512_mask_storeu_ps(oh + d + 16 * i, m[i], acc[i]);
    }
  }
}

// ---- attention over a batch of query tokens (prefill) ------------------------------------------
// The driver (blocks of 64 keys, K transposed once per block, online softmax) is shared by the
// paths: attention_prefill.inc. Here one block for up to 4 heads of one token: scores 4 heads x 64
// keys at a time (16 accumulators: per dim one broadcast per head and 4 K loads), p.V accumulated
// into `out` 64 dims at a time.

// f[0..n) = the IEEE halves h[0..n) as floats (vcvtph2ps: exact), for the f16 KV cache.
inline void HalfToFloat(const uint16_t* h, int64_t n, float* f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(f + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
  for (; i < n; ++i) f[i] = Fp16ToFp32(h[i]);
}

#include "engine/kernels/attention_prefill.inc"

// e^x for 16 floats: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial (relative error ~2e-7),
// times 2^n with vscalefps. Inputs below -87 give ~0 (the caller masks true zeros).
inline __m512 Exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.3981999507e-3f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// Scores of R query heads (qh[r], head_dim floats each) against the 64 keys of a transposed
// block kt (head_dim rows of 64 floats): s[r][0..64) = scale * q_r . k.
template <int R>
inline void BlockScores(const float* const* qh, const float* kt, int64_t head_dim, float scale, float (*s)[kKeyBlock]) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t d = 0; d < head_dim; ++d) {
    const float* kd = kt + d * kKeyBlock;
    const __m512 k0 = _mm512_load_ps(kd), k1 = _mm512_load_ps(kd + 16), k2 = _mm512_load_ps(kd + 32),
                 k3 = _mm512_load_ps(kd + 48);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 qv = _mm512_set1_ps(qh[r][d]);
      acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(qv, k2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(qv, k3, acc[r][3]);
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) _mm512_store_ps(s[r] + 16 * i, _mm512_mul_ps(acc[r][i], vs));
}

// o_r[0..16*Z) = o_r * corr[r] + sum_k p[r][k] v_k[0..16*Z) for R rows, nv keys (v rows kv_stride apart).
template <int R, int Z>
inline void BlockPv(float* const* o, const float (*p)[kKeyBlock], const float* corr, const float* v, int64_t kv_stride,
                    int64_t nv) {
  __m512 acc[R][Z];
  for (int r = 0; r < R; ++r) {
    const __m512 c = _mm512_set1_ps(corr[r]);
    for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_mul_ps(_mm512_loadu_ps(o[r] + 16 * z), c);
  }
  for (int64_t k = 0; k < nv; ++k, v += kv_stride) {
    __m512 vv[Z];
    for (int z = 0; z < Z; ++z) vv[z] = _mm512_loadu_ps(v + 16 * z);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 pv = _mm512_set1_ps(p[r][k]);
      for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_fmadd_ps(pv, vv[z], acc[r][z]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < Z; ++z) _mm512_storeu_ps(o[r] + 16 * z, acc[r][z]);
}

template <int R>
void BlockPvAll(float* const* o, const float (*p)[kKeyBlock], const float* corr, const float* v, int64_t kv_stride,
                int64_t nv, int64_t head_dim) {
  float* oz[R];
  for (int64_t d = 0; d < head_dim; d += 64) {
    for (int r = 0; r < R; ++r) oz[r] = o[r] + d;
    switch (std::min<int64_t>(4, (head_dim - d) / 16)) {
      case 4: BlockPv<R, 4>(oz, p, corr, v + d, kv_stride, nv); break;
      case 3: BlockPv<R, 3>(oz, p, corr, v + d, kv_stride, nv); break;
      case 2: BlockPv<R, 2>(oz, p, corr, v + d, kv_stride, nv); break;
      default: BlockPv<R, 1>(oz, p, corr, v + d, kv_stride, nv); break;
    }
  }
}

// One block of keys [kb, kb + nv) for R heads of one token: scores, online-softmax update of
// m/l, rescale + accumulate the outputs.
template <int R>
void BlockUpdate(const float* const* qh, float* const* o, float* m, float* l, const float* kt, const float* v,
                 int64_t kv_stride, int64_t nv, int64_t head_dim, float scale) {
  alignas(64) float s[R][kKeyBlock];
  BlockScores<R>(qh, kt, head_dim, scale, s);
  float corr[R];
  for (int r = 0; r < R; ++r) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < nv; i += 16) {
      const __mmask16 mk = nv - i >= 16 ? static_cast<__mmask16>(0xffff) : TailMask16(nv - i);
      vmax = _mm512_mask_max_ps(vmax, mk, vmax, _mm512_load_ps(s[r] + i));
    }
    const float m_new = std::max(m[r], _mm512_reduce_max_ps(vmax));
    corr[r] = std::exp(m[r] - m_new);  // 0 on the first block (m = -inf)
    const __m512 vm = _mm512_set1_ps(m_new);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t i = 0; i < kKeyBlock; i += 16) {
      const __mmask16 mk = nv - i >= 16 ? static_cast<__mmask16>(0xffff) : nv > i ? TailMask16(nv - i) : static_cast<__mmask16>(0);
      const __m512 e = _mm512_maskz_mov_ps(mk, Exp16(_mm512_sub_ps(_mm512_load_ps(s[r] + i), vm)));
      _mm512_store_ps(s[r] + i, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    l[r] = l[r] * corr[r] + _mm512_reduce_add_ps(vsum);
    m[r] = m_new;
  }
  BlockPvAll<R>(o, s, corr, v, kv_stride, nv, head_dim);
}

template <class T>
void AttentionPrefill(const float* q, int64_t q_stride, const T* k_cache, const T* v_cache, int64_t pos,
                      int64_t n_head, int64_t n_head_kv, int64_t head_dim, float* out, int64_t out_stride,
                      int64_t t_begin, int64_t t_end, int64_t kvh_begin, int64_t kvh_end) {
  auto block_update = [](auto heads, const float* const* qh, float* const* o, float* m, float* l, const float* kt,
                         const float* v, int64_t kv_stride, int64_t nv, int64_t head_dim, float scale) {
    BlockUpdate<decltype(heads)::value>(qh, o, m, l, kt, v, kv_stride, nv, head_dim, scale);
  };
  AttentionPrefillDriver(q, q_stride, k_cache, v_cache, pos, n_head, n_head_kv, head_dim, out, out_stride, t_begin,
                         t_end, kvh_begin, kvh_end, block_update);
}

}  // namespace

const CpuKernels& Avx512Kernels() {
  static const CpuKernels table = [] {
    CpuKernels k;
    k.path = CpuPath::kAvx512;
    k.quantize = Quantize;
    k.ternary_gemv = TernaryGemv;
    k.ternary_gemm = TernaryGemm;
    k.dense_gemv = DenseGemv;
    k.dense_gemm = DenseGemm;
    k.q8_gemv = Q8Gemv;
    k.attention = AttentionHeads;
    k.attention_prefill = AttentionPrefill<float>;
    k.attention_f16 = Attention;  // the reference's loops: only for shapes the two below do not cover
    k.attention_prefill_f16 = AttentionPrefill<uint16_t>;
    // Every AVX-512 CPU runs AVX2 + FMA + F16C: the decode attention is memory-bound, and the
    // 8-float kernel (measured on Zen 3, bench/RESULTS.md) serves this path too.
    k.attention_decode = Avx2Kernels().attention_decode;
    k.attention_decode_f16 = Avx2Kernels().attention_decode_f16;
    k.norm_quantize = NormQuantize;
    return k;
  }();
  return table;
}

}  // namespace trinity::kernels

#pragma GCC diagnostic pop
#pragma GCC pop_options

#else  // not x86-64: never selected (DetectCpuPath returns kRef)

namespace trinity::kernels {
const CpuKernels& Avx512Kernels() { return RefKernels(); }
}  // namespace trinity::kernels

#endif
