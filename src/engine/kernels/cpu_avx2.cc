// AVX2 + FMA + F16C kernels (any x86-64 since Haswell / Zen 1). Compiled for that target with a
// pragma after the standard headers (see cpu_avx512.cc for why).
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
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

namespace trinity::kernels {

namespace {

inline float HsumPs(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float HmaxPs(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int32_t HsumEpi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// acc += vpmaddubsw(u8 c, s8 32 bytes at q), int16 lanes, accumulating in place. Inline asm: with
// the intrinsics GCC 12 reassociates a many-token tile's adds and keeps its accumulators on the
// stack.
inline __m256i MaddubsAdd(__m256i acc, __m256i c, const int8_t* q) {
  __m256i product;
  __asm__("vpmaddubsw %3, %2, %1\n\tvpaddw %1, %0, %0"
          : "+x"(acc), "=&x"(product)
          : "x"(c), "m"(*reinterpret_cast<const __m256i_u*>(q)));
  return acc;
}

// ---- activation quantisation ------------------------------------------------------------------
// Reference (ref.h): a = 127 / max(max|x|, 1e-5); q = clamp(round_half_even(x * a), -128, 127).
// Bit-identical: one float multiply, vcvtps2dq rounds half to even (MXCSR default, as nearbyint).
float Quantize(const float* x, int64_t n, int8_t* q, int32_t* q_sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 vmax = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  float max_abs = 0.0f;
  {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    for (float v : lanes) max_abs = std::max(max_abs, v);
  }
  for (; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  const float a = 127.0f / std::max(max_abs, 1e-5f);
  const __m256 va = _mm256_set1_ps(a);
  const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
  __m256i vsum = _mm256_setzero_si256();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), va));
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    vsum = _mm256_add_epi32(vsum, v);
    // int32 -> int8 (values already in range): pack to 16 then 8 bits, fix the lane order.
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i w8 = _mm_packs_epi16(w16, w16);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), w8);
  }
  int32_t s = HsumEpi32(vsum);
  for (; i < n; ++i) {
    const float v = std::nearbyint(x[i] * a);
    q[i] = static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f));
    s += q[i];
  }
  *q_sum = s;
  return a;
}

// ---- RmsNorm + quantisation, fused ------------------------------------------------------------
// As in cpu_avx512.cc: three passes over x (in L1): sum of squares in double (h*h is exact in
// double; 2 x 4 lanes), max |h * inv * w|, then q = round(h * inv * w * a) with the same float
// operations as RmsNorm followed by Quantize, so only the double sum's order differs from the
// reference. kRelu2: h = relu^2(x) * up, recomputed in each pass. The tail (n % 8) goes through a
// masked load (zeros) and a scalar store.
inline __m256i TailMask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <bool kRelu2>
inline __m256 NormInput(const float* x, const float* up, int64_t j, __m256i m) {
  const __m256 v = _mm256_maskload_ps(x + j, m);
  if constexpr (!kRelu2) {
    return v;
  } else {
    const __m256 a = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_mul_ps(v, v));
    return _mm256_mul_ps(a, _mm256_maskload_ps(up + j, m));
  }
}

template <bool kRelu2>
float NormQuantizeT(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                    int32_t* q_sum) {
  const __m256i all = _mm256_set1_epi32(-1);
  auto mask = [&](int64_t i) { return n - i >= 8 ? all : TailMask8(n - i); };
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 h = NormInput<kRelu2>(x, up, i, mask(i));  // masked-off lanes are 0
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(h));
    const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(h, 1));
    s0 = _mm256_fmadd_pd(a, a, s0);
    s1 = _mm256_fmadd_pd(b, b, s1);
  }
  const __m256d s = _mm256_add_pd(s0, s1);
  const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  const double sum_sq = _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
  const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  const __m256 vinv = _mm256_set1_ps(inv);
  auto normed = [&](int64_t j, __m256i m) {
    return _mm256_mul_ps(_mm256_mul_ps(NormInput<kRelu2>(x, up, j, m), vinv), _mm256_maskload_ps(weight + j, m));
  };
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 vmax = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, normed(i, mask(i))));
  const float a = 127.0f / std::max(HmaxPs(vmax), 1e-5f);
  const __m256 va = _mm256_set1_ps(a);
  const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
  __m256i vsum = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i < n; i += 8) {
    const __m256i m = mask(i);
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(normed(i, m), va));  // rounds half to even, as nearbyint
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    vsum = _mm256_add_epi32(vsum, v);  // masked-off lanes are 0
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i w8 = _mm_packs_epi16(w16, w16);
    if (n - i >= 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), w8);
    } else {
      alignas(16) int8_t tail[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tail), w8);
      std::memcpy(q + i, tail, static_cast<size_t>(n - i));
    }
  }
  *q_sum = HsumEpi32(vsum);
  return a;
}

float NormQuantize(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                   int32_t* q_sum) {
  return up != nullptr ? NormQuantizeT<true>(x, up, weight, n, eps, q, q_sum)
                       : NormQuantizeT<false>(x, up, weight, n, eps, q, q_sum);
}

// ---- ternary GEMV (decode) ----------------------------------------------------------------------
// Reference: y[r] = (sum_c (code[r,c] - 1) * q[c]) * scale / act_scale, integer sum.
// One 32-byte I2_S block holds values 0..31 / 32..63 / 64..95 / 96..127 in bits 7-6 / 5-4 / 3-2 /
// 1-0: (w >> 6) & 3 etc. give u8 codes in activation order; vpmaddubsw (u8 x s8 -> s16 pairs,
// |pair| <= 2*3*128) gives each block's sums in int16 lanes (|lane| <= 4 x 768), four blocks add up
// in int16 (<= 12288, no overflow even for code 3) before one vpmaddwd with ones widens them.
//
// Decode reads every weight once, so the GEMVs (ternary here, the LM heads below) are bound by
// how fast one core can stream memory, and that depends on the access pattern: on Zen 3 one
// thread read 9.5-11 GB/s as one sequential stream, 11-15 as two and 13-17 as four side by side
// (the read probe, engine/common/read_bandwidth.h). RowStreams gives each GEMV that pattern:
// a thread's rows are cut into R equal parts and a tile is the i-th row of every part, so the R
// rows of a tile are R long sequential streams. Earlier kernels read R adjacent rows (each only
// one row long, n_in / 4 bytes here: streams the hardware prefetcher followed badly, 6.3 GB/s
// against 12.1 for one row at a time in the seventh session) or one row at a time with a
// software prefetch 2 KB ahead (ninth session). kernels_bench, one thread, three alternated
// rounds: ternary GEMV 2560 -> 6912 500-633 -> 391-549 us, 6912 -> 2560 487-683 -> 465-553 us;
// two streams gained less, the 2 KB prefetch kept for the streams no better. 2B-4T decode,
// two threads, five alternated pairs with the heads' streams: 11.6-13.4 -> 13.8-15.8 tok/s
// (bench/RESULTS.md, tenth session).
// Since the sixteenth session every GEMV here prefetches its streams 2 KB ahead
// (PrefetchStreams, row_streams.h), as the AVX-512 kernels: this path forced on the Zen 5, 2B-4T
// decode, tokens alternated in one process, two threads +2.4-4.1% (8-bit head +4.0%) and +12% in
// a low-bandwidth spell, one thread +5%. Since the seventeenth, 1 KB into L1 plus 4 KB into L2:
// two threads +3.5% more, alternated. Not remeasured on the Zen 3, where the one-thread GEMV
// alone had shown no gain. Since the eighteenth, with or without, as PrefetchTrial measures per
// thread (on that session's Zen 5 host, forced on: 0.98x).
// R rows, `stride` bytes apart: out[r] = the row's integer sum. Each row's four blocks go into one
// int16 sum (16 vpmaddubsw, |lane| <= 16 x 768 = 12288 even for code 3), then one vpmaddwd with
// ones widens it into the row's int32 accumulator. MaddubsAdd (inline asm, the activations as the
// multiply's memory operand): with the intrinsics GCC 12 interleaved the four rows' blocks, ran
// out of the 16 ymm registers and kept the accumulators, the ones constant and a temporary on the
// stack (a load and a store per row and step).
template <int R, bool kPrefetch>
inline void GemvRows(const uint8_t* row, uint64_t stride, const int8_t* q, int64_t blocks, int32_t* out) {
  const __m256i ones = _mm256_set1_epi16(1), three = _mm256_set1_epi8(3);
  __m256i acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  // Codes of values 0..31 / 32..63 / 64..95 / 96..127 of block j, added into s.
  auto block = [&](__m256i s, const uint8_t* rr, int64_t j) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rr + 32 * j));
    const int8_t* qj = q + 128 * j;
    s = MaddubsAdd(s, _mm256_and_si256(_mm256_srli_epi16(w, 6), three), qj);
    s = MaddubsAdd(s, _mm256_and_si256(_mm256_srli_epi16(w, 4), three), qj + 32);
    s = MaddubsAdd(s, _mm256_and_si256(_mm256_srli_epi16(w, 2), three), qj + 64);
    return MaddubsAdd(s, _mm256_and_si256(w, three), qj + 96);
  };
  int64_t j = 0;
  for (; j + 4 <= blocks; j += 4) {
    if constexpr (kPrefetch) {
      PrefetchStreams<R>(row + 32 * j, stride);
      PrefetchStreams<R>(row + 32 * j + 64, stride);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* rr = row + r * stride;
      __m256i s = block(_mm256_setzero_si256(), rr, j);
      s = block(s, rr, j + 1);
      s = block(s, rr, j + 2);
      s = block(s, rr, j + 3);
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(s, ones));
    }
  }
  for (; j < blocks; ++j) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(block(_mm256_setzero_si256(), row + r * stride, j), ones));
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) out[r] = HsumEpi32(acc[r]);
}

void TernaryGemv(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
                 int64_t row_end) {
  if (w.group_scales != nullptr) {
    TernaryMatVec(w, q, act_scale, y, row_begin, row_end);
    return;
  }
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  auto store = [&](int64_t r, int32_t dot) { y[r] = static_cast<float>(dot - q_sum) * w.scale / act_scale; };
  thread_local PrefetchTrial trial(64, 8192);  // ~200 calls per 2B-4T token
  PrefetchedRowStreams<4>(
      trial, row_begin, row_end, static_cast<uint64_t>(row_bytes),
      [&](int64_t r, int64_t part, auto prefetch) {
        int32_t dot[4];
        GemvRows<4, decltype(prefetch)::value>(w.codes + r * row_bytes, part * row_bytes, q, blocks, dot);
        for (int i = 0; i < 4; ++i) store(r + i * part, dot[i]);
      },
      [&](int64_t r, auto prefetch) {
        int32_t dot;
        GemvRows<1, decltype(prefetch)::value>(w.codes + r * row_bytes, row_bytes, q, blocks, &dot);
        store(r, dot);
      });
}

// ---- ternary GEMM (prefill) ---------------------------------------------------------------------
// Few tokens (batched decode: one token per sequence): the rows unpacked in registers. Two rows x
// up to 4 tokens: per 32 values, each row's codes unpacked once (shift, and) and each token's
// activations loaded once for both rows, 8 vpmaddubsw + 8 int16 adds (15 of the 16 ymm
// registers). Before, one row x 8 tokens with the activations as vpmaddubsw's memory operand (one
// load per multiply): GemmRow below, now only for an odd last row. kernels_bench, 8 tokens, 2560
// -> 6912, one thread, Zen 3: 2.10-2.17 -> 1.67-2.07 ms (bench/RESULTS.md, eighth session). An
// int16 accumulator takes up to 8 blocks (|lane| <= 8 x 4 x 768 = 24576 < 2^15, even for code
// 3), then is widened into an int32 sum.
constexpr int64_t kWidenBlocks = 8;

inline __m256i MaddubsAddReg(__m256i acc, __m256i c, __m256i q) {
  __m256i product;
  __asm__("vpmaddubsw %3, %2, %1\n\tvpaddw %1, %0, %0" : "+x"(acc), "=&x"(product) : "x"(c), "x"(q));
  return acc;
}

// Rows row and row + row_bytes, T <= 4 tokens: out[r * 4 + t] = row r . token t (integer dot).
template <int T>
inline void GemmRowPair(const uint8_t* row, int64_t row_bytes, const int8_t* q, int64_t q_stride, int64_t blocks,
                        int32_t* out) {
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i wide[2][T];
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < T; ++t) wide[r][t] = _mm256_setzero_si256();
  for (int64_t j0 = 0; j0 < blocks; j0 += kWidenBlocks) {
    const int64_t j1 = std::min(blocks, j0 + kWidenBlocks);
    __m256i acc[2][T];
    for (int r = 0; r < 2; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
    for (int64_t j = j0; j < j1; ++j) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * j));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + row_bytes + 32 * j));
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const int shift = 6 - 2 * k;
        const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(w0, shift), three);
        const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(w1, shift), three);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + t * q_stride + 128 * j + 32 * k));
          acc[0][t] = MaddubsAddReg(acc[0][t], c0, qv);
          acc[1][t] = MaddubsAddReg(acc[1][t], c1, qv);
        }
      }
    }
    for (int r = 0; r < 2; ++r)
      for (int t = 0; t < T; ++t) wide[r][t] = _mm256_add_epi32(wide[r][t], _mm256_madd_epi16(acc[r][t], ones));
  }
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < T; ++t) out[r * 4 + t] = HsumEpi32(wide[r][t]);
}

// One row, T tokens: the row's block unpacked once into four code registers, the activations as
// vpmaddubsw's memory operand.
template <int T>
inline void GemmRow(const uint8_t* row, const int8_t* q, int64_t q_stride, int64_t blocks, int32_t* out) {
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i wide[T];
  for (int t = 0; t < T; ++t) wide[t] = _mm256_setzero_si256();
  for (int64_t j0 = 0; j0 < blocks; j0 += kWidenBlocks) {
    const int64_t j1 = std::min(blocks, j0 + kWidenBlocks);
    __m256i acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_si256();
    for (int64_t j = j0; j < j1; ++j) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * j));
      const __m256i c[4] = {_mm256_and_si256(_mm256_srli_epi16(w, 6), three),
                            _mm256_and_si256(_mm256_srli_epi16(w, 4), three),
                            _mm256_and_si256(_mm256_srli_epi16(w, 2), three), _mm256_and_si256(w, three)};
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          acc[t] = MaddubsAdd(acc[t], c[k], q + t * q_stride + 128 * j + 32 * k);
        }
      }
    }
    for (int t = 0; t < T; ++t) wide[t] = _mm256_add_epi32(wide[t], _mm256_madd_epi16(acc[t], ones));
  }
  for (int t = 0; t < T; ++t) out[t] = HsumEpi32(wide[t]);
}

// Prefill batches (many tokens): the rows a thread owns are unpacked once per call, a panel of
// kPanelRows rows at a time, into a stack scratch of u8 codes in activation order (kPanelRows x
// n_in bytes, L2-resident), and every token of the batch then runs over that panel with no
// unpacking in the inner loop: a 3-row x 4-token register tile holds 12 int16 accumulators (with
// the 3 code rows and one activation row: all 16 ymm registers), and per 32 values it does 3 code
// loads + 4 activation loads for 12 vpmaddubsw + 12 int16 adds. The values go in chunks of at most
// kChunk: an int16 lane then holds at most 32 steps x 2 x 3 x 128 = 24576 (< 2^15, even for the
// code 3 a malformed file may hold), and is widened (vpmaddwd with ones) and reduced into int32
// partial sums once per chunk. Same integer sums as the reference, same float epilogue, so
// bit-identical.
constexpr int kTileRows = 3;
constexpr int kTileTokens = 4;
constexpr int64_t kPanelRows = 12;
constexpr int64_t kChunk = 1024;
constexpr int64_t kScratchBytes = 128 * 1024;
// Below this many tokens the unpack-to-scratch pass costs more than it saves: GemmRowPair unpacks
// in registers instead.
constexpr int64_t kScratchMinTokens = 16;

// One I2_S row (blocks x 32 bytes) -> blocks x 128 u8 codes in activation order.
inline void UnpackRow(const uint8_t* row, int64_t blocks, uint8_t* out) {
  const __m256i three = _mm256_set1_epi8(3);
  for (int64_t j = 0; j < blocks; ++j) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * j));
    __m256i* o = reinterpret_cast<__m256i*>(out + 128 * j);
    _mm256_store_si256(o, _mm256_and_si256(_mm256_srli_epi16(w, 6), three));
    _mm256_store_si256(o + 1, _mm256_and_si256(_mm256_srli_epi16(w, 4), three));
    _mm256_store_si256(o + 2, _mm256_and_si256(_mm256_srli_epi16(w, 2), three));
    _mm256_store_si256(o + 3, _mm256_and_si256(w, three));
  }
}

// Sums of the 8 lanes of a, b, c, d as one vector {sum a, sum b, sum c, sum d}.
inline __m128i Hsum4(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
  return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// R rows (u8 codes, n_in apart, 32-byte aligned) x T tokens over values [0, len), len <= kChunk:
// dot[t] += the R row sums of token t (lanes >= R get 0).
template <int R, int T>
__attribute__((noinline)) void ScratchTile(const uint8_t* wu, int64_t n_in, const int8_t* q, int64_t q_stride,
                                           int64_t len, __m128i* dot) {
  __m256i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  for (int64_t c = 0; c < len; c += 32) {
    __m256i w[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) w[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wu + r * n_in + c));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + t * q_stride + c));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_add_epi16(acc[r][t], _mm256_maddubs_epi16(w[r], qv));
    }
  }
  const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
  auto wide = [&](int r, int t) { return r < R ? _mm256_madd_epi16(acc[r < R ? r : 0][t], ones) : zero; };
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) dot[t] = _mm_add_epi32(dot[t], Hsum4(wide(0, t), wide(1, t), wide(2, t), wide(3, t)));
}

template <int R>
void ScratchTileT(int t_count, const uint8_t* wu, int64_t n_in, const int8_t* q, int64_t q_stride, int64_t len,
                  __m128i* dot) {
  switch (t_count) {
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
  // On this thread's stack (no allocation). n_in is a multiple of 128, so rows stay 32-byte aligned.
  alignas(64) uint8_t scratch[kScratchBytes];
  const int64_t panel_rows = std::min<int64_t>(kPanelRows, kScratchBytes / n_in);
  // Chunks of equal length (multiples of 32) of at most kChunk values.
  const int64_t n_chunks = (n_in + kChunk - 1) / kChunk;
  const int64_t chunk = (n_in / 32 + n_chunks - 1) / n_chunks * 32;
  const __m128 vscale = _mm_set1_ps(w.scale);
  for (int64_t p0 = row_begin; p0 < row_end; p0 += panel_rows) {
    const int64_t pr = std::min(panel_rows, row_end - p0);
    for (int64_t i = 0; i < pr; ++i) UnpackRow(w.codes + (p0 + i) * row_bytes, blocks, scratch + i * n_in);
    {  // the next panel's codes are fetched while this one computes
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
          const uint8_t* wu = scratch + r * n_in + c;
          __m128i* d = dot[r / kTileRows];
          switch (std::min<int64_t>(kTileRows, pr - r)) {
            case 3: ScratchTileT<3>(tc, wu, n_in, qt, q_stride, len, d); break;
            case 2: ScratchTileT<2>(tc, wu, n_in, qt, q_stride, len, d); break;
            default: ScratchTileT<1>(tc, wu, n_in, qt, q_stride, len, d); break;
          }
        }
      }
      // y = (dot - q_sum) * scale / act_scale, as the reference (float(int) * scale / act_scale).
      for (int64_t r = 0; r < pr; r += kTileRows) {
        const int rc = static_cast<int>(std::min<int64_t>(kTileRows, pr - r));
        for (int k = 0; k < tc; ++k) {
          alignas(16) float v[4];
          _mm_store_ps(v, _mm_div_ps(_mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(dot[r / kTileRows][k], _mm_set1_epi32(q_sums[t + k]))), vscale),
                                     _mm_set1_ps(act_scales[t + k])));
          std::memcpy(y + (t + k) * y_stride + p0 + r, v, static_cast<size_t>(rc) * sizeof(float));
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
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  auto store = [&](int64_t r, int64_t t, int tc, const int32_t* dot) {
    for (int k = 0; k < tc; ++k)
      y[(t + k) * y_stride + r] = static_cast<float>(dot[k] - q_sums[t + k]) * w.scale / act_scales[t + k];
  };
  // Tokens in blocks of kTokenBlock (their activations stay cached while the rows stream past).
  constexpr int64_t kTokenBlock = 32;
  // The pair kPrefetchPairs ahead is prefetched before each pair: without it a profile of the
  // 8-row decode step put a third of this kernel's samples on the first weight load of a pair
  // (the hardware prefetcher does not follow two short interleaved rows); with it the step went
  // 277-307 -> 215-228 ms (three alternated runs; 1 and 2 pairs ahead: 207-251 ms).
  constexpr int64_t kPrefetchPairs = 4;
  int32_t dot[8];
  for (int64_t tb = 0; tb < n_tok; tb += kTokenBlock) {
    const int64_t te = std::min(n_tok, tb + kTokenBlock);
    int64_t r = row_begin;
    for (; r + 2 <= row_end; r += 2) {
      const uint8_t* row = w.codes + r * row_bytes;
      if (r + 2 * kPrefetchPairs + 2 <= row_end) {
        const uint8_t* ahead = row + 2 * kPrefetchPairs * row_bytes;
        for (int64_t o = 0; o < 2 * row_bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + o), _MM_HINT_T0);
      }
      for (int64_t t = tb; t < te; t += 4) {
        const int tc = static_cast<int>(std::min<int64_t>(4, te - t));
        const int8_t* qt = q + t * q_stride;
        switch (tc) {
          case 4: GemmRowPair<4>(row, row_bytes, qt, q_stride, blocks, dot); break;
          case 3: GemmRowPair<3>(row, row_bytes, qt, q_stride, blocks, dot); break;
          case 2: GemmRowPair<2>(row, row_bytes, qt, q_stride, blocks, dot); break;
          default: GemmRowPair<1>(row, row_bytes, qt, q_stride, blocks, dot); break;
        }
        store(r, t, tc, dot);
        store(r + 1, t, tc, dot + 4);
      }
    }
    for (; r < row_end; ++r) {
      const uint8_t* row = w.codes + r * row_bytes;
      for (int64_t t = tb; t < te; t += 8) {
        const int tc = static_cast<int>(std::min<int64_t>(8, te - t));
        const int8_t* qt = q + t * q_stride;
        switch (tc) {
          case 8: GemmRow<8>(row, qt, q_stride, blocks, dot); break;
          case 7: GemmRow<7>(row, qt, q_stride, blocks, dot); break;
          case 6: GemmRow<6>(row, qt, q_stride, blocks, dot); break;
          case 5: GemmRow<5>(row, qt, q_stride, blocks, dot); break;
          case 4: GemmRow<4>(row, qt, q_stride, blocks, dot); break;
          case 3: GemmRow<3>(row, qt, q_stride, blocks, dot); break;
          case 2: GemmRow<2>(row, qt, q_stride, blocks, dot); break;
          default: GemmRow<1>(row, qt, q_stride, blocks, dot); break;
        }
        store(r, t, tc, dot);
      }
    }
  }
}

// ---- dense GEMV (LM head) -------------------------------------------------------------------------
// Reference: y[r] = sum_c W[r,c] x[c]; F16 via vcvtph2ps, f32 FMA. R rows at a time, two
// accumulators per (row, vector) pair: values c..c+7 of every 16 into the first, c+8..c+15 into
// the second, an 8-value tail into the first, one lane sum, then a scalar FMA tail. Every pair
// sees the same operations in the same order, so the GEMV (R = 4: four rows share each activation
// load; on Zen 3, one thread, 2560 x 32768 from DRAM, 14.7-17.3 ms
// against 16.0-19.0 for one row at a time: unlike the ternary GEMV's short rows, four streams of
// 5 KB rows keep the prefetcher busy) and the batched head below (the same two chains per pair,
// reorganised) give bit-identical results: batched decode does not change any sequence's logits.
template <bool kF16>
inline __m256 DenseLoad(const uint8_t* row, int64_t c) {
  if constexpr (kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c)));
  } else {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  }
}

// A pair's ending, shared by the GEMV and the batched head (its bit-identity depends on it): from
// column c = n rounded down to 16, an 8-column tail into the first chain, the lane sum of both, a
// scalar FMA tail.
template <bool kF16>
inline float DenseEnd(__m256 acc0, __m256 acc1, const uint8_t* row, const float* x, int64_t c, int64_t n) {
  if (c + 8 <= n) {
    acc0 = _mm256_fmadd_ps(DenseLoad<kF16>(row, c), _mm256_loadu_ps(x + c), acc0);
    c += 8;
  }
  float s = HsumPs(_mm256_add_ps(acc0, acc1));
  for (; c < n; ++c) {
    float w;
    if constexpr (kF16) {
      uint16_t h;
      std::memcpy(&h, row + 2 * c, 2);
      w = _cvtsh_ss(h);
    } else {
      std::memcpy(&w, row + 4 * c, 4);
    }
    s = std::fma(w, x[c], s);  // explicit: the F16 and F32 instances must round alike
  }
  return s;
}

// R rows, row_stride bytes apart, into y[0], y[y_stride], ...
template <int R, bool kF16, bool kPrefetch>
inline void DenseTile(const uint8_t* w0, uint64_t row_stride, const float* x, int64_t n, float* y, int64_t y_stride) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  auto half = [&](int64_t c, __m256 (&acc)[R]) {
    const __m256 xv = _mm256_loadu_ps(x + c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(DenseLoad<kF16>(w0 + r * row_stride, c), xv, acc[r]);
  };
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    if (kPrefetch && (!kF16 || c % 32 == 0)) PrefetchStreams<R>(w0 + (kF16 ? 2 : 4) * c, row_stride);  // per 64 bytes
    half(c, acc0);
    half(c + 8, acc1);
  }
  for (int r = 0; r < R; ++r) y[r * y_stride] = DenseEnd<kF16>(acc0[r], acc1[r], w0 + r * row_stride, x, c, n);
}

// Four row streams (RowStreams, above): the F16 head 2560 x 32768, one thread, three alternated
// rounds, 15.9-19.2 -> 10.9-13.4 ms against four adjacent rows with the next tile prefetched (that
// prefetch, kept for the streams, was no better).
template <int R, bool kF16>
void DenseRowsAll(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  const uint64_t rb = w.row_bytes;
  thread_local PrefetchTrial trial(8, 128);  // one call per token and thread
  PrefetchedRowStreams<R>(
      trial, row_begin, row_end, rb,
      [&](int64_t r, int64_t part, auto prefetch) {
        DenseTile<R, kF16, decltype(prefetch)::value>(w.data + r * rb, part * rb, x, w.n_in, y + r, part);
      },
      [&](int64_t r, auto prefetch) {
        DenseTile<1, kF16, decltype(prefetch)::value>(w.data + r * rb, rb, x, w.n_in, y + r, 1);
      });
}

void DenseGemv(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (w.type == TensorType::kF16) return DenseRowsAll<4, true>(w, x, y, row_begin, row_end);
  if (w.type == TensorType::kF32) return DenseRowsAll<1, false>(w, x, y, row_begin, row_end);
  DenseMatVec(w, x, y, row_begin, row_end);
}

// Batched LM head, F16, up to kHeadVectors vectors per pass. Same sums as the GEMV, reorganised:
// a (row, vector) pair's two accumulators are independent chains (columns 16j..16j+7 and
// 16j+8..16j+15), so each runs on its own, 3 rows x 4 vectors = 12 chains in registers (one
// FMA each per 16 columns, enough to cover the FMA latency; 3 conversions and 4 activation loads
// per 12 FMAs). Columns go in chunks of kHeadChunk, so the 8 vectors' slices stay in L1; between
// chunks a chain lives in `state` (stored and reloaded unchanged: same values, same order). Rows go
// in blocks of kHeadBlock; while a block is computed (from L2) the next one, a contiguous region,
// is prefetched in order, a share (~12 lines) before each chain pass (a share twice as large per
// row triple: 28.6-34.9 against 26.6-28.1 ms). Before: 2 rows x 3 vectors with both chains in
// registers, each block re-read from L2 per 3 vectors and fetched by the hardware alone; 8 vectors
// x 32768 rows, one thread, Zen 3: 43-55 ms, now 27-35 ms (bench/RESULTS.md, eighth session).
constexpr int64_t kHeadVectors = 8, kHeadChunk = 256, kHeadBlock = 18, kHeadRows = 3, kHeadTile = 4;
constexpr int64_t kStateRow = kHeadVectors * 8;  // floats per row of one chain's state

// One chain of R rows x V vectors over columns c, c + 16, ... < end; state holds its accumulators
// (rows kStateRow floats apart, vectors 8 apart).
template <int R, int V>
inline void HeadChain(const uint8_t* w0, uint64_t row_bytes, const float* x, int64_t x_stride, int64_t c, int64_t end,
                      float* state) {
  __m256 acc[R][V];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_load_ps(state + r * kStateRow + v * 8);
  for (; c < end; c += 16) {
    __m256 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = DenseLoad<true>(w0 + r * row_bytes, c);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      __m256 xv = _mm256_loadu_ps(x + v * x_stride + c);
      if constexpr (R > 1) asm("" : "+x"(xv));  // one load per vector: GCC would fold it into each row's FMA
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][v] = _mm256_fmadd_ps(wv[r], xv, acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm256_store_ps(state + r * kStateRow + v * 8, acc[r][v]);
}

template <int R>
inline void HeadChainAll(const uint8_t* w0, uint64_t row_bytes, const float* x, int64_t x_stride, int64_t n_x,
                         int64_t c, int64_t end, float* state) {
  for (int64_t v = 0; v < n_x; v += kHeadTile) {
    const float* xv = x + v * x_stride;
    float* sv = state + v * 8;
    switch (std::min(kHeadTile, n_x - v)) {
      case 4: HeadChain<R, 4>(w0, row_bytes, xv, x_stride, c, end, sv); break;
      case 3: HeadChain<R, 3>(w0, row_bytes, xv, x_stride, c, end, sv); break;
      case 2: HeadChain<R, 2>(w0, row_bytes, xv, x_stride, c, end, sv); break;
      default: HeadChain<R, 1>(w0, row_bytes, xv, x_stride, c, end, sv); break;
    }
  }
}

// Up to kHeadVectors vectors, rows [row_begin, row_end).
void DenseHeadF16(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys,
                  int64_t row_begin, int64_t row_end) {
  alignas(32) float state[2][kHeadBlock][kStateRow];
  const int64_t n = w.n_in, n16 = n / 16 * 16;
  // Chain passes per full block: 2 chains x column chunks x row triples.
  const int64_t chunks = (n16 + kHeadChunk - 1) / kHeadChunk, triples = (kHeadBlock + kHeadRows - 1) / kHeadRows;
  const int64_t steps = std::max<int64_t>(1, 2 * chunks * triples);
  for (int64_t b = row_begin; b < row_end; b += kHeadBlock) {
    const int64_t e = std::min(row_end, b + kHeadBlock), rows = e - b;
    std::memset(state, 0, sizeof(state));
    const char* prefetch = reinterpret_cast<const char*>(w.data + e * w.row_bytes);
    const char* prefetch_end = reinterpret_cast<const char*>(w.data + std::min(row_end, e + kHeadBlock) * w.row_bytes);
    const int64_t lines_per_step = ((prefetch_end - prefetch) / 64 + steps - 1) / steps;
    for (int64_t c0 = 0; c0 < n16; c0 += kHeadChunk) {
      const int64_t c1 = std::min(n16, c0 + kHeadChunk);
      for (int64_t r = 0; r < rows; r += kHeadRows) {
        const uint8_t* w0 = w.data + (b + r) * w.row_bytes;
        for (int h = 0; h < 2; ++h) {
          for (int64_t i = 0; i < lines_per_step && prefetch < prefetch_end; ++i, prefetch += 64)
            _mm_prefetch(prefetch, _MM_HINT_T1);
          float* st = &state[h][r][0];
          if (r + kHeadRows <= rows) {
            HeadChainAll<kHeadRows>(w0, w.row_bytes, x, x_stride, n_x, c0 + 8 * h, c1, st);
          } else {
            for (int64_t q = r; q < rows; ++q, st += kStateRow)
              HeadChainAll<1>(w0 + (q - r) * w.row_bytes, w.row_bytes, x, x_stride, n_x, c0 + 8 * h, c1, st);
          }
        }
      }
    }
    // The GEMV's ending.
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w.data + (b + r) * w.row_bytes;
      for (int64_t v = 0; v < n_x; ++v) {
        ys[v][b + r] = DenseEnd<true>(_mm256_load_ps(&state[0][r][v * 8]), _mm256_load_ps(&state[1][r][v * 8]), row,
                                      x + v * x_stride, n16, n);
      }
    }
  }
}

void DenseGemm(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys, int64_t row_begin,
               int64_t row_end) {
  if (w.type != TensorType::kF16 || n_x == 1) {
    for (int64_t i = 0; i < n_x; ++i) DenseGemv(w, x + i * x_stride, ys[i], row_begin, row_end);
    return;
  }
  for (int64_t i = 0; i < n_x; i += kHeadVectors)
    DenseHeadF16(w, x + i * x_stride, x_stride, std::min(kHeadVectors, n_x - i), ys + i, row_begin, row_end);
}

// ---- 8-bit GEMV (optional quantised LM head) --------------------------------------------------------
// Reference: y[r] = (sum_c (b[r,c] - 128) * q[c]) * scales[r] / act_scale, integer sum. The weight
// w = b - 128 (b ^ 0x80 as s8, in [-127, 127]) carries q's sign (vpsignb) and |q| is the unsigned
// operand of vpmaddubsw: |q| * (w * sign q) = q * w, pairs <= 2 * 128 * 127 < 2^15, no saturation
// for any q in [-128, 127]. |q| is computed once per 32 activations for four rows.
template <int R, bool kPrefetch>
inline void Q8Rows(const uint8_t* w0, uint64_t row_stride, const int8_t* q, int64_t n, int32_t* out) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  __m256i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
    const __m256i qa = _mm256_abs_epi8(qv);
    if (kPrefetch && c % 64 == 0) PrefetchStreams<R>(w0 + c, row_stride);  // once per 64 bytes
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i wv = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + r * row_stride + c)), flip);
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(wv, qv)), ones));
    }
  }
  for (int r = 0; r < R; ++r) {
    int32_t s = HsumEpi32(acc[r]);
    const uint8_t* row = w0 + r * row_stride;
    for (int64_t i = c; i < n; ++i) s += (static_cast<int32_t>(row[i]) - 128) * q[i];
    out[r] = s;
  }
}

// Four row streams, as the F16 head (RowStreams): 2560 x 32768, one thread, 9.3-10.7 -> 6.4-6.8 ms.
void Q8Gemv(const Q8View& w, const int8_t* q, int32_t, float act_scale, float* y, int64_t row_begin, int64_t row_end) {
  const uint64_t rb = w.row_bytes;
  thread_local PrefetchTrial trial(8, 128);  // one call per token and thread
  PrefetchedRowStreams<4>(
      trial, row_begin, row_end, rb,
      [&](int64_t r, int64_t part, auto prefetch) {
        int32_t dot[4];
        Q8Rows<4, decltype(prefetch)::value>(w.data + r * rb, part * rb, q, w.n_in, dot);
        for (int i = 0; i < 4; ++i) y[r + i * part] = static_cast<float>(dot[i]) * w.scales[r + i * part] / act_scale;
      },
      [&](int64_t r, auto prefetch) {
        int32_t dot[1];
        Q8Rows<1, decltype(prefetch)::value>(w.data + r * rb, rb, q, w.n_in, dot);
        y[r] = static_cast<float>(dot[0]) * w.scales[r] / act_scale;
      });
}

// ---- attention --------------------------------------------------------------------------------------
// Reference (ref.h); vectorised dot products and p*v accumulation, std::exp as the reference.
inline float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  float s = HsumPs(acc);
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
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
    std::fill(oh, oh + head_dim, 0.0f);
    for (int64_t t = 0; t < n_kv; ++t) {
      const float p = scratch[t] / sum;
      const __m256 vp = _mm256_set1_ps(p);
      const float* v = v_cache + t * kv_stride + kvh * head_dim;
      int64_t d = 0;
      for (; d + 8 <= head_dim; d += 8)
        _mm256_storeu_ps(oh + d, _mm256_fmadd_ps(vp, _mm256_loadu_ps(v + d), _mm256_loadu_ps(oh + d)));
      for (; d < head_dim; ++d) oh[d] += p * v[d];
    }
  }
}

// ---- attention over a batch of query tokens (prefill) ------------------------------------------
// The driver (blocks of 64 keys, K transposed once per block, online softmax) is shared by the
// paths: attention_prefill.inc. Here one block for up to 4 heads of one token in 8-float vectors:
// scores 32 keys x 2 heads at a time (8 accumulators), p.V accumulated into `out` 16 dims at a time.

// 8 floats from a float cache, or converted from 8 halves of an f16 cache (vcvtph2ps: exact).
inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 Load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// f[0..n) = the IEEE halves h[0..n) as floats, for the f16 KV cache.
inline void HalfToFloat(const uint16_t* h, int64_t n, float* f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(f + i, Load8(h + i));
  for (; i < n; ++i) f[i] = Fp16ToFp32(h[i]);
}

#include "engine/kernels/attention_prefill.inc"

// e^x for 8 floats: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial (relative error ~2e-7),
// times 2^n built in the exponent bits. Inputs below -87 give ~0 (the caller masks true zeros);
// inputs here are <= 0 (scores minus their running max).
inline __m256 Exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.3981999507e-3f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n for n in [-126, 0]: (n + 127) << 23 as the float's bits.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Scores of R <= 2 query heads (qh[r], head_dim floats each) against keys [k0, k0 + 32) of a
// transposed block kt (head_dim rows of 64 floats): s[r][k0 + 0..32) = scale * q_r . k.
template <int R>
inline void HalfBlockScores(const float* const* qh, const float* kt, int64_t k0, int64_t head_dim, float scale,
                            float (*s)[kKeyBlock]) {
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_setzero_ps();
  for (int64_t d = 0; d < head_dim; ++d) {
    const float* kd = kt + d * kKeyBlock + k0;
    const __m256 ka = _mm256_load_ps(kd), kb = _mm256_load_ps(kd + 8), kc = _mm256_load_ps(kd + 16),
                 kdd = _mm256_load_ps(kd + 24);
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const __m256 qv = _mm256_broadcast_ss(qh[r] + d);
      acc[r][0] = _mm256_fmadd_ps(qv, ka, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qv, kb, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(qv, kc, acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(qv, kdd, acc[r][3]);
    }
  }
  const __m256 vs = _mm256_set1_ps(scale);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) _mm256_store_ps(s[r] + k0 + 8 * i, _mm256_mul_ps(acc[r][i], vs));
}

// Scores of R <= 4 heads against the nk <= 64 keys of a block (the halves with keys in them).
template <int R>
inline void BlockScores(const float* const* qh, const float* kt, int64_t nk, int64_t head_dim, float scale,
                        float (*s)[kKeyBlock]) {
  for (int64_t k0 = 0; k0 < nk; k0 += 32) {
    HalfBlockScores<R < 2 ? R : 2>(qh, kt, k0, head_dim, scale, s);
    if constexpr (R > 2) HalfBlockScores<R - 2>(qh + 2, kt, k0, head_dim, scale, s + 2);
  }
}

// o_r[0..16) = o_r * corr[r] + sum_k p[r][k] v_k[0..16) for R rows, nv keys (v rows kv_stride apart).
template <int R, class T = float>
inline void BlockPv16(float* const* o, const float* const* p, const float* corr, const T* v,
                      int64_t kv_stride, int64_t nv) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    const __m256 c = _mm256_set1_ps(corr[r]);
    acc[r][0] = _mm256_mul_ps(_mm256_loadu_ps(o[r]), c);
    acc[r][1] = _mm256_mul_ps(_mm256_loadu_ps(o[r] + 8), c);
  }
  for (int64_t k = 0; k < nv; ++k, v += kv_stride) {
    const __m256 va = Load8(v), vb = Load8(v + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 pv = _mm256_broadcast_ss(&p[r][k]);
      acc[r][0] = _mm256_fmadd_ps(pv, va, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(pv, vb, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(o[r], acc[r][0]);
    _mm256_storeu_ps(o[r] + 8, acc[r][1]);
  }
}

// One block of keys [kb, kb + nv) for R heads of one token: scores, online-softmax update of
// m/l, rescale + accumulate the outputs.
template <int R>
void BlockUpdate(const float* const* qh, float* const* o, float* m, float* l, const float* kt, const float* v,
                 int64_t kv_stride, int64_t nv, int64_t head_dim, float scale) {
  alignas(32) float s[R][kKeyBlock];
  BlockScores<R>(qh, kt, nv, head_dim, scale, s);
  float corr[R];
  for (int r = 0; r < R; ++r) {
    for (int64_t i = nv; i < kKeyBlock; ++i) s[r][i] = -INFINITY;  // keys past the limit
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int64_t i = 0; i < kKeyBlock; i += 8) vmax = _mm256_max_ps(vmax, _mm256_load_ps(s[r] + i));
    const float m_new = std::max(m[r], HmaxPs(vmax));
    corr[r] = std::exp(m[r] - m_new);  // 0 on the first block (m = -inf)
    const __m256 vm = _mm256_set1_ps(m_new);
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t i = 0; i < nv; i += 8) {
      __m256 e = Exp8(_mm256_sub_ps(_mm256_load_ps(s[r] + i), vm));
      if (nv - i < 8) {  // masked keys (s = -inf): exactly 0
        e = _mm256_and_ps(e, _mm256_cmp_ps(_mm256_load_ps(s[r] + i), _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
      }
      _mm256_store_ps(s[r] + i, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    l[r] = l[r] * corr[r] + HsumPs(vsum);
    m[r] = m_new;
  }
  const float* ps[R];
  for (int r = 0; r < R; ++r) ps[r] = s[r];
  float* oz[R];
  for (int64_t d = 0; d < head_dim; d += 16) {
    for (int r = 0; r < R; ++r) oz[r] = o[r] + d;
    BlockPv16<R>(oz, ps, corr, v + d, kv_stride, nv);
  }
}

// ---- decode attention by key ranges ------------------------------------------------------------
// CpuKernels::attention_decode: the driver is attention_decode.inc; here 8-float vectors. Scores:
// per head, a block's 8 dot products in 8 accumulators reduced to one vector; exponentials with
// Exp8 (as the batched prefill); p.V with 16 dimensions x up to 4 heads in registers per pass
// over a block, the outputs in L1 between passes. Same operations as the reference up to
// summation order.

// {sum a[0], ..., sum a[7]}.
inline __m256 Sum8x8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  // lanes 0-3: halves of a0..a3
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

inline void Scores8(const float* qh, const float* k, int64_t kv_stride, int64_t head_dim, float scale, float* out) {
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (int64_t d = 0; d < head_dim; d += 8) {
    const __m256 qv = _mm256_loadu_ps(qh + d);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + i * kv_stride + d), acc[i]);
  }
  _mm256_storeu_ps(out, _mm256_mul_ps(Sum8x8(acc), _mm256_set1_ps(scale)));
}

// Scores of `heads` query heads of one KV head against 8 key rows (GroupScores8 in
// attention_decode.inc). Floats: Scores8 per head. Halves: 2 keys x up to 4 heads per pass, each
// key's 8 values converted once (vcvtph2ps) for all the heads, so the conversion costs one
// instruction per 4 FMAs (converting the rows into a float tile first cost a store per
// conversion: 1.6x the f32 kernel's time with the data in cache); per (head, key) the same
// accumulation over d and the same lane reduction (Sum8x8) as Scores8, so the same scores bit for
// bit.
template <class T>
inline void GroupScores8(const float* q, int64_t heads, const T* k, int64_t kv_stride, int64_t head_dim, float scale,
                         float (*s)[kDecodeKeys], int64_t j) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t h = 0; h < heads; ++h) Scores8(q + h * head_dim, k, kv_stride, head_dim, scale, s[h] + j);
  } else {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int64_t h0 = 0; h0 < heads; h0 += 4) {
      const int rc = static_cast<int>(std::min<int64_t>(4, heads - h0));
      const float* qh = q + h0 * head_dim;
      for (int64_t i = 0; i < 8; i += 2) {
        const T* k0 = k + i * kv_stride;
        const T* k1 = k0 + kv_stride;
        __m256 acc[8];  // (head r, key i + e) in acc[2r + e]; unused ones stay 0
        for (__m256& a : acc) a = _mm256_setzero_ps();
        for (int64_t d = 0; d < head_dim; d += 8) {
          const __m256 a = Load8(k0 + d), b = Load8(k1 + d);
          for (int r = 0; r < rc; ++r) {
            const __m256 qv = _mm256_loadu_ps(qh + r * head_dim + d);
            acc[2 * r] = _mm256_fmadd_ps(qv, a, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(qv, b, acc[2 * r + 1]);
          }
        }
        alignas(32) float out[8];
        _mm256_store_ps(out, _mm256_mul_ps(Sum8x8(acc), vs));
        for (int r = 0; r < rc; ++r) s[h0 + r][j + i] = out[2 * r], s[h0 + r][j + i + 1] = out[2 * r + 1];
      }
    }
  }
}

inline void SoftmaxRow(float* s, int64_t n, float* m, float* l) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
  float top = HmaxPs(vmax);
  for (; j < n; ++j) top = std::max(top, s[j]);
  const __m256 vtop = _mm256_set1_ps(top);
  __m256 vsum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vtop));
    _mm256_storeu_ps(s + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = HsumPs(vsum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - top);
    sum += s[j];
  }
  *m = top;
  *l = sum;
}

// o_r[0..head_dim) += sum_j p_r[j] v_j: the batched prefill's BlockPv16, 16 dimensions at a time.
template <int R, class T>
inline void BlockPv(const float* const* p, const T* v, int64_t kv_stride, int64_t nb, int64_t head_dim,
                    float* const* o) {
  const float ones[4] = {1.0f, 1.0f, 1.0f, 1.0f};  // no rescaling (o * 1 is exact)
  float* oz[R];
  for (int64_t d0 = 0; d0 < head_dim; d0 += 16) {
    for (int r = 0; r < R; ++r) oz[r] = o[r] + d0;
    BlockPv16<R>(oz, p, ones, v + d0, kv_stride, nb);
  }
}

#include "engine/kernels/attention_decode.inc"

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

const CpuKernels& Avx2Kernels() {
  static const CpuKernels table = [] {
    CpuKernels k;
    k.path = CpuPath::kAvx2;
    k.quantize = Quantize;
    k.ternary_gemv = TernaryGemv;
    k.ternary_gemm = TernaryGemm;
    k.dense_gemv = DenseGemv;
    k.dense_gemm = DenseGemm;
    k.q8_gemv = Q8Gemv;
    k.attention = AttentionHeads;
    k.attention_prefill = AttentionPrefill<float>;
    k.attention_decode = AttentionDecode<float>;
    k.attention_f16 = Attention;  // the reference's loops: only for shapes the two below do not cover
    k.attention_prefill_f16 = AttentionPrefill<uint16_t>;
    k.attention_decode_f16 = AttentionDecode<uint16_t>;
    k.norm_quantize = NormQuantize;
    return k;
  }();
  return table;
}

}  // namespace trinity::kernels

#pragma GCC pop_options

#else  // not x86-64: never selected (DetectCpuPath returns kRef)

namespace trinity::kernels {
const CpuKernels& Avx2Kernels() { return RefKernels(); }
}  // namespace trinity::kernels

#endif
