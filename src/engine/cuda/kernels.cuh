// Launchers of the CUDA kernels (kernels.cu). Host-callable, plain C++ signatures over device
// pointers and a stream, so forward.cc and testing.cc compile with the host compiler.
//
// Buffers are row-major, one row per token-row of the batch; `*_stride` is in elements.
// Row metadata (device int32 arrays, one entry per row): tokens, pos (position in its sequence),
// seq (which sequence's KV cache). KV caches: k/v[seq][layer][pos][n_embd_kv] f32; the launchers
// take the layer's base (k + layer*n_ctx*n_kv) and seq_stride = n_layer*n_ctx*n_kv.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace trinity::cuda::detail {

// A ternary matrix on the device: n_out rows of n_in/4 I2_S bytes (the file's layout, see
// kernels/ref.h), value = (code - 1) * row_scales[r], or * group_scales[r*n_in/128 + j] for
// 128-value block j when group_scales is non-null (TQ files). Fused matrices (q|k|v, gate|up)
// are their parts' rows one after another, hence a scale per row.
struct TernaryDev {
  const uint8_t* codes = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  const float* row_scales = nullptr;    // n_out
  const float* group_scales = nullptr;  // n_out * n_in/128, or null
};

// A dense matrix (embedding / LM head): n_rows contiguous rows of n_in values, F16 or F32.
struct DenseDev {
  const void* data = nullptr;
  int64_t n_in = 0;
  int64_t n_rows = 0;
  bool f16 = true;
};

enum class NormInput {
  kPlain,     // v = src
  kResidual,  // src += delta (written back), v = src       (the residual stream)
  kRelu2Glu,  // v = relu(src)^2 * src[width + i], written back to src   (gate|up rows)
  kSiluGlu,   // v = silu(src) * src[width + i], written back to src
};

// x[r] = embedding row tokens[r] (f32).
void LaunchEmbed(const DenseDev& embd, const int32_t* tokens, int64_t rows, float* x, cudaStream_t stream);

// Per row: v as NormInput says, n = v / sqrt(mean(v^2) + eps) * weight (kernels::RmsNorm), then
// a = 127 / max(max|n|, 1e-5), q = clamp(rint(n * a), -128, 127) (kernels::QuantizeActivations);
// act_scales[r] = a, q_sums[r] = sum(q). Same float operations as the CPU, so bit-identical
// except where the double sum of squares rounds differently (summation order).
void LaunchNormQuant(NormInput mode, float* src, int64_t src_stride, const float* delta, int64_t delta_stride,
                     const float* weight, int64_t width, float eps, int64_t rows, int8_t* q, int64_t q_stride,
                     float* act_scales, int32_t* q_sums, cudaStream_t stream);
// The same norm without quantisation: out[r] = n (f32), for the LM head's output_norm.
void LaunchNorm(NormInput mode, float* src, int64_t src_stride, const float* delta, int64_t delta_stride,
                const float* weight, int64_t width, float eps, int64_t rows, float* out, int64_t out_stride,
                cudaStream_t stream);

enum class MatmulKind { kAuto, kGemv, kGemm };
// y[t][r] = (sum_c Wq[r,c] * q[t][c]) * scale_r / act_scales[t]   (kernels::TernaryMatVec, exact
// int32 accumulation). kGemv: dp4a, one warp per row, up to 8 tokens per pass (decode); kGemm:
// int8 tensor cores (mma.sync m16n8k32), 64x64 tiles (prefill, batched decode); kAuto picks
// kGemv for rows <= 8 (or always, with $TRINITY_CUDA_NO_MMA=1).
void LaunchTernaryMatmul(const TernaryDev& w, const int8_t* q, int64_t q_stride, const float* act_scales,
                         const int32_t* q_sums, int64_t rows, float* y, int64_t y_stride, MatmulKind kind,
                         cudaStream_t stream);

// NEOX RoPE with the host-computed table rope_cs[pos][n_rot/2][{cos, sin}] (the CPU's doubles,
// rounded to float): q heads (qkv[r][0, n_embd)) rotated in place; k (qkv[r][n_embd, +n_kv))
// rotated into k_cache, v (qkv[r][n_embd + n_kv, +n_kv)) copied into v_cache, at (seq[r], pos[r]).
void LaunchRopeKv(float* qkv, int64_t qkv_stride, int64_t rows, const int32_t* pos, const int32_t* seq,
                  const float* rope_cs, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                  float* k_cache, float* v_cache, int64_t seq_stride, cudaStream_t stream);

// Causal GQA attention of each row's query (q + r*q_stride, n_head*head_dim) over positions
// 0 .. pos[r] of its sequence's cache (kernels::Attention, online softmax). Flash-decoding: the
// positions are cut into n_splits ranges computed in parallel (partials part_o [rows][n_head]
// [n_splits][head_dim], part_ml [..][2]), then combined into out + r*out_stride.
// prefill: the rows are one sequence at ascending positions (a prompt chunk); then, where the
// group (<= 8 query heads per KV head) and shared memory allow, tiles of 16 rows (8 for head_dim
// 256) read each key once per tile instead of once per row (part_o / part_ml unused).
void LaunchAttention(const float* q, int64_t q_stride, int64_t rows, const int32_t* pos, const int32_t* seq,
                     const float* k_cache, const float* v_cache, int64_t seq_stride, int64_t n_head,
                     int64_t n_head_kv, int64_t head_dim, int n_splits, float* part_o, float* part_ml, float* out,
                     int64_t out_stride, bool prefill, cudaStream_t stream);

// logits[t][v] = sum_c W[v][c] * x[t][c] in f32 (kernels::DenseMatVec). An F16 W with 8 or more
// rows goes through the tensor cores, x split into two halves (hi + lo) so that it keeps ~22 bits.
void LaunchLmHead(const DenseDev& w, const float* x, int64_t x_stride, int64_t rows, float* logits,
                  int64_t logits_stride, cudaStream_t stream);

// ids[r] = argmax of logits row r (lowest id on ties, NaN skipped; 0 when all are NaN).
void LaunchArgmax(const float* logits, int64_t logits_stride, int64_t n_vocab, int64_t rows, int32_t* ids,
                  cudaStream_t stream);

// The largest dynamic shared memory the LM head asks for, set once per process (n_in values).
void PrepareLmHead(int64_t n_in);

}  // namespace trinity::cuda::detail
