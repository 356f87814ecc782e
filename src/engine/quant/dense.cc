// Dense row formats: dequantisation of F32, F16, BF16, Q8_0, Q6_K (and ternary TQ rows as
// code * d), and the Q8_0 / Q6_K / F16 quantisers. Plain scalar, in ggml's order of operations so
// the float results are bit identical to ggml's reference C code.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/quant/quant.h"

namespace trinity::quant {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF data is little endian");

inline uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// ggml's nearest_int: round half to even (the default floating-point rounding mode).
inline int NearestInt(float x) { return static_cast<int>(std::nearbyint(x)); }

// Block layouts (ggml-common.h):
//   block_q8_0 (34 bytes):  f16 d; int8 qs[32]                value j = qs[j] * d
//   block_q6_K (210 bytes): uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d
constexpr int kQ6QlOffset = 0;
constexpr int kQ6QhOffset = 128;
constexpr int kQ6ScalesOffset = 192;
constexpr int kQ6DOffset = 208;

// Values per block and bytes per block of the formats DequantizeRow reads. Kept here rather than
// taken from gguf Traits() so that this module has no run-time dependency on the type table.
struct BlockShape {
  uint64_t values;
  uint64_t bytes;
};

BlockShape ShapeOf(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return {1, 4};
    case TensorType::kF16:
      return {1, 2};
    case TensorType::kBF16:
      return {1, 2};
    case TensorType::kQ8_0:
      return {kQ8_0Block, kQ8_0BlockBytes};
    case TensorType::kQ6_K:
      return {kQ6_KBlock, kQ6_KBlockBytes};
    case TensorType::kTQ1_0:
      return {kTQBlock, kTQ1_0BlockBytes};
    case TensorType::kTQ2_0:
      return {kTQBlock, kTQ2_0BlockBytes};
    default:
      return {0, 0};
  }
}

// y[j] = qs[j] * d
void DequantizeQ8_0Block(const uint8_t* block, float* y) {
  const float d = Fp16ToFp32(LoadU16(block));
  const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
  for (int j = 0; j < kQ8_0Block; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// ggml dequantize_row_q6_K: for each half n (128 values; ql += 64, qh += 32, sc += 8 per half)
// and l in 0..31, with is = l / 16 and 6-bit q = 4 low bits | 2 high bits << 4, minus 32:
//   y[l +  0] = d * sc[is + 0] * ((ql[l]      & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32)
//   y[l + 32] = d * sc[is + 2] * ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32)
//   y[l + 64] = d * sc[is + 4] * ((ql[l]      >>  4) | ((qh[l] >> 4) & 3) << 4) - 32)
//   y[l + 96] = d * sc[is + 6] * ((ql[l + 32] >>  4) | ((qh[l] >> 6) & 3) << 4) - 32)
// evaluated as (d * sc) * q in float.
void DequantizeQ6_KBlock(const uint8_t* block, float* y) {
  const float d = Fp16ToFp32(LoadU16(block + kQ6DOffset));
  const uint8_t* ql = block + kQ6QlOffset;
  const uint8_t* qh = block + kQ6QhOffset;
  const auto* sc = reinterpret_cast<const int8_t*>(block + kQ6ScalesOffset);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// ggml make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL): the scale minimising the
// x^2-weighted squared error over 19 candidate inverse scales -(nmax + 0.1 * is) / max,
// is = -9..9, where max is the signed value of largest magnitude. L gets l + nmax, l in
// [-nmax, nmax - 1]. Returns 0 (and L = 0) for an all-zero group.
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {  // ggml GROUP_MAX_EPS
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  // Accumulates sum(w x l) and sum(w l^2) with w = x^2 for one inverse scale.
  auto score = [&](float iscale, float& sumlx, float& suml2) {
    sumlx = 0;
    suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
  };
  auto assign = [&](float iscale) {
    for (int i = 0; i < n; ++i) {
      L[i] = static_cast<int8_t>(nmax + std::clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
    }
  };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx, suml2;
  score(iscale, sumlx, suml2);
  assign(iscale);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    score(iscale, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      assign(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// ggml quantize_row_q6_K_ref for one block of 256:
//   per 16-value group g: scale_g = MakeQxQuants(16, 32, x_g); max_scale = the scale_g of largest
//   |.| iscale = -128 / max_scale; d = f16(1 / iscale); scales[g] = min(127, round(iscale *
//   scale_g)) L = clamp(round(x / (f16(d) * scales[g])), -32, 31) + 32 (groups with zero scale keep
//   their MakeQxQuants codes), then packed as in DequantizeQ6_KBlock.
void QuantizeQ6_KBlock(const float* x, uint8_t* block) {
  int8_t L[kQ6_KBlock];
  float group_scales[kQ6_KBlock / 16];
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int g = 0; g < kQ6_KBlock / 16; ++g) {
    const float scale = MakeQxQuants(16, 32, x + 16 * g, L + 16 * g);
    group_scales[g] = scale;
    if (std::fabs(scale) > max_abs_scale) {
      max_abs_scale = std::fabs(scale);
      max_scale = scale;
    }
  }
  std::memset(block, 0, kQ6_KBlockBytes);
  if (max_abs_scale < 1e-15f) return;  // all zero: zero codes, zero scales, d = +0

  const float iscale = -128.f / max_scale;
  StoreU16(block + kQ6DOffset, Fp32ToFp16(1 / iscale));
  auto* scales = reinterpret_cast<int8_t*>(block + kQ6ScalesOffset);
  for (int g = 0; g < kQ6_KBlock / 16; ++g) {
    scales[g] = static_cast<int8_t>(std::min(127, NearestInt(iscale * group_scales[g])));
  }
  const float d_block = Fp16ToFp32(LoadU16(block + kQ6DOffset));
  for (int g = 0; g < kQ6_KBlock / 16; ++g) {
    const float d = d_block * static_cast<float>(scales[g]);
    if (d == 0) continue;
    for (int i = 0; i < 16; ++i) {
      L[16 * g + i] = static_cast<int8_t>(std::clamp(NearestInt(x[16 * g + i] / d), -32, 31) + 32);
    }
  }
  uint8_t* ql = block + kQ6QlOffset;
  uint8_t* qh = block + kQ6QhOffset;
  for (int j = 0; j < kQ6_KBlock; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l + 0] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] =
          static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

}  // namespace

bool CanDequantize(TensorType type) { return ShapeOf(type).values != 0; }

// out[j] = value j of the row; see the per-format routines for the formulas. TQ rows: code * d
// with the codes of UnpackTQ1_0 / UnpackTQ2_0.
void DequantizeRow(TensorType type, const uint8_t* data, uint64_t n, float* out) {
  const BlockShape shape = ShapeOf(type);
  if (shape.values == 0)
    Fail("DequantizeRow: tensor type {} cannot be dequantised", static_cast<int>(type));
  if (n % shape.values != 0) {
    Fail("DequantizeRow: {} values is not a multiple of the {}-value block", n, shape.values);
  }
  const uint64_t n_blocks = n / shape.values;
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, data, n * sizeof(float));
      return;
    case TensorType::kF16:
      for (uint64_t i = 0; i < n; ++i) out[i] = Fp16ToFp32(LoadU16(data + 2 * i));
      return;
    case TensorType::kBF16:
      for (uint64_t i = 0; i < n; ++i) out[i] = Bf16ToFp32(LoadU16(data + 2 * i));
      return;
    case TensorType::kQ8_0:
      for (uint64_t b = 0; b < n_blocks; ++b)
        DequantizeQ8_0Block(data + b * shape.bytes, out + b * shape.values);
      return;
    case TensorType::kQ6_K:
      for (uint64_t b = 0; b < n_blocks; ++b)
        DequantizeQ6_KBlock(data + b * shape.bytes, out + b * shape.values);
      return;
    case TensorType::kTQ1_0:
    case TensorType::kTQ2_0: {
      // y = (float)code * d, block by block.
      int8_t codes[kTQBlock];
      float d;
      for (uint64_t b = 0; b < n_blocks; ++b) {
        const uint8_t* block = data + b * shape.bytes;
        if (type == TensorType::kTQ1_0) {
          UnpackTQ1_0(block, kTQBlock, codes, &d);
        } else {
          UnpackTQ2_0(block, kTQBlock, codes, &d);
        }
        float* y = out + b * kTQBlock;
        for (int j = 0; j < kTQBlock; ++j) y[j] = static_cast<float>(codes[j]) * d;
      }
      return;
    }
    default:
      Fail("DequantizeRow: tensor type {} cannot be dequantised", static_cast<int>(type));
  }
}

// ggml quantize_row_q8_0_ref, per 32 values: d = amax / 127, q = roundf(x * (1/d)) (ties away
// from zero; q = 0 when d = 0), stored d = f16(d).
std::vector<uint8_t> QuantizeQ8_0(const float* x, uint64_t n) {
  if (n % kQ8_0Block != 0)
    Fail("Q8_0: {} values is not a multiple of the {}-value block", n, kQ8_0Block);
  std::vector<uint8_t> out(n / kQ8_0Block * kQ8_0BlockBytes);
  for (uint64_t b = 0; b < n / kQ8_0Block; ++b) {
    const float* xb = x + b * kQ8_0Block;
    uint8_t* block = out.data() + b * kQ8_0BlockBytes;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0Block; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    StoreU16(block, Fp32ToFp16(d));
    for (int j = 0; j < kQ8_0Block; ++j) {
      block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(xb[j] * id)));
    }
  }
  return out;
}

std::vector<uint8_t> QuantizeQ6_K(const float* x, uint64_t n) {
  if (n % kQ6_KBlock != 0)
    Fail("Q6_K: {} values is not a multiple of the {}-value block", n, kQ6_KBlock);
  std::vector<uint8_t> out(n / kQ6_KBlock * kQ6_KBlockBytes);
  for (uint64_t b = 0; b < n / kQ6_KBlock; ++b) {
    QuantizeQ6_KBlock(x + b * kQ6_KBlock, out.data() + b * kQ6_KBlockBytes);
  }
  return out;
}

// out[2i..2i+1] = little-endian f16(x[i]), round to nearest even.
std::vector<uint8_t> ToF16(const float* x, uint64_t n) {
  std::vector<uint8_t> out(2 * n);
  for (uint64_t i = 0; i < n; ++i) StoreU16(out.data() + 2 * i, Fp32ToFp16(x[i]));
  return out;
}

}  // namespace trinity::quant
