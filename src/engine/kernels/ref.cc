#include "engine/kernels/ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/quant/quant.h"

namespace trinity::kernels {

float QuantizeActivations(const float* x, int64_t n, int8_t* q) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  const float a = 127.0f / std::max(max_abs, 1e-5f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] * a);  // default rounding mode: half to even
    q[i] = static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f));
  }
  return a;
}

namespace {

// Dot of one I2_S row (n_in/4 bytes) with int8 activations, with per-128 group scales or not.
// Codes c in {0,1,2} stand for c-1, so sum((c-1)*q) = sum(c*q) - sum(q) per block.
inline int32_t BlockDot(const uint8_t* block, const int8_t* q) {
  int32_t sum_cq = 0, sum_q = 0;
  for (int b = 0; b < 32; ++b) {
    const uint8_t byte = block[b];
    sum_cq += ((byte >> 6) & 3) * q[b] + ((byte >> 4) & 3) * q[b + 32] + ((byte >> 2) & 3) * q[b + 64] +
              (byte & 3) * q[b + 96];
    sum_q += q[b] + q[b + 32] + q[b + 64] + q[b + 96];
  }
  return sum_cq - sum_q;
}

}  // namespace

void TernaryMatVec(const TernaryView& w, const int8_t* q, float act_scale, float* y, int64_t row_begin,
                   int64_t row_end) {
  const int64_t row_bytes = w.n_in / 4;
  const int64_t blocks = w.n_in / 128;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.codes + r * row_bytes;
    if (w.group_scales == nullptr) {
      int32_t acc = 0;
      for (int64_t j = 0; j < blocks; ++j) acc += BlockDot(row + j * 32, q + j * 128);
      y[r] = static_cast<float>(acc) * w.scale / act_scale;
    } else {
      double acc = 0.0;
      const float* scales = w.group_scales + r * blocks;
      for (int64_t j = 0; j < blocks; ++j) acc += static_cast<double>(BlockDot(row + j * 32, q + j * 128)) * scales[j];
      y[r] = static_cast<float>(acc / act_scale);
    }
  }
}

float QuantizeRowQ8(const float* x, int64_t n, uint8_t* out) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  const float d = 127.0f / std::max(max_abs, 1e-30f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::clamp(std::nearbyint(x[i] * d), -127.0f, 127.0f);
    out[i] = static_cast<uint8_t>(static_cast<int>(v) + 128);
  }
  return 1.0f / d;
}

void Q8MatVec(const Q8View& w, const int8_t* q, float act_scale, float* y, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    int32_t acc = 0;
    for (int64_t c = 0; c < w.n_in; ++c) acc += (static_cast<int32_t>(row[c]) - 128) * q[c];
    y[r] = static_cast<float>(acc) * w.scales[r] / act_scale;
  }
}

void DenseRow(const DenseView& w, int64_t row, float* out) {
  quant::DequantizeRow(w.type, w.data + row * w.row_bytes, static_cast<uint64_t>(w.n_in), out);
}

void DenseMatVec(const DenseView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (w.type == TensorType::kF32) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + r * w.row_bytes;  // rows need not be 4-byte aligned
      float acc = 0.0f;
      for (int64_t c = 0; c < w.n_in; ++c) {
        float v;
        std::memcpy(&v, row + 4 * c, sizeof v);
        acc += v * x[c];
      }
      y[r] = acc;
    }
    return;
  }
  std::vector<float> buf(static_cast<size_t>(w.n_in));
  for (int64_t r = row_begin; r < row_end; ++r) {
    DenseRow(w, r, buf.data());
    float acc = 0.0f;
    for (int64_t c = 0; c < w.n_in; ++c) acc += buf[c] * x[c];
    y[r] = acc;
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

void RopeNeox(float* v, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float theta) {
  const int64_t half = n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
    const double angle = static_cast<double>(pos) * freq;
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    for (int64_t h = 0; h < n_head; ++h) {
      float* head = v + h * head_dim;
      const float x0 = head[i];
      const float x1 = head[i + half];
      head[i] = x0 * c - x1 * s;
      head[i + half] = x0 * s + x1 * c;
    }
  }
}

namespace {

inline float KvValue(float x) { return x; }
inline float KvValue(uint16_t h) { return Fp16ToFp32(h); }

template <class T>
void AttentionT(const float* q, const T* k_cache, const T* v_cache, int64_t n_kv, int64_t n_head, int64_t n_head_kv,
                int64_t head_dim, float* out, float* scratch, int64_t head_begin, int64_t head_end) {
  const int64_t group = n_head / n_head_kv;
  const int64_t kv_stride = n_head_kv * head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t h = head_begin; h < head_end; ++h) {
    const float* qh = q + h * head_dim;
    const int64_t kvh = h / group;
    float max_score = -INFINITY;
    for (int64_t t = 0; t < n_kv; ++t) {
      const T* k = k_cache + t * kv_stride + kvh * head_dim;
      float dot = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * KvValue(k[d]);
      scratch[t] = dot * scale;
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
      const T* v = v_cache + t * kv_stride + kvh * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) oh[d] += p * KvValue(v[d]);
    }
  }
}

}  // namespace

void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t n_kv, int64_t n_head,
               int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
               int64_t head_end) {
  AttentionT(q, k_cache, v_cache, n_kv, n_head, n_head_kv, head_dim, out, scratch, head_begin, head_end);
}

void Attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t n_kv, int64_t n_head,
               int64_t n_head_kv, int64_t head_dim, float* out, float* scratch, int64_t head_begin,
               int64_t head_end) {
  AttentionT(q, k_cache, v_cache, n_kv, n_head, n_head_kv, head_dim, out, scratch, head_begin, head_end);
}

}  // namespace trinity::kernels
