// Portable kernels for CPUs without a hand-written path: AArch64 without the dot-product
// instructions (Cortex-A53/A72: Raspberry Pi 3 and 4), x86-64 without AVX2, RISC-V, POWER, ...
// GCC/Clang vector extensions (16-byte vectors: NEON on AArch64, SSE2 on x86-64, scalar code
// where there is no SIMD unit) instead of intrinsics, so one source serves every target. Integer
// sums are exact; float sums keep explicit lanes, so their order is fixed (the same on every
// machine, and for one vector or many).
//
// Against the reference (the scalar oracle, which this path replaces as the default on those
// machines): the ternary GEMV/GEMM are bit-identical (integer sums); the dense kernels (LM head)
// differ by float summation order only. On x86-64 forced to this path (SSE2; kernels_bench, one
// thread, Zen 3): ternary GEMV 3.1 GB/s against the reference's 1.5-1.8, 64-token GEMM 15 G MAC/s
// against 7.6, F16 head 3.0 GB/s against 0.5; 2B-4T, two threads: pp64 11.7 tok/s against 4.7,
// tg16 3.9 against 0.9 (bench/RESULTS.md, ninth session). On ARM only correctness is measured
// (qemu-user, scripts/test-arm.sh).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/common/fp16.h"
#include "engine/kernels/cpu.h"

namespace trinity::kernels {

namespace {

// GCC/Clang vector extensions: 16-byte vectors, lowered to SSE2 on x86-64, NEON on AArch64 and
// to scalar code where there is no SIMD unit.
typedef int16_t I16x8 __attribute__((vector_size(16)));
typedef uint8_t U8x8 __attribute__((vector_size(8)));
typedef uint16_t U16x4 __attribute__((vector_size(8)));
typedef uint32_t U32x4 __attribute__((vector_size(16)));
typedef float F32x4 __attribute__((vector_size(16)));

template <typename V, typename T>
inline V Load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

inline int32_t Sum(I16x8 v) {
  int32_t s = 0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

// ---- ternary ------------------------------------------------------------------------------------
// The activations widened to int16 once per call (into a thread-local buffer), so that the inner
// loops are int16 multiply-adds: code (0..3) x q, |product| <= 384. I2_S: block j's byte i holds
// values 128j + i, +32, +64, +96 in bits 7-6, 5-4, 3-2, 1-0.
void Widen(const int8_t* q, int64_t n, int16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = q[i];
}

// sum_c code[c] * q[c] over one row. A block adds at most 4 x 384 = 1536 to an int16 lane, so 16
// blocks (24576) are summed in int16 before the lanes go into the int32 total.
constexpr int64_t kWidenBlocks = 16;

int32_t RowDot(const uint8_t* row, const int16_t* q, int64_t blocks) {
  int32_t total = 0;
  for (int64_t j0 = 0; j0 < blocks; j0 += kWidenBlocks) {
    const int64_t j1 = std::min(blocks, j0 + kWidenBlocks);
    I16x8 acc[4] = {};
    for (int64_t j = j0; j < j1; ++j) {
      for (int u = 0; u < 4; ++u) {  // bytes 8u .. 8u+7 of the block
        const I16x8 w = __builtin_convertvector(Load<U8x8>(row + 32 * j + 8 * u), I16x8);
        const int16_t* qj = q + 128 * j + 8 * u;
        acc[u] += ((w >> 6) & 3) * Load<I16x8>(qj) + ((w >> 4) & 3) * Load<I16x8>(qj + 32) +
                  ((w >> 2) & 3) * Load<I16x8>(qj + 64) + (w & 3) * Load<I16x8>(qj + 96);
      }
    }
    total += Sum(acc[0]) + Sum(acc[1]) + Sum(acc[2]) + Sum(acc[3]);
  }
  return total;
}

void Gemv(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
          int64_t row_end) {
  if (w.group_scales != nullptr) {
    TernaryMatVec(w, q, act_scale, y, row_begin, row_end);
    return;
  }
  thread_local std::vector<int16_t> q16;
  q16.resize(static_cast<size_t>(w.n_in));
  Widen(q, w.n_in, q16.data());
  const int16_t* qw = q16.data();
  const int64_t row_bytes = w.n_in / 4, blocks = w.n_in / 128;
  for (int64_t r = row_begin; r < row_end; ++r) {
    y[r] = static_cast<float>(RowDot(w.codes + r * row_bytes, qw, blocks) - q_sum) * w.scale / act_scale;
  }
}

// Many tokens: each row unpacked once into int16 codes in activation order (2 x n_in bytes, in
// L1), then four tokens at a time over it (the codes loaded once for four). An int16 lane takes
// 64 steps (64 x 384 = 24576) before it is added into int32 lanes.
constexpr int64_t kGemmWiden = 64 * 8;

void Gemm(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t* q_sums, const float* act_scales,
          int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (w.group_scales != nullptr || n_tok == 1) {
    for (int64_t t = 0; t < n_tok; ++t)
      Gemv(w, q + t * q_stride, q_sums[t], act_scales[t], y + t * y_stride, row_begin, row_end);
    return;
  }
  const int64_t n_in = w.n_in, row_bytes = n_in / 4, blocks = n_in / 128;
  thread_local std::vector<int16_t> codes, q16;
  codes.resize(static_cast<size_t>(n_in));
  q16.resize(static_cast<size_t>(n_tok * n_in));
  for (int64_t t = 0; t < n_tok; ++t) Widen(q + t * q_stride, n_in, q16.data() + t * n_in);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.codes + r * row_bytes;
    for (int64_t j = 0; j < blocks; ++j) {
      int16_t* c = codes.data() + 128 * j;
      for (int u = 0; u < 4; ++u) {
        const I16x8 b = __builtin_convertvector(Load<U8x8>(row + 32 * j + 8 * u), I16x8);
        const I16x8 planes[4] = {(b >> 6) & 3, (b >> 4) & 3, (b >> 2) & 3, b & 3};
        for (int k = 0; k < 4; ++k) std::memcpy(c + 32 * k + 8 * u, &planes[k], sizeof(I16x8));
      }
    }
    const int16_t* c = codes.data();
    for (int64_t t = 0; t < n_tok; t += 4) {
      const int tc = static_cast<int>(std::min<int64_t>(4, n_tok - t));
      const int16_t* qt[4];
      for (int k = 0; k < 4; ++k) qt[k] = q16.data() + (t + std::min(k, tc - 1)) * n_in;
      int32_t s[4] = {};
      for (int64_t i0 = 0; i0 < n_in; i0 += kGemmWiden) {
        const int64_t i1 = std::min(n_in, i0 + kGemmWiden);
        I16x8 a[4] = {};
        for (int64_t i = i0; i < i1; i += 8) {
          const I16x8 cv = Load<I16x8>(c + i);
          a[0] += cv * Load<I16x8>(qt[0] + i);
          a[1] += cv * Load<I16x8>(qt[1] + i);
          a[2] += cv * Load<I16x8>(qt[2] + i);
          a[3] += cv * Load<I16x8>(qt[3] + i);
        }
        for (int k = 0; k < 4; ++k) s[k] += Sum(a[k]);
      }
      for (int k = 0; k < tc; ++k)
        y[(t + k) * y_stride + r] = static_cast<float>(s[k] - q_sums[t + k]) * w.scale / act_scales[t + k];
    }
  }
}

// ---- dense (LM head) ------------------------------------------------------------------------------
// F16 -> F32 without branches: the magnitude's bits shifted into a float and scaled by 2^112 give
// every finite half exactly, subnormals included; the all-ones exponent (inf/NaN) is set directly.
inline F32x4 HalfToFloat(U16x4 h) {
  const U32x4 x = __builtin_convertvector(h, U32x4);
  const U32x4 sign = (x & 0x8000u) << 16;
  const U32x4 mag = (x & 0x7fffu) << 13;
  F32x4 f;
  std::memcpy(&f, &mag, sizeof(f));
  f *= 0x1p112f;
  U32x4 bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits = (mag >= (0x7c00u << 13)) ? (mag | 0x7f800000u) : bits;
  bits |= sign;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Rows [row_begin, row_end) dotted with n_x vectors: 16 float lanes (four vectors) per (row,
// vector) pair, the lanes then summed in order, then a scalar tail: the same operations for every
// pair, so dense_gemm is bit-identical to dense_gemv. A row is converted once per kDenseChunk
// columns (into a buffer in L1) for all its vectors.
constexpr int64_t kDenseLanes = 16;
constexpr int64_t kDenseChunk = 512;
constexpr int64_t kDenseVectors = 8;

template <bool kF16>
void DenseRows(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys, int64_t row_begin,
               int64_t row_end) {
  const int64_t n = w.n_in, body = n / kDenseLanes * kDenseLanes;
  alignas(64) float row_f32[kDenseChunk];
  for (int64_t v0 = 0; v0 < n_x; v0 += kDenseVectors) {
    const int64_t nv = std::min(kDenseVectors, n_x - v0);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + r * w.row_bytes;
      F32x4 acc[kDenseVectors][4] = {};
      for (int64_t c0 = 0; c0 < body; c0 += kDenseChunk) {
        const int64_t len = std::min(kDenseChunk, body - c0);
        const float* wc;
        if constexpr (kF16) {
          for (int64_t i = 0; i < len; i += 4) {
            const F32x4 f = HalfToFloat(Load<U16x4>(row + 2 * (c0 + i)));
            std::memcpy(row_f32 + i, &f, sizeof(f));
          }
          wc = row_f32;
        } else {
          wc = reinterpret_cast<const float*>(row) + c0;
        }
        for (int64_t v = 0; v < nv; ++v) {
          const float* xv = x + (v0 + v) * x_stride + c0;
          F32x4* a = acc[v];
          for (int64_t i = 0; i < len; i += kDenseLanes) {
            for (int l = 0; l < 4; ++l) a[l] += Load<F32x4>(wc + i + 4 * l) * Load<F32x4>(xv + i + 4 * l);
          }
        }
      }
      for (int64_t v = 0; v < nv; ++v) {
        const float* xv = x + (v0 + v) * x_stride;
        float s = 0.0f;
        for (int l = 0; l < 4; ++l)
          for (int e = 0; e < 4; ++e) s += acc[v][l][e];
        for (int64_t c = body; c < n; ++c) {
          float wv;
          if constexpr (kF16) {
            uint16_t h;
            std::memcpy(&h, row + 2 * c, 2);
            wv = Fp16ToFp32(h);  // exact, as the vector conversion
          } else {
            std::memcpy(&wv, row + 4 * c, 4);
          }
          s += wv * xv[c];
        }
        ys[v0 + v][r] = s;
      }
    }
  }
}

void DenseGemm(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys, int64_t row_begin,
               int64_t row_end) {
  if (w.type == TensorType::kF16) return DenseRows<true>(w, x, x_stride, n_x, ys, row_begin, row_end);
  if (w.type == TensorType::kF32) return DenseRows<false>(w, x, x_stride, n_x, ys, row_begin, row_end);
  for (int64_t i = 0; i < n_x; ++i) DenseMatVec(w, x + i * x_stride, ys[i], row_begin, row_end);
}

void DenseGemv(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  DenseGemm(w, x, 0, 1, &y, row_begin, row_end);
}

}  // namespace

const CpuKernels& GenericKernels() {
  static const CpuKernels table = [] {
    CpuKernels k = RefKernels();  // quantisation, the 8-bit head and attention: the reference's loops
    k.path = CpuPath::kGeneric;
    k.ternary_gemv = Gemv;
    k.ternary_gemm = Gemm;
    k.dense_gemv = DenseGemv;
    k.dense_gemm = DenseGemm;
    return k;
  }();
  return table;
}

}  // namespace trinity::kernels
