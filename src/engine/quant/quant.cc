// Ternary weight formats (I2_S, TQ2_0, TQ1_0) and the BitNet abs-mean ternariser.
//
// Plain scalar, bit exact. Every byte layout below is written out in the comment above the
// routine that reads it; the packers are the exact inverses of the unpackers.
#include "engine/quant/quant.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/common/error.h"
#include "engine/common/fp16.h"

namespace trinity::quant {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF data is little endian");

// Ternary code -> 2-bit field: -1 -> 0, 0 -> 1, +1 -> 2. Anything else is a caller bug.
inline uint8_t CodeToBits(int8_t code, uint64_t index, const char* format) {
  if (code < -1 || code > 1) {
    Fail("{} pack: value {} at index {} is not a ternary code (-1, 0, +1)", format, code, index);
  }
  return static_cast<uint8_t>(code + 1);
}

// 2-bit field -> ternary code; the unused field 3 decodes as 0 (see quant.h).
inline int8_t BitsToCode(uint32_t bits) { return bits == 3 ? 0 : static_cast<int8_t>(bits) - 1; }

inline void CheckBlocks(uint64_t n, uint64_t block, const char* format) {
  if (n % block != 0)
    Fail("{}: {} values is not a multiple of the {}-value block", format, n, block);
}

inline uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void StoreU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// ---- TQ1_0 base-3 byte helpers ------------------------------------------------------------------
// A byte holding k trits t0..t(k-1) (t0 most significant) stores the fixed-point fraction
//   q = t0*3^4 + t1*3^3 + ... (padded with trailing zero trits to 5 digits),
//   byte = ceil(q * 256 / 243).
// Trit n is then recovered without division: ((uint8_t)(byte * 3^n) * 3) >> 8. The uint8_t
// wrap-around of byte * 3^n discards the leading trits; * 3 >> 8 reads the next one.
constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};

inline uint8_t EncodeTrits5(const uint8_t trits[5]) {
  uint32_t q = 0;
  for (int n = 0; n < 5; ++n) q = q * 3 + trits[n];
  return static_cast<uint8_t>((q * 256 + 242) / 243);
}

inline uint8_t DecodeTrit(uint8_t byte, int n) {
  const uint8_t shifted = static_cast<uint8_t>(byte * kPow3[n]);
  return static_cast<uint8_t>((static_cast<uint16_t>(shifted) * 3) >> 8);  // always 0, 1 or 2
}

// TQ1_0 block (54 bytes): qs[48], qh[4], f16 d. Value index v in 0..255 of the block sits in:
//   v <  160: qs[v % 32],             trit v / 32          (5 groups of 32 along qs[0..31])
//   v <  240: qs[32 + (v-160) % 16],  trit (v-160) / 16    (5 groups of 16 along qs[32..47])
//   v >= 240: qh[(v-240) % 4],        trit (v-240) / 4     (4 groups of 4 along qh[0..3])
// This is the order of ggml's quantize_row_tq1_0_ref / dequantize_row_tq1_0.
constexpr int kTQ1QsBytes = 48;  // 32 bytes of 5 trits along 32 values, 16 along 16
static_assert(kTQ1QsBytes == 32 + 16 && kTQ1QsBytes * 5 + 4 * 4 == kTQBlock);
constexpr int kTQ1QhOffset = 48;
constexpr int kTQ1DOffset = 52;

// ---- TQ2_0 --------------------------------------------------------------------------------------
// TQ2_0 block (66 bytes): qs[64], f16 d. For half h in {0, 1}, byte qs[32h + m] holds values
// 128h + m + 32l in bits 2l..2l+1, l = 0..3 (the first value in the LOW bits, unlike I2_S).
constexpr int kTQ2DOffset = 64;

}  // namespace

// ---- I2_S ---------------------------------------------------------------------------------------
// out[128i + 32k + b] = field k of data[32i + b], field k at bits (6 - 2k)..(7 - 2k); code = field
// - 1.
void UnpackI2S(const uint8_t* data, uint64_t n, int8_t* out) {
  CheckBlocks(n, kI2SBlock, "I2_S");
  for (uint64_t block = 0; block < n / kI2SBlock; ++block) {
    const uint8_t* bytes = data + block * (kI2SBlock / 4);
    int8_t* values = out + block * kI2SBlock;
    for (int b = 0; b < 32; ++b) {
      for (int k = 0; k < 4; ++k) values[32 * k + b] = BitsToCode((bytes[b] >> (6 - 2 * k)) & 3);
    }
  }
}

// scale = little-endian f32 at byte offset n/4.
float I2SScale(const uint8_t* data, uint64_t n) {
  CheckBlocks(n, kI2SBlock, "I2_S");
  float scale;
  std::memcpy(&scale, data + n / 4, sizeof(scale));
  return scale;
}

// data[32i + b] = sum_k (values[128i + 32k + b] + 1) << (6 - 2k); then f32 scale; then 28 zeros.
void PackI2S(const int8_t* values, uint64_t n, float scale, uint8_t* out) {
  CheckBlocks(n, kI2SBlock, "I2_S");
  for (uint64_t block = 0; block < n / kI2SBlock; ++block) {
    const int8_t* v = values + block * kI2SBlock;
    uint8_t* bytes = out + block * (kI2SBlock / 4);
    for (int b = 0; b < 32; ++b) {
      uint8_t byte = 0;
      for (int k = 0; k < 4; ++k) {
        const uint64_t index = block * kI2SBlock + 32 * k + b;
        byte |= static_cast<uint8_t>(CodeToBits(v[32 * k + b], index, "I2_S") << (6 - 2 * k));
      }
      bytes[b] = byte;
    }
  }
  std::memcpy(out + n / 4, &scale, sizeof(scale));
  std::memset(out + n / 4 + sizeof(scale), 0, 28);
}

std::vector<uint8_t> PackI2S(const int8_t* values, uint64_t n, float scale) {
  CheckBlocks(n, kI2SBlock, "I2_S");
  std::vector<uint8_t> out(n / 4 + 32);
  PackI2S(values, n, scale, out.data());
  return out;
}

// ---- TQ2_0
// ---------------------------------------------------------------------------------------- out[256i
// + 128h + 32l + m] = ((qs[32h + m] >> 2l) & 3) - 1;  block_scales[i] = f16 d.
void UnpackTQ2_0(const uint8_t* data, uint64_t n, int8_t* out, float* block_scales) {
  CheckBlocks(n, kTQBlock, "TQ2_0");
  for (uint64_t block = 0; block < n / kTQBlock; ++block) {
    const uint8_t* qs = data + block * kTQ2_0BlockBytes;
    int8_t* values = out + block * kTQBlock;
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 4; ++l) {
        for (int m = 0; m < 32; ++m)
          values[128 * h + 32 * l + m] = BitsToCode((qs[32 * h + m] >> (2 * l)) & 3);
      }
    }
    if (block_scales != nullptr) block_scales[block] = Fp16ToFp32(LoadU16(qs + kTQ2DOffset));
  }
}

// qs[32h + m] = sum_l (values[128h + 32l + m] + 1) << 2l;  d = f16(block_scales[i]).
void PackTQ2_0(const int8_t* values, uint64_t n, const float* block_scales, uint8_t* out) {
  CheckBlocks(n, kTQBlock, "TQ2_0");
  for (uint64_t block = 0; block < n / kTQBlock; ++block) {
    const int8_t* v = values + block * kTQBlock;
    uint8_t* qs = out + block * kTQ2_0BlockBytes;
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 32; ++m) {
        uint8_t byte = 0;
        for (int l = 0; l < 4; ++l) {
          const int index = 128 * h + 32 * l + m;
          byte |= static_cast<uint8_t>(CodeToBits(v[index], block * kTQBlock + index, "TQ2_0")
                                       << (2 * l));
        }
        qs[32 * h + m] = byte;
      }
    }
    StoreU16(qs + kTQ2DOffset, Fp32ToFp16(block_scales[block]));
  }
}

// ---- TQ1_0
// ---------------------------------------------------------------------------------------- Decoded
// exactly as ggml's dequantize_row_tq1_0 (pow3 multiply, uint8 wrap), so any byte value, including
// ones the encoder never writes, gives the same code as in llama.cpp.
void UnpackTQ1_0(const uint8_t* data, uint64_t n, int8_t* out, float* block_scales) {
  CheckBlocks(n, kTQBlock, "TQ1_0");
  for (uint64_t block = 0; block < n / kTQBlock; ++block) {
    const uint8_t* b = data + block * kTQ1_0BlockBytes;
    int8_t* values = out + block * kTQBlock;
    for (int t = 0; t < 5; ++t) {
      for (int m = 0; m < 32; ++m)
        values[32 * t + m] = static_cast<int8_t>(DecodeTrit(b[m], t) - 1);
    }
    for (int t = 0; t < 5; ++t) {
      for (int m = 0; m < 16; ++m) {
        values[160 + 16 * t + m] = static_cast<int8_t>(DecodeTrit(b[32 + m], t) - 1);
      }
    }
    for (int t = 0; t < 4; ++t) {
      for (int j = 0; j < 4; ++j) {
        values[240 + 4 * t + j] = static_cast<int8_t>(DecodeTrit(b[kTQ1QhOffset + j], t) - 1);
      }
    }
    if (block_scales != nullptr) block_scales[block] = Fp16ToFp32(LoadU16(b + kTQ1DOffset));
  }
}

// qs[m]      = enc(v[m], v[m+32], v[m+64], v[m+96], v[m+128])              m = 0..31
// qs[32 + m] = enc(v[160+m], v[176+m], v[192+m], v[208+m], v[224+m])        m = 0..15
// qh[j]      = enc(v[240+j], v[244+j], v[248+j], v[252+j], 0-trit)          j = 0..3
// enc(t0..t4) = ceil((((t0*3 + t1)*3 + t2)*3 + t3)*3 + t4) * 256 / 243), t = code + 1.
void PackTQ1_0(const int8_t* values, uint64_t n, const float* block_scales, uint8_t* out) {
  CheckBlocks(n, kTQBlock, "TQ1_0");
  for (uint64_t block = 0; block < n / kTQBlock; ++block) {
    const int8_t* v = values + block * kTQBlock;
    uint8_t* b = out + block * kTQ1_0BlockBytes;
    const uint64_t base = block * kTQBlock;
    uint8_t trits[5];
    for (int m = 0; m < 32; ++m) {
      for (int t = 0; t < 5; ++t) trits[t] = CodeToBits(v[32 * t + m], base + 32 * t + m, "TQ1_0");
      b[m] = EncodeTrits5(trits);
    }
    for (int m = 0; m < 16; ++m) {
      for (int t = 0; t < 5; ++t) {
        const int index = 160 + 16 * t + m;
        trits[t] = CodeToBits(v[index], base + index, "TQ1_0");
      }
      b[32 + m] = EncodeTrits5(trits);
    }
    for (int j = 0; j < 4; ++j) {
      for (int t = 0; t < 4; ++t) {
        const int index = 240 + 4 * t + j;
        trits[t] = CodeToBits(v[index], base + index, "TQ1_0");
      }
      trits[4] = 0;
      b[kTQ1QhOffset + j] = EncodeTrits5(trits);
    }
    StoreU16(b + kTQ1DOffset, Fp32ToFp16(block_scales[block]));
  }
}

// ---- BitNet b1.58 abs-mean ternarisation
// ---------------------------------------------------------- s = max(mean(|W|), 1e-5) (sum in
// double, s rounded to float); code = clamp(round_half_even(W / s), -1, 1), W / s in float. NaN
// weights give code 0.
float TernarizeAbsMean(const float* w, uint64_t n, int8_t* codes) {
  double sum_abs = 0.0;
  for (uint64_t i = 0; i < n; ++i) sum_abs += std::fabs(static_cast<double>(w[i]));
  const double mean_abs = n == 0 ? 0.0 : sum_abs / static_cast<double>(n);
  const float s = static_cast<float>(std::max(mean_abs, 1e-5));
  for (uint64_t i = 0; i < n; ++i) {
    const float r = std::nearbyint(w[i] / s);  // default rounding mode: ties to even
    codes[i] = r > 0.5f ? 1 : (r < -0.5f ? -1 : 0);
  }
  return s;
}

float TernarizeDense(const float* w, uint64_t n, int8_t* codes) {
  float level = 0.0f;
  bool ternary = true;
  for (uint64_t i = 0; i < n && ternary; ++i) {
    const float a = std::fabs(w[i]);
    if (a == 0.0f) continue;
    if (level == 0.0f) level = a;
    ternary = a == level && std::isfinite(a);
  }
  if (ternary && level != 0.0f) {
    for (uint64_t i = 0; i < n; ++i) codes[i] = w[i] > 0.0f ? 1 : (w[i] < 0.0f ? -1 : 0);
    return level;
  }
  return TernarizeAbsMean(w, n, codes);
}

}  // namespace trinity::quant
