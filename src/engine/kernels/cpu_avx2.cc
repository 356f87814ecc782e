// AVX2 + FMA + F16C kernels (any x86-64 since Haswell / Zen 1). Compiled for that target with a
// pragma after the standard headers (see cpu_avx512.cc for why).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/kernels/cpu.h"

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

inline int32_t HsumEpi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
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

// ---- ternary GEMV (decode) ----------------------------------------------------------------------
// Reference: y[r] = (sum_c (code[r,c] - 1) * q[c]) * scale / act_scale, integer sum.
// One 32-byte I2_S block holds values 0..31 / 32..63 / 64..95 / 96..127 in bits 7-6 / 5-4 / 3-2 /
// 1-0: (w >> 6) & 3 etc. give u8 codes in activation order; vpmaddubsw (u8 x s8 -> s16 pairs,
// |pair| <= 2*3*128, no saturation) then vpmaddwd with ones accumulates in int32. Four rows share
// the four activation loads per block.
template <int R>
inline void GemvRows(const uint8_t* w0, int64_t row_bytes, const int8_t* q, int64_t blocks, int32_t* out) {
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t j = 0; j < blocks; ++j) {
    const __m256i q0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 128 * j));
    const __m256i q1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 128 * j + 32));
    const __m256i q2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 128 * j + 64));
    const __m256i q3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 128 * j + 96));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + r * row_bytes + 32 * j));
      __m256i p = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 6), three), q0);
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), three), q1));
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 2), three), q2));
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(_mm256_and_si256(w, three), q3));
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, ones));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = HsumEpi32(acc[r]);
}

void TernaryGemv(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
                 int64_t row_end) {
  if (w.group_scales != nullptr) {
    TernaryMatVec(w, q, act_scale, y, row_begin, row_end);
    return;
  }
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  int32_t dot[4];
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    GemvRows<4>(w.codes + r * row_bytes, row_bytes, q, blocks, dot);
    for (int i = 0; i < 4; ++i) y[r + i] = static_cast<float>(dot[i] - q_sum) * w.scale / act_scale;
  }
  for (; r < row_end; ++r) {
    GemvRows<1>(w.codes + r * row_bytes, row_bytes, q, blocks, dot);
    y[r] = static_cast<float>(dot[0] - q_sum) * w.scale / act_scale;
  }
}

// ---- ternary GEMM (prefill) ---------------------------------------------------------------------
// One row's block unpacked once into four code registers, reused by T = 4 tokens.
template <int T>
inline void GemmRow(const uint8_t* row, const int8_t* q, int64_t q_stride, int64_t blocks, int32_t* out) {
  const __m256i three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_si256();
  for (int64_t j = 0; j < blocks; ++j) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * j));
    const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(w, 6), three);
    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(w, 4), three);
    const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(w, 2), three);
    const __m256i c3 = _mm256_and_si256(w, three);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const int8_t* qt = q + t * q_stride + 128 * j;
      __m256i p = _mm256_maddubs_epi16(c0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt)));
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + 32))));
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + 64))));
      p = _mm256_add_epi16(p, _mm256_maddubs_epi16(c3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qt + 96))));
      acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(p, ones));
    }
  }
  for (int t = 0; t < T; ++t) out[t] = HsumEpi32(acc[t]);
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
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  constexpr int64_t kTokenBlock = 32;
  int32_t dot[4];
  for (int64_t tb = 0; tb < n_tok; tb += kTokenBlock) {
    const int64_t te = std::min(n_tok, tb + kTokenBlock);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.codes + r * row_bytes;
      for (int64_t t = tb; t < te; t += 4) {
        const int tc = static_cast<int>(std::min<int64_t>(4, te - t));
        const int8_t* qt = q + t * q_stride;
        switch (tc) {
          case 4: GemmRow<4>(row, qt, q_stride, blocks, dot); break;
          case 3: GemmRow<3>(row, qt, q_stride, blocks, dot); break;
          case 2: GemmRow<2>(row, qt, q_stride, blocks, dot); break;
          default: GemmRow<1>(row, qt, q_stride, blocks, dot); break;
        }
        for (int k = 0; k < tc; ++k)
          y[(t + k) * y_stride + r] = static_cast<float>(dot[k] - q_sums[t + k]) * w.scale / act_scales[t + k];
      }
    }
  }
}

// ---- dense GEMV (LM head) -------------------------------------------------------------------------
// Reference: y[r] = sum_c W[r,c] x[c]; F16 via vcvtph2ps, f32 FMA, four rows share the x loads.
template <int R, bool kF16>
inline void DenseRows(const uint8_t* w0, uint64_t row_bytes, const float* x, int64_t n, float* out) {
  auto load = [&](int r, int64_t c) -> __m256 {
    const uint8_t* row = w0 + r * row_bytes;
    if constexpr (kF16) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + c)));
    } else {
      return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
    }
  };
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      acc0[r] = _mm256_fmadd_ps(load(r, c), x0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(load(r, c + 8), x1, acc1[r]);
    }
  }
  for (; c + 8 <= n; c += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + c);
    for (int r = 0; r < R; ++r) acc0[r] = _mm256_fmadd_ps(load(r, c), x0, acc0[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = HsumPs(_mm256_add_ps(acc0[r], acc1[r]));
    const uint8_t* row = w0 + r * row_bytes;
    for (int64_t k = c; k < n; ++k) {
      float v;
      if constexpr (kF16) {
        uint16_t h;
        std::memcpy(&h, row + 2 * k, 2);
        v = _cvtsh_ss(h);
      } else {
        std::memcpy(&v, row + 4 * k, 4);
      }
      s = std::fma(v, x[k], s);  // explicit: the F16 and F32 instances must round alike
    }
    out[r] = s;
  }
}

template <bool kF16>
void DenseRowsAll(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) DenseRows<4, kF16>(w.data + r * w.row_bytes, w.row_bytes, x, w.n_in, y + r);
  for (; r < row_end; ++r) DenseRows<1, kF16>(w.data + r * w.row_bytes, w.row_bytes, x, w.n_in, y + r);
}

void DenseGemv(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (w.type == TensorType::kF16) return DenseRowsAll<true>(w, x, y, row_begin, row_end);
  if (w.type == TensorType::kF32) return DenseRowsAll<false>(w, x, y, row_begin, row_end);
  DenseMatVec(w, x, y, row_begin, row_end);
}

// Blocks of kStageRows F16 rows converted to f32 once (exactly), then every vector's dot products
// on the f32 copy with the F32 kernel, whose summation order is the F16 kernel's.
void DenseGemm(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys, int64_t row_begin,
               int64_t row_end) {
  if (w.type != TensorType::kF16 || n_x == 1) {
    for (int64_t i = 0; i < n_x; ++i) DenseGemv(w, x + i * x_stride, ys[i], row_begin, row_end);
    return;
  }
  constexpr int64_t kStageRows = 32;  // 32 x n_in f32: 320 KB at n_in 2560, in L2
  thread_local std::vector<float> stage;
  stage.resize(static_cast<size_t>(kStageRows * w.n_in));
  for (int64_t b = row_begin; b < row_end; b += kStageRows) {
    const int64_t e = std::min(row_end, b + kStageRows);
    for (int64_t r = b; r < e; ++r) {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(w.data + r * w.row_bytes);
      float* dst = stage.data() + (r - b) * w.n_in;
      int64_t c = 0;
      for (; c + 8 <= w.n_in; c += 8) {
        _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c))));
      }
      for (; c < w.n_in; ++c) {
        uint16_t h;  // rows need not be 2-byte aligned
        std::memcpy(&h, src + c, sizeof h);
        dst[c] = _cvtsh_ss(h);
      }
    }
    const DenseView block{TensorType::kF32, reinterpret_cast<const uint8_t*>(stage.data()), w.n_in, e - b,
                          static_cast<uint64_t>(w.n_in) * sizeof(float)};
    for (int64_t i = 0; i < n_x; ++i) DenseRowsAll<false>(block, x + i * x_stride, ys[i] + b, 0, e - b);
  }
}

// ---- 8-bit GEMV (optional quantised LM head) --------------------------------------------------------
// Reference: y[r] = (sum_c (b[r,c] - 128) * q[c]) * scales[r] / act_scale, integer sum. The weight
// w = b - 128 (b ^ 0x80 as s8, in [-127, 127]) carries q's sign (vpsignb) and |q| is the unsigned
// operand of vpmaddubsw: |q| * (w * sign q) = q * w, pairs <= 2 * 128 * 127 < 2^15, no saturation
// for any q in [-128, 127]. |q| is computed once per 32 activations for four rows.
template <int R>
inline void Q8Rows(const uint8_t* w0, uint64_t row_bytes, const int8_t* q, int64_t n, int32_t* out) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  __m256i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c));
    const __m256i qa = _mm256_abs_epi8(qv);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256i wv = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + r * row_bytes + c)), flip);
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(wv, qv)), ones));
    }
  }
  for (int r = 0; r < R; ++r) {
    int32_t s = HsumEpi32(acc[r]);
    const uint8_t* row = w0 + r * row_bytes;
    for (int64_t i = c; i < n; ++i) s += (static_cast<int32_t>(row[i]) - 128) * q[i];
    out[r] = s;
  }
}

void Q8Gemv(const Q8View& w, const int8_t* q, int32_t, float act_scale, float* y, int64_t row_begin, int64_t row_end) {
  int32_t dot[4];
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    Q8Rows<4>(w.data + r * w.row_bytes, w.row_bytes, q, w.n_in, dot);
    for (int i = 0; i < 4; ++i) y[r + i] = static_cast<float>(dot[i]) * w.scales[r + i] / act_scale;
  }
  for (; r < row_end; ++r) {
    Q8Rows<1>(w.data + r * w.row_bytes, w.row_bytes, q, w.n_in, dot);
    y[r] = static_cast<float>(dot[0]) * w.scales[r] / act_scale;
  }
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
