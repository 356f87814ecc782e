// AArch64 NEON + dot-product (FEAT_DotProd: sdot) kernels: Apple M1 and later, Cortex-A55/A76 and
// later, Neoverse N1/V1, Graviton 2+. GCC compiles it for armv8.2-a+dotprod with a pragma after the
// standard headers (as the x86 files do), so no inline function of the standard library is emitted
// with v8.2 code in it; clang <= 15 declares the sdot intrinsics only when the whole file is built
// with dotprod, so CMake passes -march=armv8.2-a+dotprod to clang (Apple's default CPU has it).
// The dispatcher (cpu_dispatch.cc) only calls these after the OS said the machine runs sdot.
// CMake builds this file only for aarch64/arm64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/common/fp16.h"
#include "engine/kernels/cpu.h"

#if defined(__aarch64__)
#if !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
#include <arm_neon.h>

namespace trinity::kernels {

namespace {

// ---- activation quantisation ------------------------------------------------------------------
// Reference (ref.h): a = 127 / max(max|x|, 1e-5); q = clamp(round_half_even(x * a), -128, 127).
// Bit-identical: the same single float multiply, fcvtns rounds to nearest with ties to even (as
// nearbyint in the default mode), sqxtn saturates exactly as the clamp. fmaxnm ignores NaN as
// std::max(max_abs, NaN) does.
float Quantize(const float* x, int64_t n, int8_t* q, int32_t* q_sum) {
  float32x4_t vmax = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vmax = vmaxnmq_f32(vmax, vabsq_f32(vld1q_f32(x + i)));
  float max_abs = vmaxnmvq_f32(vmax);
  for (; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  const float a = 127.0f / std::max(max_abs, 1e-5f);
  const float32x4_t va = vdupq_n_f32(a);
  int32x4_t vsum = vdupq_n_s32(0);
  for (i = 0; i + 16 <= n; i += 16) {
    const int32x4_t v0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i), va));
    const int32x4_t v1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 4), va));
    const int32x4_t v2 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 8), va));
    const int32x4_t v3 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 12), va));
    const int16x8_t w0 = vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1));
    const int16x8_t w1 = vcombine_s16(vqmovn_s32(v2), vqmovn_s32(v3));
    const int8x16_t b = vcombine_s8(vqmovn_s16(w0), vqmovn_s16(w1));
    vst1q_s8(q + i, b);
    vsum = vpadalq_s16(vsum, vpaddlq_s8(b));
  }
  int32_t s = vaddvq_s32(vsum);
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
// 1-0, so shifts and masks of its two 16-byte halves give eight vectors of u8 codes (0..3, also
// valid as s8) in activation order; sdot multiplies them with the int8 activations and adds four
// products into each int32 lane. sum(c*q) - sum(q) is the reference's integer sum exactly
// (|sum| < 2^31 for any n_in below ~5.5 M). Four rows share the eight activation loads per block.
struct Codes {
  int8x16_t c[8];  // c[2k], c[2k+1]: values 32k..32k+15, 32k+16..32k+31 of the block
};

inline Codes Unpack(const uint8_t* block) {
  const uint8x16_t three = vdupq_n_u8(3);
  const uint8x16_t lo = vld1q_u8(block), hi = vld1q_u8(block + 16);
  Codes k;
  k.c[0] = vreinterpretq_s8_u8(vshrq_n_u8(lo, 6));
  k.c[1] = vreinterpretq_s8_u8(vshrq_n_u8(hi, 6));
  k.c[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 4), three));
  k.c[3] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 4), three));
  k.c[4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 2), three));
  k.c[5] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 2), three));
  k.c[6] = vreinterpretq_s8_u8(vandq_u8(lo, three));
  k.c[7] = vreinterpretq_s8_u8(vandq_u8(hi, three));
  return k;
}

// acc += codes . q over one 128-value block (q: 128 int8 in activation order).
inline int32x4_t DotBlock(int32x4_t acc, const Codes& k, const int8x16_t* q) {
  // Two chains so consecutive sdots do not wait on each other.
  int32x4_t a = vdotq_s32(acc, k.c[0], q[0]);
  int32x4_t b = vdotq_s32(vdupq_n_s32(0), k.c[1], q[1]);
  a = vdotq_s32(a, k.c[2], q[2]);
  b = vdotq_s32(b, k.c[3], q[3]);
  a = vdotq_s32(a, k.c[4], q[4]);
  b = vdotq_s32(b, k.c[5], q[5]);
  a = vdotq_s32(a, k.c[6], q[6]);
  b = vdotq_s32(b, k.c[7], q[7]);
  return vaddq_s32(a, b);
}

inline void LoadQ(const int8_t* q, int8x16_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = vld1q_s8(q + 16 * i);
}

template <int R>
inline void GemvRows(const uint8_t* w0, int64_t row_bytes, const int8_t* q, int64_t blocks, int32_t* out) {
  int32x4_t acc[R];
  for (int r = 0; r < R; ++r) acc[r] = vdupq_n_s32(0);
  for (int64_t j = 0; j < blocks; ++j) {
    int8x16_t qv[8];
    LoadQ(q + 128 * j, qv);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = DotBlock(acc[r], Unpack(w0 + r * row_bytes + 32 * j), qv);
  }
  for (int r = 0; r < R; ++r) out[r] = vaddvq_s32(acc[r]);
}

void TernaryGemv(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
                 int64_t row_end) {
  if (w.group_scales != nullptr) {  // per-128 scales (TQ2_0 blocks): float64 order of the reference
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
// One row's block unpacked once into eight code vectors, reused by T = 4 tokens.
template <int T>
inline void GemmRow(const uint8_t* row, const int8_t* q, int64_t q_stride, int64_t blocks, int32_t* out) {
  int32x4_t acc[T];
  for (int t = 0; t < T; ++t) acc[t] = vdupq_n_s32(0);
  for (int64_t j = 0; j < blocks; ++j) {
    const Codes k = Unpack(row + 32 * j);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      int8x16_t qv[8];
      LoadQ(q + t * q_stride + 128 * j, qv);
      acc[t] = DotBlock(acc[t], k, qv);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = vaddvq_s32(acc[t]);
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
  constexpr int64_t kTokenBlock = 32;  // 32 tokens' activations (32 * n_in bytes) stay in L1/L2
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

// ---- 8-bit GEMV (the optional 8-bit LM head) ------------------------------------------------------
// Reference: y[r] = (sum_c (b[r,c] - 128) * q[c]) * scales[r] / act_scale, integer sum.
// b ^ 0x80 read as int8 is b - 128 exactly, so sdot takes the bytes as they are stored.
template <int R>
inline void Q8Rows(const uint8_t* w0, uint64_t row_bytes, const int8_t* q, int64_t n, int32_t* out) {
  const uint8x16_t bias = vdupq_n_u8(0x80);
  int32x4_t acc[R];
  for (int r = 0; r < R; ++r) acc[r] = vdupq_n_s32(0);
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const int8x16_t qv = vld1q_s8(q + c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      acc[r] = vdotq_s32(acc[r], vreinterpretq_s8_u8(veorq_u8(vld1q_u8(w0 + r * row_bytes + c), bias)), qv);
  }
  for (int r = 0; r < R; ++r) {
    int32_t s = vaddvq_s32(acc[r]);
    const uint8_t* row = w0 + r * row_bytes;
    for (int64_t k = c; k < n; ++k) s += (static_cast<int32_t>(row[k]) - 128) * q[k];
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

// ---- dense GEMV (LM head) -------------------------------------------------------------------------
// Reference: y[r] = sum_c W[r,c] x[c]; F16 widened with fcvtl (exact), f32 fma, four rows share
// the x loads. Rows need not be aligned: byte loads reinterpreted.
template <bool kF16>
inline float32x4x2_t Load8(const uint8_t* row, int64_t c) {
  if constexpr (kF16) {
    const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(row + 2 * c));
    return {vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)};
  } else {
    return {vreinterpretq_f32_u8(vld1q_u8(row + 4 * c)), vreinterpretq_f32_u8(vld1q_u8(row + 4 * c + 16))};
  }
}

template <int R, bool kF16>
inline void DenseRows(const uint8_t* w0, uint64_t row_bytes, const float* x, int64_t n, float* out) {
  float32x4_t acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = vdupq_n_f32(0.0f);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const float32x4_t x0 = vld1q_f32(x + c), x1 = vld1q_f32(x + c + 4);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float32x4x2_t v = Load8<kF16>(w0 + r * row_bytes, c);
      acc0[r] = vfmaq_f32(acc0[r], v.val[0], x0);
      acc1[r] = vfmaq_f32(acc1[r], v.val[1], x1);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
    const uint8_t* row = w0 + r * row_bytes;
    for (int64_t k = c; k < n; ++k) {
      float v;
      if constexpr (kF16) {
        uint16_t h;
        std::memcpy(&h, row + 2 * k, 2);
        v = Fp16ToFp32(h);
      } else {
        std::memcpy(&v, row + 4 * k, 4);
      }
      s = std::fma(v, x[k], s);  // explicit: the F16 and F32 instances must round alike (DenseGemm)
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
// on the f32 copy with the F32 kernel, whose summation order is the F16 kernel's: bit-identical to
// n_x DenseGemv calls.
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
      const uint8_t* src = w.data + r * w.row_bytes;
      float* dst = stage.data() + (r - b) * w.n_in;
      int64_t c = 0;
      for (; c + 8 <= w.n_in; c += 8) {
        const float32x4x2_t v = Load8<true>(src, c);
        vst1q_f32(dst + c, v.val[0]);
        vst1q_f32(dst + c + 4, v.val[1]);
      }
      for (; c < w.n_in; ++c) {
        uint16_t h;
        std::memcpy(&h, src + 2 * c, 2);
        dst[c] = Fp16ToFp32(h);
      }
    }
    const DenseView block{TensorType::kF32, reinterpret_cast<const uint8_t*>(stage.data()), w.n_in, e - b,
                          static_cast<uint64_t>(w.n_in) * sizeof(float)};
    for (int64_t i = 0; i < n_x; ++i) DenseRowsAll<false>(block, x + i * x_stride, ys[i] + b, 0, e - b);
  }
}

// ---- attention --------------------------------------------------------------------------------------
// Reference (ref.h); vectorised dot products and p*v accumulation, std::exp as the reference.
inline float Dot(const float* a, const float* b, int64_t n) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t d = 0;
  for (; d + 4 <= n; d += 4) acc = vfmaq_f32(acc, vld1q_f32(a + d), vld1q_f32(b + d));
  float s = vaddvq_f32(acc);
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
      const float32x4_t vp = vdupq_n_f32(p);
      const float* v = v_cache + t * kv_stride + kvh * head_dim;
      int64_t d = 0;
      for (; d + 4 <= head_dim; d += 4) vst1q_f32(oh + d, vfmaq_f32(vld1q_f32(oh + d), vp, vld1q_f32(v + d)));
      for (; d < head_dim; ++d) oh[d] += p * v[d];
    }
  }
}

// ---- RmsNorm + quantisation, fused ------------------------------------------------------------
// As in cpu_avx512.cc / cpu_avx2.cc: three passes over x (in L1): sum of squares in double (h*h
// is exact in double), max |h * inv * w|, then q = round(h * inv * w * a) with the same float
// operations as RmsNorm followed by Quantize, so only the double sum's order differs from the
// reference. kRelu2: h = relu^2(x) * up (a = x > 0 ? x*x : 0, h = a * up), recomputed in each
// pass. The n % 4 tail goes through the same operations in scalar code.
template <bool kRelu2>
inline float NormInput1(const float* x, const float* up, int64_t j) {
  if constexpr (!kRelu2) {
    return x[j];
  } else {
    const float a = x[j] > 0.0f ? x[j] * x[j] : 0.0f;
    return a * up[j];
  }
}

template <bool kRelu2>
inline float32x4_t NormInput4(const float* x, const float* up, int64_t j) {
  const float32x4_t v = vld1q_f32(x + j);
  if constexpr (!kRelu2) {
    return v;
  } else {
    const uint32x4_t pos = vcgtq_f32(v, vdupq_n_f32(0.0f));
    const float32x4_t a = vreinterpretq_f32_u32(vandq_u32(pos, vreinterpretq_u32_f32(vmulq_f32(v, v))));
    return vmulq_f32(a, vld1q_f32(up + j));
  }
}

template <bool kRelu2>
float NormQuantizeT(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                    int32_t* q_sum) {
  const int64_t n4 = n / 4 * 4;
  float64x2_t s0 = vdupq_n_f64(0.0), s1 = vdupq_n_f64(0.0);
  for (int64_t i = 0; i < n4; i += 4) {
    const float32x4_t h = NormInput4<kRelu2>(x, up, i);
    const float64x2_t a = vcvt_f64_f32(vget_low_f32(h)), b = vcvt_high_f64_f32(h);
    s0 = vfmaq_f64(s0, a, a);
    s1 = vfmaq_f64(s1, b, b);
  }
  double sum_sq = vaddvq_f64(vaddq_f64(s0, s1));
  for (int64_t i = n4; i < n; ++i) {
    const double h = NormInput1<kRelu2>(x, up, i);
    sum_sq += h * h;
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  const float32x4_t vinv = vdupq_n_f32(inv);
  auto normed4 = [&](int64_t j) { return vmulq_f32(vmulq_f32(NormInput4<kRelu2>(x, up, j), vinv), vld1q_f32(weight + j)); };
  auto normed1 = [&](int64_t j) { return NormInput1<kRelu2>(x, up, j) * inv * weight[j]; };
  float32x4_t vmax = vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < n4; i += 4) vmax = vmaxnmq_f32(vmax, vabsq_f32(normed4(i)));
  float max_abs = vmaxnmvq_f32(vmax);
  for (int64_t i = n4; i < n; ++i) max_abs = std::max(max_abs, std::fabs(normed1(i)));
  const float a = 127.0f / std::max(max_abs, 1e-5f);
  const float32x4_t va = vdupq_n_f32(a);
  int32x4_t vsum = vdupq_n_s32(0);
  for (int64_t i = 0; i < n4; i += 4) {
    const int32x4_t v = vcvtnq_s32_f32(vmulq_f32(normed4(i), va));  // ties to even, as nearbyint
    const int16x4_t w16 = vqmovn_s32(v);                              // saturating: the clamp
    const int8x8_t w8 = vqmovn_s16(vcombine_s16(w16, w16));
    vsum = vaddw_s16(vsum, vget_low_s16(vmovl_s8(w8)));
    int8_t bytes[8];
    vst1_s8(bytes, w8);
    std::memcpy(q + i, bytes, 4);
  }
  int32_t s = vaddvq_s32(vsum);
  for (int64_t i = n4; i < n; ++i) {
    const float v = std::nearbyint(normed1(i) * a);
    q[i] = static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f));
    s += q[i];
  }
  *q_sum = s;
  return a;
}

float NormQuantize(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                   int32_t* q_sum) {
  return up != nullptr ? NormQuantizeT<true>(x, up, weight, n, eps, q, q_sum)
                       : NormQuantizeT<false>(x, up, weight, n, eps, q, q_sum);
}

// ---- attention over a batch of query tokens (prefill) ------------------------------------------
// The driver (blocks of 64 keys, K transposed once per block, online softmax) is shared by the
// paths: attention_prefill.inc. Here one block for up to 4 heads of one token in 4-float vectors:
// scores 16 keys x up to 4 heads at a time (16 accumulators), p.V accumulated into `out` 16 dims
// at a time.

// 4 floats from a float cache, or converted from 4 halves of an f16 cache (fcvtl: exact).
inline float32x4_t Load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t Load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// f[0..n) = the IEEE halves h[0..n) as floats, for the f16 KV cache.
inline void HalfToFloat(const uint16_t* h, int64_t n, float* f) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(f + i, Load4(h + i));
  for (; i < n; ++i) f[i] = Fp16ToFp32(h[i]);
}

#include "engine/kernels/attention_prefill.inc"

// e^x for 4 floats: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial (relative error ~2e-7),
// times 2^n built in the exponent bits. Inputs below -87 give ~0 (the caller masks true zeros);
// inputs here are <= 0 (scores minus their running max).
inline float32x4_t Exp4(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.3981999507e-3f);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  // 2^n for n in [-126, 0]: (n + 127) << 23 as the float's bits.
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

// Scores of R <= 4 query heads against keys [k0, k0 + 16) of a transposed block kt (head_dim rows
// of 64 floats): s[r][k0 + 0..16) = scale * q_r . k.
template <int R>
inline void QuarterBlockScores(const float* const* qh, const float* kt, int64_t k0, int64_t head_dim, float scale,
                               float (*s)[kKeyBlock]) {
  float32x4_t acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = vdupq_n_f32(0.0f);
  for (int64_t d = 0; d < head_dim; ++d) {
    const float* kd = kt + d * kKeyBlock + k0;
    const float32x4_t ka = vld1q_f32(kd), kb = vld1q_f32(kd + 4), kc = vld1q_f32(kd + 8), kdd = vld1q_f32(kd + 12);
    for (int r = 0; r < R; ++r) {
      const float qv = qh[r][d];
      acc[r][0] = vfmaq_n_f32(acc[r][0], ka, qv);
      acc[r][1] = vfmaq_n_f32(acc[r][1], kb, qv);
      acc[r][2] = vfmaq_n_f32(acc[r][2], kc, qv);
      acc[r][3] = vfmaq_n_f32(acc[r][3], kdd, qv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) vst1q_f32(s[r] + k0 + 4 * i, vmulq_n_f32(acc[r][i], scale));
}

// o_r[0..16) = o_r * corr[r] + sum_k p[r][k] v_k[0..16) for R <= 4 rows, nv keys (v rows kv_stride apart).
template <int R, class T = float>
inline void BlockPv16(float* const* o, const float* const* p, const float* corr, const T* v,
                      int64_t kv_stride, int64_t nv) {
  float32x4_t acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < 4; ++z) acc[r][z] = vmulq_n_f32(vld1q_f32(o[r] + 4 * z), corr[r]);
  for (int64_t k = 0; k < nv; ++k, v += kv_stride) {
    const float32x4_t va = Load4(v), vb = Load4(v + 4), vc = Load4(v + 8), vd = Load4(v + 12);
    for (int r = 0; r < R; ++r) {
      const float pk = p[r][k];
      acc[r][0] = vfmaq_n_f32(acc[r][0], va, pk);
      acc[r][1] = vfmaq_n_f32(acc[r][1], vb, pk);
      acc[r][2] = vfmaq_n_f32(acc[r][2], vc, pk);
      acc[r][3] = vfmaq_n_f32(acc[r][3], vd, pk);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int z = 0; z < 4; ++z) vst1q_f32(o[r] + 4 * z, acc[r][z]);
}

// One block of keys [kb, kb + nv) for R heads of one token: scores, online-softmax update of
// m/l, rescale + accumulate the outputs.
template <int R>
void BlockUpdate(const float* const* qh, float* const* o, float* m, float* l, const float* kt, const float* v,
                 int64_t kv_stride, int64_t nv, int64_t head_dim, float scale) {
  alignas(16) float s[R][kKeyBlock];
  for (int64_t k0 = 0; k0 < nv; k0 += 16) QuarterBlockScores<R>(qh, kt, k0, head_dim, scale, s);
  float corr[R];
  for (int r = 0; r < R; ++r) {
    for (int64_t i = nv; i < kKeyBlock; ++i) s[r][i] = -INFINITY;  // keys past the limit
    float32x4_t vmax = vdupq_n_f32(-INFINITY);
    for (int64_t i = 0; i < kKeyBlock; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(s[r] + i));
    const float m_new = std::max(m[r], vmaxvq_f32(vmax));
    corr[r] = std::exp(m[r] - m_new);  // 0 on the first block (m = -inf)
    const float32x4_t vm = vdupq_n_f32(m_new);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    for (int64_t i = 0; i < nv; i += 4) {
      const float32x4_t si = vld1q_f32(s[r] + i);
      float32x4_t e = Exp4(vsubq_f32(si, vm));
      // masked keys (s = -inf): exactly 0
      e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), vmvnq_u32(vceqq_f32(si, vdupq_n_f32(-INFINITY)))));
      vst1q_f32(s[r] + i, e);
      vsum = vaddq_f32(vsum, e);
    }
    l[r] = l[r] * corr[r] + vaddvq_f32(vsum);
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
// CpuKernels::attention_decode: the driver is attention_decode.inc; here 4-float vectors. Scores:
// 8 per-key accumulators reduced pairwise; Exp4 (as the batched prefill); p.V with 16 dimensions x
// up to 4 heads in registers.

// s[j] = scale * qh . k_j for the 8 key rows at k (kv_stride apart), into out[0..8).
inline void Scores8(const float* qh, const float* k, int64_t kv_stride, int64_t head_dim, float scale, float* out) {
  float32x4_t acc[8];
  for (float32x4_t& a : acc) a = vdupq_n_f32(0.0f);
  for (int64_t d = 0; d < head_dim; d += 4) {
    const float32x4_t qv = vld1q_f32(qh + d);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = vfmaq_f32(acc[i], qv, vld1q_f32(k + i * kv_stride + d));
  }
  const float32x4_t lo = vpaddq_f32(vpaddq_f32(acc[0], acc[1]), vpaddq_f32(acc[2], acc[3]));
  const float32x4_t hi = vpaddq_f32(vpaddq_f32(acc[4], acc[5]), vpaddq_f32(acc[6], acc[7]));
  vst1q_f32(out, vmulq_n_f32(lo, scale));
  vst1q_f32(out + 4, vmulq_n_f32(hi, scale));
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

// Scores of `heads` query heads of one KV head against 8 key rows (GroupScores8 in
// attention_decode.inc): Scores8 per head; from an f16 cache on the 8 rows' slices converted into
// a float tile first (the same scores bit for bit; not measured on ARM hardware).
template <class T>
inline void GroupScores8(const float* q, int64_t heads, const T* k, int64_t kv_stride, int64_t head_dim, float scale,
                         float (*s)[kDecodeKeys], int64_t j) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t h = 0; h < heads; ++h) Scores8(q + h * head_dim, k, kv_stride, head_dim, scale, s[h] + j);
  } else {
    alignas(16) float tile[8 * kMaxHeadDim];
    for (int64_t i = 0; i < 8; ++i) HalfToFloat(k + i * kv_stride, head_dim, tile + i * head_dim);
    for (int64_t h = 0; h < heads; ++h) Scores8(q + h * head_dim, tile, head_dim, head_dim, scale, s[h] + j);
  }
}

inline void SoftmaxRow(float* s, int64_t n, float* m, float* l) {
  float32x4_t vmax = vdupq_n_f32(-INFINITY);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) vmax = vmaxq_f32(vmax, vld1q_f32(s + j));
  float top = vmaxvq_f32(vmax);
  for (; j < n; ++j) top = std::max(top, s[j]);
  const float32x4_t vtop = vdupq_n_f32(top);
  float32x4_t vsum = vdupq_n_f32(0.0f);
  for (j = 0; j + 4 <= n; j += 4) {
    const float32x4_t e = Exp4(vsubq_f32(vld1q_f32(s + j), vtop));
    vst1q_f32(s + j, e);
    vsum = vaddq_f32(vsum, e);
  }
  float sum = vaddvq_f32(vsum);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - top);
    sum += s[j];
  }
  *m = top;
  *l = sum;
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

const CpuKernels& NeonKernels() {
  static const CpuKernels table = [] {
    CpuKernels k;
    k.path = CpuPath::kNeon;
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

#if !defined(__clang__)
#pragma GCC pop_options
#endif

#endif  // __aarch64__
