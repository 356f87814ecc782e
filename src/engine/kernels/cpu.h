// Fast CPU kernels behind one runtime dispatch.
//
// Instruction-set paths implement the same table of functions:
//   kRef    — the scalar reference kernels of ref.h (portable; the oracle),
//   kAvx2   — x86-64: AVX2 + FMA + F16C (vpmaddubsw for the int8 dot products),
//   kAvx512 — x86-64: AVX-512 F/BW/VL + VNNI (vpdpbusd) + F16C,
//   kNeon   — AArch64: NEON + dot product (sdot), Apple M1 and later, Cortex-A76 / Neoverse N1 on,
//   kGeneric — portable C++ in GCC/Clang vector extensions: every other CPU (AArch64 without the
//              dot product, e.g. Raspberry Pi 3/4; x86-64 without AVX2; RISC-V, POWER).
// The caller picks a table once (GetCpuKernels(ActiveCpuPath())) at the top of the call tree and
// calls through it; below that, each path is plain static code for one instruction set. The
// environment variable TRINITY_CPU=ref|generic|avx2|avx512|neon forces a lower path (a path the
// machine cannot run is ignored); tests force every path the machine supports.
//
// Ternary weights stay in the I2_S layout (ref.h): its 32-byte blocks already hold four runs of
// 32 consecutive values in the four 2-bit planes, so one 32-byte load unpacks into 128 codes in
// activation order with shifts/masks; no repacked copy is needed (memory stays at the file size).
// Integer accumulation is exact: every path returns bit-identical results to the reference for
// TernaryGemv/TernaryGemm/QuantizeActivations; dense and attention kernels differ from the
// reference only by float summation order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "engine/kernels/ref.h"

namespace trinity::kernels {

enum class CpuPath { kRef = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3, kGeneric = 4 };

const char* CpuPathName(CpuPath path);
// "ref" | "generic" | "avx2" | "avx512" | "neon" -> path; throws trinity::Error otherwise.
CpuPath ParseCpuPath(const std::string& name);
// The best path this machine runs (x86: cpuid + OS register-state check; AArch64: the OS's
// hardware capabilities).
CpuPath DetectCpuPath();
bool CpuPathSupported(CpuPath path);
// DetectCpuPath(), lowered by $TRINITY_CPU when set; computed once per process.
CpuPath ActiveCpuPath();

// Software prefetch of the decode GEMVs' row streams (the x86 paths, row_streams.h). Whether it
// pays depends on the machine: on one Zen 5 host it made 2B-4T decode up to 17% faster, on
// another the same binary decoded up to 17% faster without it (bench/RESULTS.md, seventeenth and
// eighteenth sessions). kAuto (the default) lets every thread time both on its own calls and keep the faster
// (PrefetchTrial, row_streams.h); kOn and kOff force one. The results are the same bits whatever
// the mode. $TRINITY_PREFETCH=auto|on|off sets the mode at start; SetStreamPrefetch changes it.
enum class StreamPrefetch { kAuto = 0, kOn = 1, kOff = 2 };
const char* StreamPrefetchName(StreamPrefetch mode);
// "auto" | "on" | "off" -> mode; throws trinity::Error otherwise.
StreamPrefetch ParseStreamPrefetch(const std::string& name);
StreamPrefetch GetStreamPrefetch();
void SetStreamPrefetch(StreamPrefetch mode);
// Decode GEMV calls (every thread's share counts once) made with and without the prefetch since
// the process started: what kAuto chose.
struct StreamPrefetchCalls {
  uint64_t on = 0;
  uint64_t off = 0;
};
StreamPrefetchCalls StreamPrefetchCallCounts();
void CountStreamPrefetchCall(bool prefetched);

struct CpuKernels {
  CpuPath path = CpuPath::kRef;

  // QuantizeActivations (ref.h) that also returns sum(q) in *q_sum (the I2_S codes are value+1,
  // so sum((c-1)*q) = sum(c*q) - sum(q)).
  float (*quantize)(const float* x, int64_t n, int8_t* q, int32_t* q_sum) = nullptr;

  // TernaryMatVec (ref.h), rows [row_begin, row_end), one token: q_sum = sum of q's n_in values.
  void (*ternary_gemv)(const TernaryView& w, const int8_t* q, int32_t q_sum, float act_scale, float* y,
                       int64_t row_begin, int64_t row_end) = nullptr;

  // n_tok tokens at once (prefill): token t's activations are q + t*q_stride with sum q_sums[t]
  // and scale act_scales[t]; y[t*y_stride + r] for rows [row_begin, row_end). Equal, value for
  // value, to n_tok TernaryMatVec calls; the weights are unpacked once per block of tokens.
  void (*ternary_gemm)(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t* q_sums,
                       const float* act_scales, int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin,
                       int64_t row_end) = nullptr;

  // DenseMatVec (ref.h); F16 and F32 vectorised, other types through the reference.
  void (*dense_gemv)(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) = nullptr;

  // n_x vectors at once (batched decode's LM head): ys[i][r] = row r . (x + i*x_stride) for rows
  // [row_begin, row_end). Bit-identical to n_x dense_gemv calls (same summation order), but each
  // block of rows is read, and converted from F16, once for all the vectors.
  void (*dense_gemm)(const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys,
                     int64_t row_begin, int64_t row_end) = nullptr;
  // Q8MatVec (ref.h), rows [row_begin, row_end): the optional 8-bit LM head; q_sum = sum of q.
  void (*q8_gemv)(const Q8View& w, const int8_t* q, int32_t q_sum, float act_scale, float* y, int64_t row_begin,
                  int64_t row_end) = nullptr;

  // Attention (ref.h) for heads [head_begin, head_end) of one query position.
  void (*attention)(const float* q, const float* k_cache, const float* v_cache, int64_t n_kv, int64_t n_head,
                    int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
                    int64_t head_end) = nullptr;

  // RmsNorm (ref.h) then `quantize`, fused: q = quantised rms_norm(h) * weight, returns the
  // activation scale and sets *q_sum; nothing else is written. h = x, or with `up` non-null the
  // feed-forward's relu^2(x) * up (a = x > 0 ? x*x : 0, h = a * up, as the forward pass computes
  // it). The sum of squares is summed in double in another order than RmsNorm's (a float result
  // can differ in its last bit, so a code can rarely move by one); everything else is the same
  // float operations. Null on paths without a fused kernel: callers then run RmsNorm and `quantize`.
  float (*norm_quantize)(const float* x, const float* up, const float* weight, int64_t n, float eps, int8_t* q,
                         int32_t* q_sum) = nullptr;

  // Causal attention of a batch of query tokens (prefill): token t (of [t_begin, t_end)) sits at
  // position pos + t, its query at q + t*q_stride, and sees cache rows 0 .. pos+t; output at
  // out + t*out_stride; for KV heads [kvh_begin, kvh_end) and their n_head/n_head_kv query heads
  // each. Equal to Attention per token to within float rounding (online softmax, other summation
  // order). Null on paths without a batched kernel, and only for shapes where
  // AttentionPrefillSupports(): callers otherwise run `attention` per token.
  void (*attention_prefill)(const float* q, int64_t q_stride, const float* k_cache, const float* v_cache,
                            int64_t pos, int64_t n_head, int64_t n_head_kv, int64_t head_dim, float* out,
                            int64_t out_stride, int64_t t_begin, int64_t t_end, int64_t kvh_begin,
                            int64_t kvh_end) = nullptr;

  // Decode attention by key ranges ("flash decoding"): every head of one query token (q: n_head x
  // head_dim) over cache keys [k_begin, k_end) (0 < k_end - k_begin <= kDecodeKeys). Writes the
  // range's unnormalised part for each head h: m[h] = max_k s_k, l[h] = sum_k exp(s_k - m[h]),
  // o[h*head_dim + d] = sum_k exp(s_k - m[h]) v_k[d] with s_k = q_h . k_k / sqrt(head_dim);
  // MergeAttentionParts combines the ranges. It reads the range's cache rows once, whole and in
  // order, for all heads (`attention` reads each KV head's slice of every row once per query
  // head), and decode threads split a long cache by key ranges. Null on paths without it; callers
  // run `attention` then, and for shapes outside AttentionDecodeSupports.
  void (*attention_decode)(const float* q, const float* k_cache, const float* v_cache, int64_t n_head,
                           int64_t n_head_kv, int64_t head_dim, int64_t k_begin, int64_t k_end, float* o, float* m,
                           float* l) = nullptr;

  // The three attention kernels over an f16 KV cache (ContextOptions::kv_cache, caches of IEEE
  // half bits): the same contracts, and equal to the f32 kernels on the caches' float values,
  // since every half converts to float exactly. `attention_f16` is set on every path (the
  // reference's loops where nothing faster exists); the other two where the f32 ones are.
  void (*attention_f16)(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv, int64_t n_head,
                        int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
                        int64_t head_end) = nullptr;
  void (*attention_prefill_f16)(const float* q, int64_t q_stride, const uint16_t* k_cache, const uint16_t* v_cache,
                                int64_t pos, int64_t n_head, int64_t n_head_kv, int64_t head_dim, float* out,
                                int64_t out_stride, int64_t t_begin, int64_t t_end, int64_t kvh_begin,
                                int64_t kvh_end) = nullptr;
  void (*attention_decode_f16)(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_head,
                               int64_t n_head_kv, int64_t head_dim, int64_t k_begin, int64_t k_end, float* o, float* m,
                               float* l) = nullptr;
};

// Shapes the batched attention kernel covers (its register tiles and stack buffers).
inline bool AttentionPrefillSupports(int64_t n_head, int64_t n_head_kv, int64_t head_dim) {
  return head_dim % 16 == 0 && head_dim <= 256 && n_head_kv > 0 && n_head % n_head_kv == 0 && n_head / n_head_kv <= 16;
}

// attention_decode's bounds (its stack scores: kMaxDecodeHeads x kDecodeKeys floats, 32 KiB).
constexpr int64_t kDecodeKeys = 128;
constexpr int64_t kMaxDecodeHeads = 64;
inline bool AttentionDecodeSupports(int64_t n_head, int64_t n_head_kv, int64_t head_dim) {
  return AttentionPrefillSupports(n_head, n_head_kv, head_dim) && n_head <= kMaxDecodeHeads;
}

// The attention output of n_head heads (out: n_head x head_dim) from n_parts of attention_decode's
// partial results, part p at o + p*n_head*head_dim, m + p*n_head, l + p*n_head:
// out = sum_p exp(m_p - M) o_p / sum_p exp(m_p - M) l_p with M = max_p m_p.
inline void MergeAttentionParts(const float* o, const float* m, const float* l, int64_t n_parts, int64_t n_head,
                                int64_t head_dim, float* out) {
  for (int64_t h = 0; h < n_head; ++h) {
    float top = -INFINITY;
    for (int64_t p = 0; p < n_parts; ++p) top = std::max(top, m[p * n_head + h]);
    float den = 0.0f;
    for (int64_t p = 0; p < n_parts; ++p) den += l[p * n_head + h] * std::exp(m[p * n_head + h] - top);
    float* oh = out + h * head_dim;
    std::fill(oh, oh + head_dim, 0.0f);
    for (int64_t p = 0; p < n_parts; ++p) {
      const float w = std::exp(m[p * n_head + h] - top) / den;
      const float* op = o + (p * n_head + h) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) oh[d] += w * op[d];
    }
  }
}

// The table of one path; throws trinity::Error when the machine cannot run it.
const CpuKernels& GetCpuKernels(CpuPath path);

// Per-path tables (defined in cpu_dispatch.cc, cpu_generic.cc, cpu_avx2.cc, cpu_avx512.cc,
// cpu_neon.cc; CMake builds the x86 files for x86 targets and cpu_neon.cc for AArch64 only).
const CpuKernels& RefKernels();
const CpuKernels& GenericKernels();
const CpuKernels& Avx2Kernels();
const CpuKernels& Avx512Kernels();
const CpuKernels& NeonKernels();

}  // namespace trinity::kernels
