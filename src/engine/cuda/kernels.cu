// CUDA kernels of the GPU forward pass. Each kernel states the CPU function it equals; see
// kernels.cuh for shapes. Plain first versions: correct, coalesced, no hand-tuned pipelines yet.
//
// Exactness. Where the CPU result is bit-exact (activation quantisation, ternary matmuls, RoPE,
// the residual adds) the kernels use the same float operations in the same order, with __fmul_rn
// / __fadd_rn / __fdiv_rn so nvcc cannot contract them into FMAs the CPU does not do. Sums that
// the CPU does serially (RMSNorm's double sum of squares, attention, the LM head) are tree sums
// here and agree to rounding.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/cuda/kernels.cuh"

namespace trinity::cuda::detail {

namespace {

constexpr int kWarp = 32;

void CheckLaunch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA launch of ") + what + ": " + cudaGetErrorString(e));
}

// An attribute of the current device (multiprocessors, opt-in shared memory per block, ...).
int DeviceAttribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&value, attribute, device);
  return value;
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max through shared memory (blockDim.x a multiple of 32, at most 1024). Every
// thread gets the result.
template <typename T>
__device__ T BlockSum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
  v = WarpSum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T total = lane < n_warps ? partial[lane] : T(0);
  return WarpSum(total);
}

__device__ float BlockMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = lane < n_warps ? partial[lane] : 0.0f;
  return WarpMax(total);
}

// ---- embedding ------------------------------------------------------------------------------

// x[r][i] = embd[tokens[r]][i]   (kernels::DenseRow; F16 -> F32 is exact)
template <bool kF16>
__global__ void EmbedKernel(const void* data, int64_t n_in, const int32_t* tokens, float* x) {
  const int64_t row = blockIdx.x;
  const int64_t tok = tokens[row];
  float* out = x + row * n_in;
  for (int64_t i = threadIdx.x; i < n_in; i += blockDim.x) {
    out[i] = kF16 ? __half2float(static_cast<const __half*>(data)[tok * n_in + i])
                  : static_cast<const float*>(data)[tok * n_in + i];
  }
}

// ---- RMSNorm (+ residual add / GLU) (+ int8 quantisation) -------------------------------------

// v[i] as NormInput says, without writing it back (the residual add and the GLU product use the
// CPU's float operations: x[i] += d[i]; act(g) * u).
template <NormInput kMode>
__device__ __forceinline__ float NormSource(const float* s, const float* d, int64_t width, int64_t i) {
  if constexpr (kMode == NormInput::kPlain) {
    return s[i];
  } else if constexpr (kMode == NormInput::kResidual) {
    return __fadd_rn(s[i], d[i]);
  } else {
    const float g = s[i], u = s[width + i];
    float a;
    if constexpr (kMode == NormInput::kRelu2Glu) {
      a = g > 0.0f ? __fmul_rn(g, g) : 0.0f;
    } else {
      a = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
    }
    return __fmul_rn(a, u);
  }
}

// NormSource, written back into src when the mode transforms it.
template <NormInput kMode>
__device__ __forceinline__ float NormValue(float* s, const float* d, int64_t width, int64_t i) {
  const float v = NormSource<kMode>(s, d, width, i);
  if constexpr (kMode != NormInput::kPlain) s[i] = v;
  return v;
}

// One block per row. Pass 1 forms v (writing it back when the mode transforms it) and the double
// sum of squares; pass 2 the normed values' max |n|; pass 3 quantises (or writes n as f32).
template <NormInput kMode, bool kQuant>
__global__ void __launch_bounds__(256) NormKernel(float* src, int64_t src_stride, const float* delta,
                                                  int64_t delta_stride, const float* weight, int64_t width, float eps,
                                                  int8_t* q, int64_t q_stride, float* act_scales, int32_t* q_sums,
                                                  float* out, int64_t out_stride) {
  const int64_t row = blockIdx.x;
  float* s = src + row * src_stride;
  const float* d = kMode == NormInput::kResidual ? delta + row * delta_stride : nullptr;
  double sum_sq = 0.0;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = NormValue<kMode>(s, d, width, i);
    sum_sq += static_cast<double>(v) * v;
  }
  sum_sq = BlockSum(sum_sq);
  // kernels::RmsNorm: inv = float(1 / sqrt(sum / n + eps)) in double.
  const float inv = static_cast<float>(1.0 / sqrt(sum_sq / static_cast<double>(width) + static_cast<double>(eps)));
  // Later passes read back only the elements this thread wrote (same i), so no barrier is needed.
  if constexpr (!kQuant) {
    float* o = out + row * out_stride;
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(s[i], inv), weight[i]);
  } else {
    float max_abs = 0.0f;
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
      max_abs = fmaxf(max_abs, fabsf(__fmul_rn(__fmul_rn(s[i], inv), weight[i])));
    }
    max_abs = BlockMax(max_abs);
    const float a = __fdiv_rn(127.0f, fmaxf(max_abs, 1e-5f));  // kernels::QuantizeActivations
    int8_t* qr = q + row * q_stride;
    int32_t sum = 0;
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
      const float n = __fmul_rn(__fmul_rn(s[i], inv), weight[i]);
      const float r = fminf(fmaxf(rintf(__fmul_rn(n, a)), -128.0f), 127.0f);  // rint: half to even
      const int32_t v = static_cast<int32_t>(r);
      qr[i] = static_cast<int8_t>(v);
      sum += v;
    }
    sum = BlockSum(sum);
    if (threadIdx.x == 0) {
      act_scales[row] = a;
      q_sums[row] = sum;
    }
  }
}

// The same function with the row in registers: kThreads threads, kPer values each (width <=
// kThreads * kPer). Every load is issued before the first use and the row is read once, where
// NormKernel's strided loops (a store between loads, so one load in flight) took 10-26 us per row
// on an H200 (ncu), the largest cost of a decode step. One block computes one row. write_back:
// store the transformed v into src (the residual stream's x += delta; GLU rows, as the CPU does).
template <NormInput kMode, bool kQuant, int kThreads, int kPer>
__device__ __forceinline__ void NormRow(float* s, const float* d, const float* weight, int64_t width, float eps,
                                        bool write_back, int8_t* qr, float* scale, int32_t* q_sum, float* o) {
  float v[kPer], wt[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t i = threadIdx.x + k * kThreads;
    v[k] = 0.0f, wt[k] = 0.0f;
    if (i < width) {
      v[k] = NormSource<kMode>(s, d, width, i);
      wt[k] = weight[i];
    }
  }
  double sum_sq = 0.0;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t i = threadIdx.x + k * kThreads;
    if (i < width) {
      if (kMode != NormInput::kPlain && write_back) s[i] = v[k];
      sum_sq += static_cast<double>(v[k]) * v[k];
    }
  }
  sum_sq = BlockSum(sum_sq);
  const float inv = static_cast<float>(1.0 / sqrt(sum_sq / static_cast<double>(width) + static_cast<double>(eps)));
  if constexpr (!kQuant) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = threadIdx.x + k * kThreads;
      if (i < width) o[i] = __fmul_rn(__fmul_rn(v[k], inv), wt[k]);
    }
  } else {
    float max_abs = 0.0f;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      v[k] = __fmul_rn(__fmul_rn(v[k], inv), wt[k]);  // zero past the width
      max_abs = fmaxf(max_abs, fabsf(v[k]));
    }
    max_abs = BlockMax(max_abs);
    const float a = __fdiv_rn(127.0f, fmaxf(max_abs, 1e-5f));  // kernels::QuantizeActivations
    int32_t sum = 0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = threadIdx.x + k * kThreads;
      if (i < width) {
        const int32_t r = static_cast<int32_t>(fminf(fmaxf(rintf(__fmul_rn(v[k], a)), -128.0f), 127.0f));
        qr[i] = static_cast<int8_t>(r);
        sum += r;
      }
    }
    sum = BlockSum(sum);
    if (threadIdx.x == 0) {
      *scale = a;
      *q_sum = sum;
    }
  }
}

constexpr int kNormThreads = 512, kNormPer = 16;

template <NormInput kMode, bool kQuant>
__global__ void __launch_bounds__(kNormThreads) NormRegKernel(float* src, int64_t src_stride, const float* delta,
                                                              int64_t delta_stride, const float* weight, int64_t width,
                                                              float eps, int8_t* q, int64_t q_stride,
                                                              float* act_scales, int32_t* q_sums, float* out,
                                                              int64_t out_stride) {
  const int64_t row = blockIdx.x;
  NormRow<kMode, kQuant, kNormThreads, kNormPer>(
      src + row * src_stride, kMode == NormInput::kResidual ? delta + row * delta_stride : nullptr, weight, width, eps,
      /*write_back=*/true, kQuant ? q + row * q_stride : nullptr, kQuant ? act_scales + row : nullptr,
      kQuant ? q_sums + row : nullptr, kQuant ? nullptr : out + row * out_stride);
}

// ---- ternary GEMV (decode): dp4a ---------------------------------------------------------------

// I2_S: a 32-byte block holds 128 values; byte b has value b in bits 7-6, b+32 in 5-4, b+64 in
// 3-2, b+96 in 1-0. So one 32-bit word of codes, shifted and masked per plane, is four
// consecutive values' codes as bytes, ready for dp4a against four consecutive int8 activations.
__device__ __forceinline__ int32_t PlaneDot(uint32_t word, const int4& q0, const int4& q1, const int4& q2,
                                            const int4& q3, int k) {
  const int qa = k == 0 ? q0.x : k == 1 ? q0.y : k == 2 ? q0.z : q0.w;
  const int qb = k == 0 ? q1.x : k == 1 ? q1.y : k == 2 ? q1.z : q1.w;
  const int qc = k == 0 ? q2.x : k == 1 ? q2.y : k == 2 ? q2.z : q2.w;
  const int qd = k == 0 ? q3.x : k == 1 ? q3.y : k == 2 ? q3.z : q3.w;
  int32_t acc = __dp4a(static_cast<int>((word >> 6) & 0x03030303u), qa, 0);
  acc = __dp4a(static_cast<int>((word >> 4) & 0x03030303u), qb, acc);
  acc = __dp4a(static_cast<int>((word >> 2) & 0x03030303u), qc, acc);
  return __dp4a(static_cast<int>(word & 0x03030303u), qd, acc);
}

__device__ __forceinline__ int32_t SumQ(const int4& q0, const int4& q1, const int4& q2, const int4& q3) {
  const int ones = 0x01010101;
  int32_t s = 0;
  s = __dp4a(ones, q0.x, s), s = __dp4a(ones, q0.y, s), s = __dp4a(ones, q0.z, s), s = __dp4a(ones, q0.w, s);
  s = __dp4a(ones, q1.x, s), s = __dp4a(ones, q1.y, s), s = __dp4a(ones, q1.z, s), s = __dp4a(ones, q1.w, s);
  s = __dp4a(ones, q2.x, s), s = __dp4a(ones, q2.y, s), s = __dp4a(ones, q2.z, s), s = __dp4a(ones, q2.w, s);
  s = __dp4a(ones, q3.x, s), s = __dp4a(ones, q3.y, s), s = __dp4a(ones, q3.z, s), s = __dp4a(ones, q3.w, s);
  return s;
}

// One warp per weight row, kNt tokens. Lane l takes the row's 16-byte chunks l, l+32, ...; chunk
// c is half of block c/2 (bytes 16*(c%2) ..), i.e. values 128*(c/2) + 16*(c%2) + [0,16) of each
// of the four planes. sum((c-1) q) = sum(c q) - sum(q): q_sums per token (per block with group
// scales, where each block is scaled on its own).
//   y[t][r] = float(sum_cq - q_sum[t]) * scale_r / act_scales[t]       (kernels::TernaryMatVec)
//   group scales: y = float(sum_j double(block_dot_j) * gs[r][j] / act_scales[t])
template <int kNt, bool kGroup>
__global__ void __launch_bounds__(256) TernaryGemvKernel(TernaryDev w, const int8_t* q, int64_t q_stride,
                                                         const float* act_scales, const int32_t* q_sums, float* y,
                                                         int64_t y_stride) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= w.n_out) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t row_bytes = w.n_in / 4;
  const int64_t n_chunks = row_bytes / 16;
  const uint4* codes = reinterpret_cast<const uint4*>(w.codes + row * row_bytes);
  int32_t acc[kNt];
  double dacc[kNt];
#pragma unroll
  for (int t = 0; t < kNt; ++t) acc[t] = 0, dacc[t] = 0.0;
  for (int64_t c = lane; c < n_chunks; c += kWarp) {
    const uint4 wv = codes[c];
    const int64_t base = (c / 2) * 128 + (c % 2) * 16;
    const float gs = kGroup ? w.group_scales[row * (w.n_in / 128) + c / 2] : 0.0f;
#pragma unroll
    for (int t = 0; t < kNt; ++t) {
      const int8_t* qt = q + t * q_stride + base;
      const int4 q0 = *reinterpret_cast<const int4*>(qt);
      const int4 q1 = *reinterpret_cast<const int4*>(qt + 32);
      const int4 q2 = *reinterpret_cast<const int4*>(qt + 64);
      const int4 q3 = *reinterpret_cast<const int4*>(qt + 96);
      int32_t dot = PlaneDot(wv.x, q0, q1, q2, q3, 0);
      dot += PlaneDot(wv.y, q0, q1, q2, q3, 1);
      dot += PlaneDot(wv.z, q0, q1, q2, q3, 2);
      dot += PlaneDot(wv.w, q0, q1, q2, q3, 3);
      if constexpr (kGroup) {
        dacc[t] += static_cast<double>(dot - SumQ(q0, q1, q2, q3)) * gs;
      } else {
        acc[t] += dot;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kNt; ++t) {
    if constexpr (kGroup) {
      const double total = WarpSum(dacc[t]);
      if (lane == 0) y[t * y_stride + row] = static_cast<float>(total / static_cast<double>(act_scales[t]));
    } else {
      const int32_t total = WarpSum(acc[t]);
      if (lane == 0) {
        y[t * y_stride + row] =
            __fdiv_rn(__fmul_rn(static_cast<float>(total - q_sums[t]), w.row_scales[row]), act_scales[t]);
      }
    }
  }
}

// ---- ternary GEMM (prefill, batched decode): int8 tensor cores --------------------------------

constexpr int kBm = 64, kBn = 64, kBk = 128;
constexpr int kLd = kBk + 16;  // bytes per shared row: +16 keeps the fragment loads conflict-free

__device__ __forceinline__ void MmaS8(int32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                      uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // built for sm_80 and newer only
#endif
}

// C[r][t] = sum_k Wv[r][k] * Q[t][k] with Wv = code - 1 unpacked into shared memory as int8, 64
// rows x 64 tokens per block, one 128-value I2_S block per k-step. 8 warps, each 32 rows x 16
// tokens = 2 x 2 m16n8k32 tiles. Fragment layout (PTX ISA, mma.m16n8k32 .s8): with g = lane/4,
// u = lane%4, A regs = W[g][4u..], W[g+8][4u..], W[g][16+4u..], W[g+8][16+4u..]; B regs =
// Q[n=g][k=4u..], Q[g][16+4u..]; C = (g, 2u), (g, 2u+1), (g+8, 2u), (g+8, 2u+1).
// Epilogue as TernaryGemvKernel; with group scales the int32 tile is scaled after every block.
// kRows = 32: the same with 32 weight rows per block, each warp 32 rows x 8 tokens, for matrices
// whose 64-row grid would leave SMs idle (the o and down matrices at 64 tokens: 40 blocks for 132
// SMs).
template <bool kGroup, int kRows>
__global__ void __launch_bounds__(256) TernaryGemmKernel(TernaryDev w, const int8_t* q, int64_t q_stride,
                                                         const float* act_scales, int64_t n_tok, float* y,
                                                         int64_t y_stride) {
  static_assert(kRows == 64 || kRows == 32, "64 or 32 rows per block");
  constexpr int kWarpsM = kRows / 32, kWarpsN = 8 / kWarpsM, kNi = kBn / kWarpsN / 8;
  __shared__ __align__(16) int8_t ws[kRows * kLd];
  __shared__ __align__(16) int8_t xs[kBn * kLd];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.y) * kBn;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int g = lane / 4, u = lane % 4;
  const int wm = warp % kWarpsM, wn = warp / kWarpsM;
  const int64_t row_bytes = w.n_in / 4, n_blocks = w.n_in / 128;

  int32_t acc[2][kNi][4];
  double dacc[2][kNi][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNi; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0, dacc[mi][ni][e] = 0.0;

  // Thread -> (weight row, 8-byte quarter of its 32-byte block) for the unpacking.
  const int ld_row = tid / 4, ld_part = tid % 4;
  const int64_t w_row = row0 + ld_row;
  // Software pipeline: block kb+1's codes and activations are loaded into registers while the
  // tensor cores work on block kb from shared memory (the first version loaded, waited and then
  // computed, so every k-step paid a full memory latency: ~1 us per I2_S block on an H200).
  uint2 wv;
  int4 xv[2];
  auto load = [&](int64_t kb) {
    wv = make_uint2(0x55555555u, 0x55555555u);  // code 1 = value 0 past the last row
    if (ld_row < kRows && w_row < w.n_out) {
      wv = *reinterpret_cast<const uint2*>(w.codes + w_row * row_bytes + kb * 32 + ld_part * 8);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int idx = tid + i * 256;
      const int tk = idx / 8, seg = idx % 8;
      xv[i] = make_int4(0, 0, 0, 0);
      if (tok0 + tk < n_tok) xv[i] = *reinterpret_cast<const int4*>(q + (tok0 + tk) * q_stride + kb * 128 + seg * 16);
    }
  };
  load(0);
  for (int64_t kb = 0; kb < n_blocks; ++kb) {
    if (ld_row < kRows) {
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const int shift = 6 - 2 * p;
        uint2 v;
        v.x = __vsub4((wv.x >> shift) & 0x03030303u, 0x01010101u);
        v.y = __vsub4((wv.y >> shift) & 0x03030303u, 0x01010101u);
        *reinterpret_cast<uint2*>(ws + ld_row * kLd + p * 32 + ld_part * 8) = v;
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int idx = tid + i * 256;
      const int tk = idx / 8, seg = idx % 8;
      *reinterpret_cast<int4*>(xs + tk * kLd + seg * 16) = xv[i];
    }
    __syncthreads();
    if (kb + 1 < n_blocks) load(kb + 1);
#pragma unroll
    for (int ks = 0; ks < kBk / 32; ++ks) {
      const int kk = ks * 32 + 4 * u;
      uint32_t a[2][4], b[kNi][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const int8_t* base = ws + (wm * 32 + mi * 16 + g) * kLd + kk;
        a[mi][0] = *reinterpret_cast<const uint32_t*>(base);
        a[mi][1] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd);
        a[mi][2] = *reinterpret_cast<const uint32_t*>(base + 16);
        a[mi][3] = *reinterpret_cast<const uint32_t*>(base + 8 * kLd + 16);
      }
#pragma unroll
      for (int ni = 0; ni < kNi; ++ni) {
        const int8_t* base = xs + (wn * kNi * 8 + ni * 8 + g) * kLd + kk;
        b[ni][0] = *reinterpret_cast<const uint32_t*>(base);
        b[ni][1] = *reinterpret_cast<const uint32_t*>(base + 16);
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < kNi; ++ni) MmaS8(acc[mi][ni], a[mi][0], a[mi][1], a[mi][2], a[mi][3], b[ni][0], b[ni][1]);
    }
    __syncthreads();
    if constexpr (kGroup) {
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < kNi; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t r = row0 + wm * 32 + mi * 16 + g + (e / 2) * 8;
            if (r < w.n_out) dacc[mi][ni][e] += static_cast<double>(acc[mi][ni][e]) * w.group_scales[r * n_blocks + kb];
            acc[mi][ni][e] = 0;
          }
    }
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNi; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + wm * 32 + mi * 16 + g + (e / 2) * 8;
        const int64_t t = tok0 + wn * kNi * 8 + ni * 8 + 2 * u + (e % 2);
        if (r >= w.n_out || t >= n_tok) continue;
        if constexpr (kGroup) {
          y[t * y_stride + r] = static_cast<float>(dacc[mi][ni][e] / static_cast<double>(act_scales[t]));
        } else {
          y[t * y_stride + r] =
              __fdiv_rn(__fmul_rn(static_cast<float>(acc[mi][ni][e]), w.row_scales[r]), act_scales[t]);
        }
      }
}

// ---- RoPE + KV-cache write -------------------------------------------------------------------

// One block per row. Pairs (i, i + n_rot/2) of each head rotate by the table's angle:
//   a' = a*cos - b*sin, b' = a*sin + b*cos   (kernels::RopeNeox; dims >= n_rot unchanged)
__global__ void RopeKvKernel(float* qkv, int64_t qkv_stride, const int32_t* pos, const int32_t* seq,
                             const float* rope_cs, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                             float* k_cache, float* v_cache, int64_t seq_stride) {
  const int64_t row = blockIdx.x;
  const int64_t p = pos[row];
  const int64_t half = n_rot / 2;
  const int64_t n_embd = n_head * head_dim, n_kv = n_head_kv * head_dim;
  const float* cs = rope_cs + p * n_rot;
  float* qr = qkv + row * qkv_stride;
  for (int64_t idx = threadIdx.x; idx < n_head * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    float* head = qr + h * head_dim;
    const float a = head[i], b = head[i + half], c = cs[2 * i], s = cs[2 * i + 1];
    head[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    head[i + half] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
  }
  const float* kr = qr + n_embd;
  const float* vr = qr + n_embd + n_kv;
  float* kc = k_cache + seq[row] * seq_stride + p * n_kv;
  float* vc = v_cache + seq[row] * seq_stride + p * n_kv;
  for (int64_t idx = threadIdx.x; idx < n_kv; idx += blockDim.x) {
    const int64_t d = idx % head_dim;
    const float* head = kr + (idx - d);
    float v = head[d];
    if (d < half) {
      v = __fsub_rn(__fmul_rn(head[d], cs[2 * d]), __fmul_rn(head[d + half], cs[2 * d + 1]));
    } else if (d < n_rot) {
      const int64_t i = d - half;
      v = __fadd_rn(__fmul_rn(head[i], cs[2 * i + 1]), __fmul_rn(head[d], cs[2 * i]));
    }
    kc[idx] = v;
    vc[idx] = vr[idx];
  }
}

// ---- attention: flash-decoding split + combine -------------------------------------------------

// Grid (n_head_kv, n_splits, rows); one warp per query head of the KV head's group; lane l holds
// dims [l*kE, l*kE + kE). Split s covers positions [s*len, (s+1)*len) of 0 .. pos[r], len =
// ceil(n_kv / n_splits), so one launch shape serves every position (CUDA graphs). Online softmax:
//   m' = max(m, s_p), l' = l e^(m-m') + e^(s_p-m'), o' = o e^(m-m') + e^(s_p-m') v_p
template <int kE>
__global__ void AttentionSplitKernel(const float* q, int64_t q_stride, const int32_t* pos, const int32_t* seq,
                                     const float* k_cache, const float* v_cache, int64_t seq_stride, int64_t n_head,
                                     int64_t n_head_kv, int n_splits, float* part_o, float* part_ml) {
  constexpr int64_t kD = kE * kWarp;
  const int64_t row = blockIdx.z, kvh = blockIdx.x;
  const int split = blockIdx.y;
  const int lane = threadIdx.x % kWarp;
  const int64_t group = n_head / n_head_kv;
  const int64_t h = kvh * group + threadIdx.x / kWarp;
  const int64_t n_kv_pos = static_cast<int64_t>(pos[row]) + 1;
  const int64_t len = (n_kv_pos + n_splits - 1) / n_splits;
  const int64_t p0 = split * len, p1 = min(n_kv_pos, p0 + len);
  const int64_t kv_stride = n_head_kv * kD;
  const float scale = 1.0f / sqrtf(static_cast<float>(kD));

  float qv[kE], o[kE];
  const float* qh = q + row * q_stride + h * kD + lane * kE;
#pragma unroll
  for (int e = 0; e < kE; ++e) qv[e] = qh[e], o[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const float* kb = k_cache + seq[row] * seq_stride + kvh * kD + lane * kE;
  const float* vb = v_cache + seq[row] * seq_stride + kvh * kD + lane * kE;
  for (int64_t p = p0; p < p1; ++p) {
    const float* kp = kb + p * kv_stride;
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < kE; ++e) dot += qv[e] * kp[e];
    dot = WarpSum(dot);
    const float sc = dot * scale;
    const float m_new = fmaxf(m, sc);
    const float corr = expf(m - m_new);  // 0 on the first position (m = -inf)
    const float pe = expf(sc - m_new);
    l = l * corr + pe;
    const float* vp = vb + p * kv_stride;
#pragma unroll
    for (int e = 0; e < kE; ++e) o[e] = o[e] * corr + pe * vp[e];
    m = m_new;
  }
  const int64_t slot = (row * n_head + h) * n_splits + split;
#pragma unroll
  for (int e = 0; e < kE; ++e) part_o[slot * kD + lane * kE + e] = o[e];
  if (lane == 0) {
    part_ml[slot * 2] = m;
    part_ml[slot * 2 + 1] = l;
  }
}

// Prefill attention: the rows are one sequence at ascending positions (a prompt chunk), so a tile
// of kQ query rows shares every key it reads. Grid (n_head_kv, ceil(rows / kQ)), one warp per query
// head of the KV head's group. Keys 0 .. pos of the tile's last row pass through shared memory 32
// at a time, read once for the group's heads and the tile's rows (the split kernel reads them once
// per row and head). Per key tile:
//   scores: lane j takes key j, s[r] = (q_r . k_j) * scale, -inf past pos[r]
//   online softmax per row across the warp (as the split kernel), p[r][j] through shared memory
//   o[r] (the lane's kE dims) = o[r] * corr + sum_j p[r][j] v_j
template <int kE, int kQ>
__global__ void AttentionPrefillKernel(const float* q, int64_t q_stride, int64_t rows, const int32_t* pos,
                                       const int32_t* seq, const float* k_cache, const float* v_cache,
                                       int64_t seq_stride, int64_t n_head_kv, float* out, int64_t out_stride) {
  constexpr int kD = kE * kWarp;
  constexpr int kKs = kD + 4;  // K row stride: lane j's float4 reads fall in distinct banks per phase
  extern __shared__ __align__(16) float smem[];
  const int n_warps = static_cast<int>(blockDim.x) / kWarp;  // the group
  float* ks = smem;                    // [32][kKs]
  float* vs = ks + kWarp * kKs;        // [32][kD]
  float* qs = vs + kWarp * kD;         // [group][kQ][kD]
  float* ps = qs + n_warps * kQ * kD;  // [group][kQ][32]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t kvh = blockIdx.x;
  const int64_t h = kvh * n_warps + warp;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kQ;
  const int nq = static_cast<int>(min(static_cast<int64_t>(kQ), rows - r0));
  const int64_t kv_stride = n_head_kv * kD;
  const float* kbase = k_cache + seq[r0] * seq_stride + kvh * kD;
  const float* vbase = v_cache + seq[r0] * seq_stride + kvh * kD;
  const float scale = 1.0f / sqrtf(static_cast<float>(kD));
  const int64_t p_last = pos[r0 + nq - 1];

  float* qw = qs + warp * kQ * kD;
  for (int i = lane; i < kQ * kD; i += kWarp) {
    const int r = i / kD, d = i % kD;
    qw[i] = r < nq ? q[(r0 + r) * q_stride + h * kD + d] : 0.0f;
  }
  int32_t pr[kQ];
  float o[kQ][kE], m[kQ], l[kQ];
#pragma unroll
  for (int r = 0; r < kQ; ++r) {
    pr[r] = r < nq ? pos[r0 + r] : -1;
    m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < kE; ++e) o[r][e] = 0.0f;
  }
  float* pw = ps + warp * kQ * kWarp;
  for (int64_t t0 = 0; t0 <= p_last; t0 += kWarp) {
    const int nk = static_cast<int>(min(static_cast<int64_t>(kWarp), p_last + 1 - t0));
    __syncthreads();  // the previous tile is consumed (and, the first time, qs is written)
    for (int i = threadIdx.x; i < kWarp * kD / 4; i += blockDim.x) {
      const int j = i / (kD / 4), d4 = (i % (kD / 4)) * 4;
      float4 kv = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kv;
      if (j < nk) {
        kv = *reinterpret_cast<const float4*>(kbase + (t0 + j) * kv_stride + d4);
        vv = *reinterpret_cast<const float4*>(vbase + (t0 + j) * kv_stride + d4);
      }
      *reinterpret_cast<float4*>(ks + j * kKs + d4) = kv;
      *reinterpret_cast<float4*>(vs + j * kD + d4) = vv;
    }
    __syncthreads();
    float s[kQ];
#pragma unroll
    for (int r = 0; r < kQ; ++r) s[r] = 0.0f;
    const float* kj = ks + lane * kKs;
#pragma unroll 2
    for (int d = 0; d < kD; d += 4) {
      const float4 k4 = *reinterpret_cast<const float4*>(kj + d);
#pragma unroll
      for (int r = 0; r < kQ; ++r) {
        const float4 q4 = *reinterpret_cast<const float4*>(qw + r * kD + d);
        s[r] += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
      }
    }
    const int64_t key = t0 + lane;
#pragma unroll
    for (int r = 0; r < kQ; ++r) {
      const bool valid = key <= pr[r];  // rows past nq have pr = -1
      const float sc = valid ? s[r] * scale : -INFINITY;
      const float m_new = fmaxf(m[r], WarpMax(sc));
      const float corr = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);  // 0 on the first key (m = -inf)
      const float p = valid ? expf(sc - m_new) : 0.0f;
      l[r] = l[r] * corr + WarpSum(p);
      m[r] = m_new;
#pragma unroll
      for (int e = 0; e < kE; ++e) o[r][e] *= corr;
      pw[r * kWarp + lane] = p;
    }
    __syncwarp();
    for (int j = 0; j < nk; ++j) {
      float v[kE];
      const float* vj = vs + j * kD + lane * kE;
      if constexpr (kE % 4 == 0) {  // 16-byte loads: conflict-free, as scalar loads of 4 dims are not
#pragma unroll
        for (int e = 0; e < kE; e += 4) {
          const float4 f = *reinterpret_cast<const float4*>(vj + e);
          v[e] = f.x, v[e + 1] = f.y, v[e + 2] = f.z, v[e + 3] = f.w;
        }
      } else {
#pragma unroll
        for (int e = 0; e < kE; ++e) v[e] = vj[e];
      }
#pragma unroll
      for (int r = 0; r < kQ; ++r) {
        const float p = pw[r * kWarp + j];
#pragma unroll
        for (int e = 0; e < kE; ++e) o[r][e] += p * v[e];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kQ; ++r) {
    if (r >= nq) break;
    float* orow = out + (r0 + r) * out_stride + h * kD + lane * kE;
#pragma unroll
    for (int e = 0; e < kE; ++e) orow[e] = o[r][e] / l[r];
  }
}

// Grid (n_head, rows), head_dim threads: out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M).
__global__ void AttentionCombineKernel(const float* part_o, const float* part_ml, int64_t n_head, int64_t head_dim,
                                       int n_splits, float* out, int64_t out_stride) {
  const int64_t h = blockIdx.x, row = blockIdx.y;
  const int64_t base = (row * n_head + h) * n_splits;
  float m_max = -INFINITY;
  for (int s = 0; s < n_splits; ++s) {
    if (part_ml[(base + s) * 2 + 1] > 0.0f) m_max = fmaxf(m_max, part_ml[(base + s) * 2]);
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
      const float l = part_ml[(base + s) * 2 + 1];
      if (l <= 0.0f) continue;
      const float f = expf(part_ml[(base + s) * 2] - m_max);
      num += part_o[(base + s) * head_dim + d] * f;
      den += l * f;
    }
    out[row * out_stride + h * head_dim + d] = num / den;
  }
}

// ---- LM head (dense GEMV, f32 accumulation) + argmax -------------------------------------------

constexpr int kLmRowsPerBlock = 256;  // 8 warps x 32 rows: the x tile is loaded once per block
constexpr int kLmTokens = 16;         // most tokens per pass (x tile tokens * n_in floats in shared memory)
int g_lm_tokens = 8;                  // tokens per pass the device's shared memory allows (PrepareLmHead)

// logits[t][v] = sum_c W[v][c] x[t][c]  (kernels::DenseMatVec), kNt <= kLmTokens tokens per pass.
// Each lane reads 16-byte chunks of the row (8 halves / 4 floats), coalesced across the warp.
template <bool kF16, int kNt>
__global__ void __launch_bounds__(256) LmHeadKernel(const void* data, int64_t n_in, int64_t n_rows, const float* x,
                                                    int64_t x_stride, float* logits, int64_t logits_stride) {
  extern __shared__ float xs[];  // [kNt][n_in]
  for (int64_t i = threadIdx.x; i < kNt * n_in; i += blockDim.x) xs[i] = x[(i / n_in) * x_stride + i % n_in];
  __syncthreads();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  constexpr int kPer = kF16 ? 8 : 4;  // values per 16-byte chunk
  const int64_t n_chunks = n_in / kPer;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kLmRowsPerBlock;
  for (int64_t r = first + warp; r < min(n_rows, first + kLmRowsPerBlock); r += blockDim.x / kWarp) {
    const uint4* row = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(data) + r * n_in * (kF16 ? 2 : 4));
    float acc[kNt];
#pragma unroll
    for (int t = 0; t < kNt; ++t) acc[t] = 0.0f;
#pragma unroll 2
    for (int64_t c = lane; c < n_chunks; c += kWarp) {
      const uint4 raw = row[c];
      float wv[kPer];
      if constexpr (kF16) {
        const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(h2[j]);
          wv[2 * j] = f.x, wv[2 * j + 1] = f.y;
        }
      } else {
        const float* f = reinterpret_cast<const float*>(&raw);
#pragma unroll
        for (int j = 0; j < 4; ++j) wv[j] = f[j];
      }
#pragma unroll
      for (int t = 0; t < kNt; ++t) {
        const float* xt = xs + t * n_in + c * kPer;
#pragma unroll
        for (int j = 0; j < kPer; ++j) acc[t] += wv[j] * xt[j];
      }
    }
#pragma unroll
    for (int t = 0; t < kNt; ++t) {
      const float total = WarpSum(acc[t]);
      if (lane == 0) logits[t * logits_stride + r] = total;
    }
  }
}

// The F16 LM head for 8 .. 64 tokens on the tensor cores (mma.sync m16n8k16, f32 accumulation).
// x stays f32-accurate: each value is split into two halves, hi = f16(x) and lo = f16(x - hi), and
// both are multiplied (W is f16 already, so W*hi + W*lo carries x to ~22 bits; the products are
// exact in f32). The f32 kernel above keeps x in shared memory and is bound by its loads there
// with more than a few tokens (16 ms for 64 tokens x 128256 rows on an H200, 24x the time of
// reading W once). Each warp takes 32 rows (two m16 tiles) and 8*kNt tokens (kNt n8 tiles);
// fragments (PTX ISA, m16n8k16 .f16, g = lane/4, u = lane%4): A = W[g][2u..], W[g+8][2u..],
// W[g][8+2u..], W[g+8][8+2u..]; B = x[t=g][2u..], x[g][8+2u..]; C = (g, 2u), (g, 2u+1), (g+8, 2u),
// (g+8, 2u+1). The k order inside a step is free (a sum): lane u feeds values 4u..4u+3 of its
// 16-byte loads where the layout says k = 2u, 2u+1, 8+2u, 9+2u, for A and B alike, so each lane
// reads W and x in 16-byte pieces (32 values of k per loop). Rows and tokens past the ends are read
// clamped and not stored.
constexpr int kLmMmaWarps = 8;

__device__ __forceinline__ void MmaF16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

__device__ __forceinline__ uint32_t HalvesBits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

template <int kNt>
__global__ void __launch_bounds__(kLmMmaWarps * kWarp) LmHeadMmaKernel(const __half* w, int64_t n_in, int64_t n_rows,
                                                                       const float* x, int64_t x_stride, int64_t n_tok,
                                                                       float* logits, int64_t logits_stride) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, g = lane / 4, u = lane % 4;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kLmMmaWarps + warp) * 32;
  if (row0 >= n_rows) return;
  const __half* wr[4];  // rows g, g+8 of m-tile 0, then of m-tile 1
#pragma unroll
  for (int i = 0; i < 4; ++i) wr[i] = w + min(row0 + (i / 2) * 16 + (i % 2) * 8 + g, n_rows - 1) * n_in + 8 * u;
  const float* xr[kNt];
#pragma unroll
  for (int n = 0; n < kNt; ++n) xr[n] = x + min(static_cast<int64_t>(n * 8 + g), n_tok - 1) * x_stride + 8 * u;
  float acc[2][kNt][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int n = 0; n < kNt; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][n][e] = 0.0f;
  for (int64_t k0 = 0; k0 < n_in; k0 += 32) {
    uint4 wv[4];  // 8 halves of each of the lane's 4 rows: k0 + 8u .. 8u+7
#pragma unroll
    for (int i = 0; i < 4; ++i) wv[i] = *reinterpret_cast<const uint4*>(wr[i] + k0);
#pragma unroll
    for (int n = 0; n < kNt; ++n) {
      const float4 f0 = *reinterpret_cast<const float4*>(xr[n] + k0);
      const float4 f1 = *reinterpret_cast<const float4*>(xr[n] + k0 + 4);
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // the two k16 steps: values 8u..8u+3, then 8u+4..8u+7
        const float4 f = half == 0 ? f0 : f1;
        const __half2 h0 = __floats2half2_rn(f.x, f.y), h1 = __floats2half2_rn(f.z, f.w);
        const __half2 l0 = __floats2half2_rn(f.x - __low2float(h0), f.y - __high2float(h0));
        const __half2 l1 = __floats2half2_rn(f.z - __low2float(h1), f.w - __high2float(h1));
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          const uint4& r0 = wv[2 * mi];
          const uint4& r8 = wv[2 * mi + 1];
          const uint32_t a[4] = {half == 0 ? r0.x : r0.z, half == 0 ? r8.x : r8.z, half == 0 ? r0.y : r0.w,
                                 half == 0 ? r8.y : r8.w};
          MmaF16(acc[mi][n], a, HalvesBits(h0), HalvesBits(h1));
          MmaF16(acc[mi][n], a, HalvesBits(l0), HalvesBits(l1));
        }
      }
    }
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int n = 0; n < kNt; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + mi * 16 + g + (e / 2) * 8;
        const int64_t t = n * 8 + 2 * u + (e % 2);
        if (r < n_rows && t < n_tok) logits[t * logits_stride + r] = acc[mi][n][e];
      }
}

// Per row, lowest id of the largest value, NaN skipped (0 when all are NaN). One block of
// kArgmaxThreads per row: each thread scans its 16-byte chunks (ascending, strict > keeps its lowest
// id), four loads in flight, then a tree over (value, id) pairs. The plain loop of the first version
// (256 threads, one dependent 4-byte load at a time) took ~200 us per row on an H200.
constexpr int kArgmaxThreads = 1024;

__device__ __forceinline__ void ArgmaxTake(float v, int64_t i, float& best, int64_t& best_i) {
  if (isnan(v)) return;
  if (best_i < 0 || v > best || (v == best && i < best_i)) best = v, best_i = i;
}

__global__ void __launch_bounds__(kArgmaxThreads) ArgmaxKernel(const float* logits, int64_t stride, int64_t n_vocab,
                                                               int32_t* ids) {
  const float* row = logits + blockIdx.x * stride;
  float best = 0.0f;
  int64_t best_i = -1;
  int64_t tail = 0;
  if ((reinterpret_cast<uintptr_t>(row) & 15) == 0) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const int64_t n4 = n_vocab / 4;
    tail = n4 * 4;
    constexpr int kInFlight = 4;
    for (int64_t c = threadIdx.x; c < n4; c += kInFlight * kArgmaxThreads) {
      float4 f[kInFlight];
#pragma unroll
      for (int k = 0; k < kInFlight; ++k) {
        const int64_t ck = c + k * kArgmaxThreads;
        f[k] = ck < n4 ? row4[ck] : make_float4(NAN, NAN, NAN, NAN);
      }
#pragma unroll
      for (int k = 0; k < kInFlight; ++k) {
        const int64_t i = (c + k * kArgmaxThreads) * 4;
        ArgmaxTake(f[k].x, i, best, best_i);
        ArgmaxTake(f[k].y, i + 1, best, best_i);
        ArgmaxTake(f[k].z, i + 2, best, best_i);
        ArgmaxTake(f[k].w, i + 3, best, best_i);
      }
    }
  }
  for (int64_t i = tail + threadIdx.x; i < n_vocab; i += kArgmaxThreads) ArgmaxTake(row[i], i, best, best_i);
  // Warp tree, then the warps' winners through shared memory.
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (i >= 0 && (best_i < 0 || v > best || (v == best && i < best_i))) best = v, best_i = i;
  }
  __shared__ float vals[kArgmaxThreads / kWarp];
  __shared__ int64_t idxs[kArgmaxThreads / kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) vals[warp] = best, idxs[warp] = best_i;
  __syncthreads();
  if (warp == 0) {
    best = vals[lane], best_i = idxs[lane];  // kArgmaxThreads / kWarp == 32 warps
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t i = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (i >= 0 && (best_i < 0 || v > best || (v == best && i < best_i))) best = v, best_i = i;
    }
    if (lane == 0) ids[blockIdx.x] = static_cast<int32_t>(best_i < 0 ? 0 : best_i);
  }
}

bool NoMma() {
  static const bool no_mma = [] {
    const char* v = std::getenv("TRINITY_CUDA_NO_MMA");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return no_mma;
}

template <int kNt>
void LaunchGemv(const TernaryDev& w, const int8_t* q, int64_t q_stride, const float* act_scales,
                const int32_t* q_sums, float* y, int64_t y_stride, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((w.n_out + 7) / 8);
  if (w.group_scales) {
    TernaryGemvKernel<kNt, true><<<blocks, 256, 0, stream>>>(w, q, q_stride, act_scales, q_sums, y, y_stride);
  } else {
    TernaryGemvKernel<kNt, false><<<blocks, 256, 0, stream>>>(w, q, q_stride, act_scales, q_sums, y, y_stride);
  }
}

template <bool kF16, int kNt>
void LaunchLmHeadT(const DenseDev& w, const float* x, int64_t x_stride, float* logits, int64_t logits_stride,
                   cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((w.n_rows + kLmRowsPerBlock - 1) / kLmRowsPerBlock);
  const size_t smem = static_cast<size_t>(kNt) * w.n_in * sizeof(float);
  LmHeadKernel<kF16, kNt><<<blocks, 256, smem, stream>>>(w.data, w.n_in, w.n_rows, x, x_stride, logits, logits_stride);
}

template <bool kF16>
void SetLmHeadSmem(int bytes) {
  cudaFuncSetAttribute(LmHeadKernel<kF16, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  cudaFuncSetAttribute(LmHeadKernel<kF16, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  cudaFuncSetAttribute(LmHeadKernel<kF16, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  cudaFuncSetAttribute(LmHeadKernel<kF16, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  cudaFuncSetAttribute(LmHeadKernel<kF16, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

}  // namespace

void LaunchEmbed(const DenseDev& embd, const int32_t* tokens, int64_t rows, float* x, cudaStream_t stream) {
  if (rows <= 0) return;
  if (embd.f16) {
    EmbedKernel<true><<<static_cast<unsigned>(rows), 256, 0, stream>>>(embd.data, embd.n_in, tokens, x);
  } else {
    EmbedKernel<false><<<static_cast<unsigned>(rows), 256, 0, stream>>>(embd.data, embd.n_in, tokens, x);
  }
  CheckLaunch("embed");
}

void LaunchNormQuant(NormInput mode, float* src, int64_t src_stride, const float* delta, int64_t delta_stride,
                     const float* weight, int64_t width, float eps, int64_t rows, int8_t* q, int64_t q_stride,
                     float* act_scales, int32_t* q_sums, cudaStream_t stream) {
  if (rows <= 0) return;
  const unsigned grid = static_cast<unsigned>(rows);
  const bool in_registers = width <= kNormThreads * kNormPer;
#define TRINITY_NORM(M)                                                                                             \
  if (in_registers) {                                                                                               \
    NormRegKernel<M, true><<<grid, kNormThreads, 0, stream>>>(src, src_stride, delta, delta_stride, weight, width, \
                                                              eps, q, q_stride, act_scales, q_sums, nullptr, 0);   \
  } else {                                                                                                          \
    NormKernel<M, true><<<grid, 256, 0, stream>>>(src, src_stride, delta, delta_stride, weight, width, eps, q,      \
                                                  q_stride, act_scales, q_sums, nullptr, 0);                       \
  }
  switch (mode) {
    case NormInput::kPlain: TRINITY_NORM(NormInput::kPlain); break;
    case NormInput::kResidual: TRINITY_NORM(NormInput::kResidual); break;
    case NormInput::kRelu2Glu: TRINITY_NORM(NormInput::kRelu2Glu); break;
    case NormInput::kSiluGlu: TRINITY_NORM(NormInput::kSiluGlu); break;
  }
#undef TRINITY_NORM
  CheckLaunch("norm_quant");
}

void LaunchNorm(NormInput mode, float* src, int64_t src_stride, const float* delta, int64_t delta_stride,
                const float* weight, int64_t width, float eps, int64_t rows, float* out, int64_t out_stride,
                cudaStream_t stream) {
  if (rows <= 0) return;
  const unsigned grid = static_cast<unsigned>(rows);
  if (width <= kNormThreads * kNormPer) {
    if (mode == NormInput::kResidual) {
      NormRegKernel<NormInput::kResidual, false><<<grid, kNormThreads, 0, stream>>>(
          src, src_stride, delta, delta_stride, weight, width, eps, nullptr, 0, nullptr, nullptr, out, out_stride);
    } else {
      NormRegKernel<NormInput::kPlain, false><<<grid, kNormThreads, 0, stream>>>(
          src, src_stride, delta, delta_stride, weight, width, eps, nullptr, 0, nullptr, nullptr, out, out_stride);
    }
  } else if (mode == NormInput::kResidual) {
    NormKernel<NormInput::kResidual, false><<<grid, 256, 0, stream>>>(src, src_stride, delta, delta_stride, weight,
                                                                      width, eps, nullptr, 0, nullptr, nullptr, out,
                                                                      out_stride);
  } else {
    NormKernel<NormInput::kPlain, false><<<grid, 256, 0, stream>>>(src, src_stride, delta, delta_stride, weight, width,
                                                                   eps, nullptr, 0, nullptr, nullptr, out, out_stride);
  }
  CheckLaunch("norm");
}

void LaunchTernaryMatmul(const TernaryDev& w, const int8_t* q, int64_t q_stride, const float* act_scales,
                         const int32_t* q_sums, int64_t rows, float* y, int64_t y_stride, MatmulKind kind,
                         cudaStream_t stream) {
  if (rows <= 0) return;
  if (kind == MatmulKind::kAuto) kind = rows <= 8 || NoMma() ? MatmulKind::kGemv : MatmulKind::kGemm;
  if (kind == MatmulKind::kGemm) {
    // Of the first device used (one device per process in practice).
    static const int sms = DeviceAttribute(cudaDevAttrMultiProcessorCount);
    const unsigned col_tiles = static_cast<unsigned>((rows + kBn - 1) / kBn);
    const bool small = static_cast<int64_t>((w.n_out + kBm - 1) / kBm) * col_tiles < sms;
    const int64_t bm = small ? 32 : kBm;
    const dim3 grid(static_cast<unsigned>((w.n_out + bm - 1) / bm), col_tiles);
#define TRINITY_GEMM(G, R) \
  TernaryGemmKernel<G, R><<<grid, 256, 0, stream>>>(w, q, q_stride, act_scales, rows, y, y_stride)
    if (w.group_scales && small) {
      TRINITY_GEMM(true, 32);
    } else if (w.group_scales) {
      TRINITY_GEMM(true, kBm);
    } else if (small) {
      TRINITY_GEMM(false, 32);
    } else {
      TRINITY_GEMM(false, kBm);
    }
#undef TRINITY_GEMM
    CheckLaunch("ternary_gemm");
    return;
  }
  for (int64_t t = 0; t < rows;) {  // passes of 8, then the rest in one pass of 4, 2 or 1
    const int64_t left = rows - t;
    const int nt = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    const int8_t* qt = q + t * q_stride;
    float* yt = y + t * y_stride;
    switch (nt) {
      case 8: LaunchGemv<8>(w, qt, q_stride, act_scales + t, q_sums + t, yt, y_stride, stream); break;
      case 4: LaunchGemv<4>(w, qt, q_stride, act_scales + t, q_sums + t, yt, y_stride, stream); break;
      case 2: LaunchGemv<2>(w, qt, q_stride, act_scales + t, q_sums + t, yt, y_stride, stream); break;
      default: LaunchGemv<1>(w, qt, q_stride, act_scales + t, q_sums + t, yt, y_stride, stream); break;
    }
    t += nt;
  }
  CheckLaunch("ternary_gemv");
}

void LaunchRopeKv(float* qkv, int64_t qkv_stride, int64_t rows, const int32_t* pos, const int32_t* seq,
                  const float* rope_cs, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                  float* k_cache, float* v_cache, int64_t seq_stride, cudaStream_t stream) {
  if (rows <= 0) return;
  // One thread per rotated pair of q (up to 1024): the loops' in-place stores keep one load in
  // flight per thread, so fewer threads meant several dependent round trips (7.6 us per row).
  const int64_t pairs = std::max(n_head * (n_rot / 2), n_head_kv * head_dim);
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>(1024, (pairs + kWarp - 1) / kWarp * kWarp));
  RopeKvKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(qkv, qkv_stride, pos, seq, rope_cs, n_head,
                                                                    n_head_kv, head_dim, n_rot, k_cache, v_cache,
                                                                    seq_stride);
  CheckLaunch("rope_kv");
}

void LaunchAttention(const float* q, int64_t q_stride, int64_t rows, const int32_t* pos, const int32_t* seq,
                     const float* k_cache, const float* v_cache, int64_t seq_stride, int64_t n_head,
                     int64_t n_head_kv, int64_t head_dim, int n_splits, float* part_o, float* part_ml, float* out,
                     int64_t out_stride, bool prefill, cudaStream_t stream) {
  if (rows <= 0) return;
  const int64_t group = n_head / n_head_kv;
  if (prefill && rows > 1 && group <= 8) {
    const int kq = head_dim > 128 ? 8 : 16;
    const size_t smem = sizeof(float) * static_cast<size_t>(kWarp * (head_dim + 4) + kWarp * head_dim +
                                                            group * kq * head_dim + group * kq * kWarp);
    if (smem <= static_cast<size_t>(DeviceAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin))) {
      const dim3 grid(static_cast<unsigned>(n_head_kv), static_cast<unsigned>((rows + kq - 1) / kq));
      const unsigned threads = static_cast<unsigned>(group * kWarp);
#define TRINITY_ATTN_PREFILL(E, Q)                                                                              \
  cudaFuncSetAttribute(AttentionPrefillKernel<E, Q>, cudaFuncAttributeMaxDynamicSharedMemorySize,              \
                       static_cast<int>(smem));                                                               \
  AttentionPrefillKernel<E, Q><<<grid, threads, smem, stream>>>(q, q_stride, rows, pos, seq, k_cache, v_cache, \
                                                                seq_stride, n_head_kv, out, out_stride)
      switch (head_dim / kWarp) {
        case 1: TRINITY_ATTN_PREFILL(1, 16); break;
        case 2: TRINITY_ATTN_PREFILL(2, 16); break;
        case 4: TRINITY_ATTN_PREFILL(4, 16); break;
        case 8: TRINITY_ATTN_PREFILL(8, 8); break;
        default: throw std::runtime_error("CUDA attention: head_dim must be 32, 64, 128 or 256");
      }
#undef TRINITY_ATTN_PREFILL
      CheckLaunch("attention_prefill");
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>(n_head_kv), static_cast<unsigned>(n_splits), static_cast<unsigned>(rows));
  const unsigned threads = static_cast<unsigned>(n_head / n_head_kv * kWarp);
#define TRINITY_ATTN(E)                                                                                       \
  AttentionSplitKernel<E><<<grid, threads, 0, stream>>>(q, q_stride, pos, seq, k_cache, v_cache, seq_stride, \
                                                        n_head, n_head_kv, n_splits, part_o, part_ml)
  switch (head_dim / kWarp) {
    case 1: TRINITY_ATTN(1); break;
    case 2: TRINITY_ATTN(2); break;
    case 4: TRINITY_ATTN(4); break;
    case 8: TRINITY_ATTN(8); break;
    default: throw std::runtime_error("CUDA attention: head_dim must be 32, 64, 128 or 256");
  }
#undef TRINITY_ATTN
  CheckLaunch("attention");
  const dim3 grid2(static_cast<unsigned>(n_head), static_cast<unsigned>(rows));
  AttentionCombineKernel<<<grid2, static_cast<unsigned>(head_dim), 0, stream>>>(part_o, part_ml, n_head, head_dim,
                                                                                n_splits, out, out_stride);
  CheckLaunch("attention_combine");
}

void PrepareLmHead(int64_t n_in) {
  // 16 tokens per pass where the x tile fits (2B-4T: 160 KiB, within sm_80's 163 and sm_90's 227),
  // else 8 (and the 8-token tile must fit).
  const int max_smem = DeviceAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  const int64_t row_bytes = n_in * static_cast<int64_t>(sizeof(float));
  g_lm_tokens = kLmTokens * row_bytes <= max_smem ? kLmTokens : 8;
  if (g_lm_tokens * row_bytes > max_smem) {
    throw std::runtime_error("CUDA LM head: n_embd " + std::to_string(n_in) + " is too wide for shared memory");
  }
  const int bytes = static_cast<int>(g_lm_tokens * row_bytes);
  SetLmHeadSmem<true>(bytes);
  SetLmHeadSmem<false>(bytes);
  CheckLaunch("lm_head attributes");
}

void LaunchLmHead(const DenseDev& w, const float* x, int64_t x_stride, int64_t rows, float* logits,
                  int64_t logits_stride, cudaStream_t stream) {
  for (int64_t t = 0; t < rows;) {
    const int64_t left = rows - t;
    const float* xt = x + t * x_stride;
    float* lt = logits + t * logits_stride;
    if (w.f16 && left >= 8 && w.n_in % 32 == 0 && x_stride % 4 == 0) {  // tensor cores, <= 64 tokens per pass
      const int64_t nt = std::min<int64_t>(left, 64);
      const unsigned blocks = static_cast<unsigned>((w.n_rows + 32 * kLmMmaWarps - 1) / (32 * kLmMmaWarps));
      const __half* wd = static_cast<const __half*>(w.data);
#define TRINITY_LM_MMA(N)                                                                                            \
  LmHeadMmaKernel<N><<<blocks, kLmMmaWarps * kWarp, 0, stream>>>(wd, w.n_in, w.n_rows, xt, x_stride, nt, lt, \
                                                                 logits_stride)
      switch ((nt + 7) / 8) {
        case 1: TRINITY_LM_MMA(1); break;
        case 2: TRINITY_LM_MMA(2); break;
        case 3: TRINITY_LM_MMA(3); break;
        case 4: TRINITY_LM_MMA(4); break;
        case 5: TRINITY_LM_MMA(5); break;
        case 6: TRINITY_LM_MMA(6); break;
        case 7: TRINITY_LM_MMA(7); break;
        default: TRINITY_LM_MMA(8); break;
      }
#undef TRINITY_LM_MMA
      t += nt;
      continue;
    }
    const int nt = left >= 16 && g_lm_tokens >= 16 ? 16 : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
#define TRINITY_LM(N)                                                \
  if (w.f16) {                                                       \
    LaunchLmHeadT<true, N>(w, xt, x_stride, lt, logits_stride, stream);  \
  } else {                                                           \
    LaunchLmHeadT<false, N>(w, xt, x_stride, lt, logits_stride, stream); \
  }
    switch (nt) {
      case 16: TRINITY_LM(16); break;
      case 8: TRINITY_LM(8); break;
      case 4: TRINITY_LM(4); break;
      case 2: TRINITY_LM(2); break;
      default: TRINITY_LM(1); break;
    }
#undef TRINITY_LM
    t += nt;
  }
  CheckLaunch("lm_head");
}

void LaunchArgmax(const float* logits, int64_t logits_stride, int64_t n_vocab, int64_t rows, int32_t* ids,
                  cudaStream_t stream) {
  if (rows <= 0) return;
  ArgmaxKernel<<<static_cast<unsigned>(rows), kArgmaxThreads, 0, stream>>>(logits, logits_stride, n_vocab, ids);
  CheckLaunch("argmax");
}

}  // namespace trinity::cuda::detail
