// Reference kernels: plain scalar C++, the oracle every fast path is tested against.
//
// Shapes use the engine's words: a ternary matrix has n_out rows of n_in values (ggml ne = {n_in,
// n_out}); activations are one row of n_in floats per token.
#pragma once

#include <cstdint>

#include "engine/gguf/tensor_type.h"

namespace trinity::kernels {

// A ternary weight matrix in I2_S layout: row r is n_in/4 bytes at codes + r*n_in/4, made of
// 128-value blocks (see quant.h). Value = (code - 1) * scale, or * group_scales[g] where g is the
// 128-value group index over the row-major matrix when group_scales is non-null.
struct TernaryView {
  const uint8_t* codes = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  float scale = 1.0f;
  const float* group_scales = nullptr;  // n_in*n_out/128 floats, or null
};

// A dense matrix (embedding / LM head): n_rows rows of n_in values of `type`, row_bytes apart.
struct DenseView {
  TensorType type = TensorType::kF32;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_rows = 0;
  uint64_t row_bytes = 0;
};

// An 8-bit matrix (the optional quantised LM head, see QuantizeRowQ8): row r is n_in bytes at
// data + r*row_bytes, byte b standing for the integer b - 128 in [-127, 127] (b = 0 never occurs),
// value = (b - 128) * scales[r]. The +128 offset makes the bytes the unsigned operand of the
// u8 x s8 dot-product instructions; the activation side corrects with 128 * sum(q).
struct Q8View {
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_rows = 0;
  uint64_t row_bytes = 0;
  const float* scales = nullptr;  // n_rows
};

// Per-token int8 activation quantisation, exactly as in training:
//   a = 127 / max(max|x|, 1e-5);  q = clamp(round_half_even(x * a), -128, 127).
// Returns a (the activation scale; dequantised x = q / a).
float QuantizeActivations(const float* x, int64_t n, int8_t* q);

// Ternary matrix times int8 vector, rows [row_begin, row_end):
//   y[r] = (sum_c Wq[r,c] * q[c]) * scale / act_scale   (integer accumulation in int32)
void TernaryMatVec(const TernaryView& w, const int8_t* q, float act_scale, float* y, int64_t row_begin,
                   int64_t row_end);

// One row to Q8View bytes, the activation rule applied to a weight row: d = 127 / max(max|x|, 1e-30),
// out = round_half_even(x * d) + 128 (so in [1, 255]); returns the row scale 1/d.
float QuantizeRowQ8(const float* x, int64_t n, uint8_t* out);

// 8-bit matrix times int8 vector, rows [row_begin, row_end):
//   y[r] = (sum_c (b[r,c] - 128) * q[c]) * scales[r] / act_scale   (integer accumulation in int32)
void Q8MatVec(const Q8View& w, const int8_t* q, float act_scale, float* y, int64_t row_begin, int64_t row_end);

// y[r] = sum_c W[r,c] * x[c] for rows [row_begin, row_end), W dequantised row by row (f32 math).
void DenseMatVec(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end);
// One dequantised row (embedding lookup).
void DenseRow(const DenseView& w, int64_t row, float* out);

// out = x / sqrt(mean(x^2) + eps) * weight   (out may alias x)
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// NEOX ("rotate half") RoPE in place on n_head heads of head_dim values: pairs (i, i + n_rot/2)
// for i < n_rot/2 rotate by pos * theta^(-2i/n_rot).
void RopeNeox(float* v, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float theta);

// Causal attention of one query position over n_kv cached positions for all heads (GQA):
//   q: n_head*head_dim, k/v cache: [n_kv][n_head_kv*head_dim], out: n_head*head_dim.
// scores = q.k / sqrt(head_dim), softmax in f32 (max-subtracted), out = sum p * v.
// `scratch` must hold n_kv floats.
void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_kv, int64_t n_head,
               int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
               int64_t head_end);
// The same over caches of IEEE half bits (the f16 KV cache): each value converted to float (exact),
// then the same operations in the same order, so equal bit for bit to Attention on the converted
// caches.
void Attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv, int64_t n_head,
               int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
               int64_t head_end);

}  // namespace trinity::kernels
