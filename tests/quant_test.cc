// Tests of the exact weight formats in engine/quant: hand-made byte examples derived from the
// format descriptions (docs/bitnet-b1.58.md, ggml-common.h / ggml-quants.c), round trips on random
// data, and independent sequential decoders written the way ggml's reference loops emit values.
#include "engine/quant/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/common/error.h"
#include "engine/common/fp16.h"

namespace trinity::quant {
namespace {

std::vector<int8_t> RandomCodes(uint64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-1, 1);
  std::vector<int8_t> codes(n);
  for (auto& c : codes) c = static_cast<int8_t>(dist(rng));
  return codes;
}

uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

float RoundTripF16(float x) { return Fp16ToFp32(Fp32ToFp16(x)); }

// ---- I2_S
// -----------------------------------------------------------------------------------------

// One block of 128 values: 0..31 = +1, 32..63 = 0, 64..95 = -1, 96..127 = +1, so every byte is
// 10 01 00 10 = 0x92; then three values changed by hand.
TEST(I2S, HandMadeBlock) {
  std::vector<int8_t> values(128);
  for (int j = 0; j < 128; ++j) values[j] = j < 32 ? 1 : j < 64 ? 0 : j < 96 ? -1 : 1;
  values[0] = -1;   // byte 0, bits 7-6: 00            -> 0x12
  values[127] = 0;  // byte 31, bits 1-0: 01           -> 0x91
  values[69] = 1;   // byte 5 (69 = 64 + 5), bits 3-2: 10 -> 0x9a
  std::vector<uint8_t> expected(64, 0x92);
  expected[0] = 0x12;
  expected[31] = 0x91;
  expected[5] = 0x9a;
  // scale 0.5f = 0x3f000000, little endian, then 28 zero bytes
  expected[32] = 0x00;
  expected[33] = 0x00;
  expected[34] = 0x00;
  expected[35] = 0x3f;
  for (int i = 36; i < 64; ++i) expected[i] = 0;

  const std::vector<uint8_t> packed = PackI2S(values.data(), 128, 0.5f);
  EXPECT_EQ(packed, expected);

  std::vector<int8_t> unpacked(128);
  UnpackI2S(expected.data(), 128, unpacked.data());
  EXPECT_EQ(unpacked, values);
  EXPECT_EQ(I2SScale(expected.data(), 128), 0.5f);
}

// Second block of a 256-value tensor: byte 32 + 1 holds values 129, 161, 193, 225.
TEST(I2S, SecondBlockAndInvalidCode) {
  std::vector<uint8_t> data(256 / 4 + 32, 0x55);  // 01 01 01 01: all zero codes
  data[33] = 0x27;                                // 00 10 01 11: -1, +1, 0, (3 -> 0)
  const float scale = -1.25f;
  std::memcpy(&data[64], &scale, 4);
  std::vector<int8_t> out(256, 7);
  UnpackI2S(data.data(), 256, out.data());
  for (int v = 0; v < 256; ++v) {
    const int expected = v == 129 ? -1 : v == 161 ? 1 : 0;
    EXPECT_EQ(out[v], expected) << "value " << v;
  }
  EXPECT_EQ(I2SScale(data.data(), 256), -1.25f);

  std::vector<uint8_t> all_three(128 / 4 + 32, 0xff);
  std::vector<int8_t> zeros(128);
  UnpackI2S(all_three.data(), 128, zeros.data());
  for (int8_t c : zeros) EXPECT_EQ(c, 0);
}

TEST(I2S, RoundTripManySizes) {
  std::mt19937 rng(1);
  for (uint64_t blocks : {1, 2, 3, 5, 8, 20, 37, 80, 160}) {
    const uint64_t n = blocks * kI2SBlock;
    const std::vector<int8_t> codes = RandomCodes(n, rng);
    const float scale = std::uniform_real_distribution<float>(1e-3f, 2.f)(rng);
    std::vector<uint8_t> packed(n / 4 + 32, 0xee);
    PackI2S(codes.data(), n, scale, packed.data());
    EXPECT_EQ(PackI2S(codes.data(), n, scale), packed);
    for (uint64_t i = n / 4 + 4; i < n / 4 + 32; ++i) EXPECT_EQ(packed[i], 0) << i;
    // Independent decode from the documented rule: value 128i + 32k + b at byte 32i + b, bits 7-2k.
    for (uint64_t v = 0; v < n; ++v) {
      const uint64_t r = v % 128;
      const int field = (packed[v / 128 * 32 + r % 32] >> (6 - 2 * (r / 32))) & 3;
      ASSERT_EQ(field - 1, codes[v]) << "n " << n << " value " << v;
    }
    std::vector<int8_t> unpacked(n);
    UnpackI2S(packed.data(), n, unpacked.data());
    EXPECT_EQ(unpacked, codes);
    EXPECT_EQ(I2SScale(packed.data(), n), scale);
  }
}

TEST(I2S, Errors) {
  std::vector<int8_t> codes(128, 0);
  EXPECT_THROW(PackI2S(codes.data(), 100, 1.f), Error);
  codes[17] = 2;
  EXPECT_THROW(PackI2S(codes.data(), 128, 1.f), Error);
  std::vector<uint8_t> data(64);
  std::vector<int8_t> out(128);
  EXPECT_THROW(UnpackI2S(data.data(), 64, out.data()), Error);
}

// ---- TQ2_0
// ----------------------------------------------------------------------------------------

// ggml's dequantize_row_tq2_0 emits, for j in {0, 32}, l in 0..3, m in 0..31: (qs[j+m] >> 2l) & 3.
std::vector<int> SequentialTQ2Fields(const uint8_t* block) {
  std::vector<int> fields;
  for (int j = 0; j < 64; j += 32) {
    for (int l = 0; l < 4; ++l) {
      for (int m = 0; m < 32; ++m) fields.push_back((block[j + m] >> (2 * l)) & 3);
    }
  }
  return fields;
}

TEST(TQ2_0, HandMadeBlock) {
  std::vector<int8_t> values(256, 0);  // field 01 everywhere: bytes 0x55
  values[0] = 1;                       // qs[0] bits 1-0 = 10           -> 0x56
  values[32 + 3] = -1;                 // qs[3] bits 3-2 = 00 (l = 1)   -> 0x51
  values[128 + 96 + 7] = 1;            // qs[32 + 7] bits 7-6 = 10      -> 0x95
  std::vector<uint8_t> expected(kTQ2_0BlockBytes, 0x55);
  expected[0] = 0x56;
  expected[3] = 0x51;
  expected[39] = 0x95;
  expected[64] = 0x00;  // d = 0.5 = f16 0x3800
  expected[65] = 0x38;
  const float scale = 0.5f;
  std::vector<uint8_t> packed(kTQ2_0BlockBytes);
  PackTQ2_0(values.data(), 256, &scale, packed.data());
  EXPECT_EQ(packed, expected);

  std::vector<int8_t> unpacked(256);
  float d = 0;
  UnpackTQ2_0(expected.data(), 256, unpacked.data(), &d);
  EXPECT_EQ(unpacked, values);
  EXPECT_EQ(d, 0.5f);
}

TEST(TQ2_0, RoundTripRandom) {
  std::mt19937 rng(2);
  for (uint64_t blocks : {1, 2, 3, 7, 16, 33}) {
    const uint64_t n = blocks * kTQBlock;
    const std::vector<int8_t> codes = RandomCodes(n, rng);
    std::vector<float> scales(blocks);
    for (auto& s : scales)
      s = std::ldexp(std::uniform_real_distribution<float>(-1.f, 1.f)(rng), -int(rng() % 20));
    std::vector<uint8_t> packed(blocks * kTQ2_0BlockBytes);
    PackTQ2_0(codes.data(), n, scales.data(), packed.data());
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = packed.data() + b * kTQ2_0BlockBytes;
      const std::vector<int> fields = SequentialTQ2Fields(block);
      for (int j = 0; j < 256; ++j) ASSERT_EQ(fields[j] - 1, codes[b * 256 + j]);
      EXPECT_EQ(LoadU16(block + 64), Fp32ToFp16(scales[b]));
    }
    std::vector<int8_t> unpacked(n);
    std::vector<float> d(blocks);
    UnpackTQ2_0(packed.data(), n, unpacked.data(), d.data());
    EXPECT_EQ(unpacked, codes);
    for (uint64_t b = 0; b < blocks; ++b) EXPECT_EQ(d[b], RoundTripF16(scales[b]));

    std::vector<float> row(n);
    DequantizeRow(TensorType::kTQ2_0, packed.data(), n, row.data());
    for (uint64_t j = 0; j < n; ++j) ASSERT_EQ(row[j], static_cast<float>(codes[j]) * d[j / 256]);
  }
}

// ---- TQ1_0
// ----------------------------------------------------------------------------------------

// ggml's dequantize_row_tq1_0, as it emits values (*y++): qs[0..31] five trits each along 32,
// qs[32..47] five trits along 16, then qh[0..3] four trits along 4; trit n of byte q is
// ((uint8_t)(q * 3^n) * 3) >> 8.
std::vector<int> SequentialTQ1Trits(const uint8_t* block) {
  const uint8_t pow3[5] = {1, 3, 9, 27, 81};
  auto trit = [&](uint8_t q, int n) { return (static_cast<uint8_t>(q * pow3[n]) * 3) >> 8; };
  std::vector<int> trits;
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 32; ++m) trits.push_back(trit(block[m], n));
  }
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 16; ++m) trits.push_back(trit(block[32 + m], n));
  }
  for (int n = 0; n < 4; ++n) {
    for (int j = 0; j < 4; ++j) trits.push_back(trit(block[48 + j], n));
  }
  return trits;
}

// All zero codes: qs bytes hold trits 1,1,1,1,1 -> q = 121 -> ceil(121 * 256 / 243) = 128;
// qh bytes hold 1,1,1,1 and a zero fifth trit -> q = 120 -> ceil(120 * 256 / 243) = 127.
TEST(TQ1_0, HandMadeBlock) {
  std::vector<int8_t> values(256, 0);
  values[0] = 1;     // qs[0] trit 0
  values[128] = -1;  // qs[0] trit 4: trits 2,1,1,1,0 -> q = 201 -> ceil(51456 / 243) = 212
  values[197] =
      -1;  // 160 + 16*2 + 5: qs[37] trit 2: 1,1,0,1,1 -> q = 112 -> ceil(28672 / 243) = 118
  values[254] = 1;  // 240 + 4*3 + 2: qh[2] trit 3: 1,1,1,2,0 -> q = 123 -> ceil(31488 / 243) = 130
  std::vector<uint8_t> expected(kTQ1_0BlockBytes, 128);
  for (int j = 48; j < 52; ++j) expected[j] = 127;
  expected[0] = 212;
  expected[37] = 118;
  expected[50] = 130;
  expected[52] = 0x00;  // d = -2.5 = f16 0xc100
  expected[53] = 0xc1;
  const float scale = -2.5f;
  std::vector<uint8_t> packed(kTQ1_0BlockBytes);
  PackTQ1_0(values.data(), 256, &scale, packed.data());
  EXPECT_EQ(packed, expected);

  std::vector<int8_t> unpacked(256);
  float d = 0;
  UnpackTQ1_0(expected.data(), 256, unpacked.data(), &d);
  EXPECT_EQ(unpacked, values);
  EXPECT_EQ(d, -2.5f);
  const std::vector<int> trits = SequentialTQ1Trits(expected.data());
  for (int j = 0; j < 256; ++j) EXPECT_EQ(trits[j] - 1, values[j]) << j;
}

TEST(TQ1_0, RoundTripRandom) {
  std::mt19937 rng(3);
  for (uint64_t blocks : {1, 2, 3, 7, 16, 33}) {
    const uint64_t n = blocks * kTQBlock;
    const std::vector<int8_t> codes = RandomCodes(n, rng);
    std::vector<float> scales(blocks);
    for (auto& s : scales)
      s = std::ldexp(std::uniform_real_distribution<float>(-1.f, 1.f)(rng), -int(rng() % 20));
    std::vector<uint8_t> packed(blocks * kTQ1_0BlockBytes);
    PackTQ1_0(codes.data(), n, scales.data(), packed.data());
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = packed.data() + b * kTQ1_0BlockBytes;
      const std::vector<int> trits = SequentialTQ1Trits(block);
      for (int j = 0; j < 256; ++j) ASSERT_EQ(trits[j] - 1, codes[b * 256 + j]) << j;
      EXPECT_EQ(LoadU16(block + 52), Fp32ToFp16(scales[b]));
    }
    std::vector<int8_t> unpacked(n);
    std::vector<float> d(blocks);
    UnpackTQ1_0(packed.data(), n, unpacked.data(), d.data());
    EXPECT_EQ(unpacked, codes);
    for (uint64_t b = 0; b < blocks; ++b) EXPECT_EQ(d[b], RoundTripF16(scales[b]));

    std::vector<float> row(n);
    DequantizeRow(TensorType::kTQ1_0, packed.data(), n, row.data());
    for (uint64_t j = 0; j < n; ++j) ASSERT_EQ(row[j], static_cast<float>(codes[j]) * d[j / 256]);
  }
}

// Any byte content (also bytes the encoder never writes, e.g. a qh with a non-zero fifth trit)
// decodes as ggml decodes it.
TEST(TQ1_0, ArbitraryBytesDecodeLikeGgml) {
  std::mt19937 rng(4);
  std::vector<uint8_t> data(8 * kTQ1_0BlockBytes);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (int b = 0; b < 8; ++b) {  // keep d finite
    data[b * kTQ1_0BlockBytes + 52] = static_cast<uint8_t>(rng());
    data[b * kTQ1_0BlockBytes + 53] = 0x3c;
  }
  std::vector<int8_t> out(8 * 256);
  std::vector<float> d(8);
  UnpackTQ1_0(data.data(), out.size(), out.data(), d.data());
  for (int b = 0; b < 8; ++b) {
    const std::vector<int> trits = SequentialTQ1Trits(data.data() + b * kTQ1_0BlockBytes);
    for (int j = 0; j < 256; ++j) ASSERT_EQ(trits[j] - 1, out[b * 256 + j]);
    EXPECT_EQ(d[b], Fp16ToFp32(LoadU16(data.data() + b * kTQ1_0BlockBytes + 52)));
  }
  // Every byte value gives trits in 0..2 and survives a re-encode of its own decode where the
  // byte is canonical (the encoder's output for 0..242).
  for (int q = 0; q < 243; ++q) {
    const uint8_t byte = static_cast<uint8_t>((q * 256 + 242) / 243);
    std::vector<uint8_t> block(kTQ1_0BlockBytes, byte);
    const std::vector<int> trits = SequentialTQ1Trits(block.data());
    int value = 0;
    for (int n = 0; n < 5; ++n) value = value * 3 + trits[32 * n];
    EXPECT_EQ(value, q);
  }
}

TEST(TQ, Errors) {
  std::vector<int8_t> codes(256, 0);
  const float scale = 1.f;
  std::vector<uint8_t> out(kTQ2_0BlockBytes);
  EXPECT_THROW(PackTQ2_0(codes.data(), 128, &scale, out.data()), Error);
  EXPECT_THROW(PackTQ1_0(codes.data(), 128, &scale, out.data()), Error);
  codes[255] = -2;
  EXPECT_THROW(PackTQ2_0(codes.data(), 256, &scale, out.data()), Error);
  EXPECT_THROW(PackTQ1_0(codes.data(), 256, &scale, out.data()), Error);
}

// ---- F32 / F16 / BF16
// -----------------------------------------------------------------------------

TEST(Dense, F16HandValuesAndExactness) {
  const float x[] = {1.0f, -2.0f, 65504.0f, 1e-7f, 0.0f, -0.0f, 1e6f, 0.333333343f};
  const std::vector<uint8_t> bytes = ToF16(x, 8);
  const uint16_t expected[] = {0x3c00, 0xc000, 0x7bff, 0x0002, 0x0000, 0x8000, 0x7c00, 0x3555};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(LoadU16(&bytes[2 * i]), expected[i]) << i;

  // Every non-NaN f16 bit pattern decodes and re-encodes to itself.
  std::vector<uint8_t> all(2 * 65536);
  for (int h = 0; h < 65536; ++h) {
    all[2 * h] = static_cast<uint8_t>(h & 0xff);
    all[2 * h + 1] = static_cast<uint8_t>(h >> 8);
  }
  std::vector<float> f(65536);
  DequantizeRow(TensorType::kF16, all.data(), 65536, f.data());
  EXPECT_EQ(f[0x0001], std::ldexp(1.0f, -24));
  EXPECT_EQ(f[0x3c00], 1.0f);
  EXPECT_EQ(f[0xfc00], -std::numeric_limits<float>::infinity());
  const std::vector<uint8_t> back = ToF16(f.data(), 65536);
  for (int h = 0; h < 65536; ++h) {
    if (std::isnan(f[h])) continue;
    ASSERT_EQ(LoadU16(&back[2 * h]), h) << h;
  }
}

TEST(Dense, Bf16AndF32) {
  const uint8_t bf16[] = {0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40, 0x80, 0xff};
  float out[4];
  DequantizeRow(TensorType::kBF16, bf16, 4, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 3.140625f);
  EXPECT_EQ(out[3], -std::numeric_limits<float>::infinity());

  const float f[] = {1.5f, -0.1f, 3e38f};
  float g[3];
  DequantizeRow(TensorType::kF32, reinterpret_cast<const uint8_t*>(f), 3, g);
  EXPECT_EQ(std::memcmp(f, g, sizeof(f)), 0);
}

TEST(Dense, CanDequantize) {
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                       TensorType::kQ6_K, TensorType::kTQ1_0, TensorType::kTQ2_0}) {
    EXPECT_TRUE(CanDequantize(t));
  }
  for (TensorType t :
       {TensorType::kUnknown, TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kI2_S}) {
    EXPECT_FALSE(CanDequantize(t));
    std::vector<uint8_t> data(1024);
    std::vector<float> out(256);
    EXPECT_THROW(DequantizeRow(t, data.data(), 256, out.data()), Error);
  }
  std::vector<uint8_t> data(1024);
  std::vector<float> out(256);
  EXPECT_THROW(DequantizeRow(TensorType::kQ8_0, data.data(), 31, out.data()), Error);
  EXPECT_THROW(DequantizeRow(TensorType::kQ6_K, data.data(), 128, out.data()), Error);
}

// ---- Q8_0
// -----------------------------------------------------------------------------------------

// amax = 127 gives d = 1 exactly (f16 0x3c00) and q = roundf(x): ties go away from zero.
TEST(Q8_0, HandMadeBlock) {
  std::vector<float> x(32, 0.f);
  x[0] = 127.f;
  x[1] = -2.5f;
  x[2] = 2.5f;
  x[3] = 0.49f;
  x[4] = -100.f;
  x[31] = -126.5f;
  const std::vector<uint8_t> q = QuantizeQ8_0(x.data(), 32);
  ASSERT_EQ(q.size(), 34u);
  EXPECT_EQ(q[0], 0x00);
  EXPECT_EQ(q[1], 0x3c);
  const int8_t expected[] = {127, -3, 3, 0, -100};
  for (int j = 0; j < 5; ++j) EXPECT_EQ(static_cast<int8_t>(q[2 + j]), expected[j]) << j;
  EXPECT_EQ(static_cast<int8_t>(q[2 + 31]), -127);
  std::vector<float> y(32);
  DequantizeRow(TensorType::kQ8_0, q.data(), 32, y.data());
  EXPECT_EQ(y[1], -3.f);
  EXPECT_EQ(y[31], -127.f);

  const std::vector<float> zeros(64, 0.f);
  const std::vector<uint8_t> qz = QuantizeQ8_0(zeros.data(), 64);
  for (uint8_t b : qz) EXPECT_EQ(b, 0);
}

TEST(Q8_0, RoundTripErrorBound) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 1.f);
  const uint64_t n = 32 * 100;
  std::vector<float> x(n);
  for (uint64_t i = 0; i < n; ++i)
    x[i] = dist(rng) * std::ldexp(1.f, static_cast<int>(i / 32 % 9) - 4);
  const std::vector<uint8_t> q = QuantizeQ8_0(x.data(), n);
  ASSERT_EQ(q.size(), n / 32 * 34);
  std::vector<float> y(n);
  DequantizeRow(TensorType::kQ8_0, q.data(), n, y.data());
  for (uint64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127;
    // rounding (d / 2) plus the f16 rounding of d (relative 2^-11, times |q| <= 127)
    const float bound = d * (0.5f + 127.f / 2048.f) * 1.0001f;
    for (int j = 0; j < 32; ++j) ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound);
  }
}

// ---- Q6_K
// -----------------------------------------------------------------------------------------

// d = 0.5, scales[g] = g - 8 except scales[15] = -128; all ql/qh zero (q = -32) except:
//   ql[5] = 0x3a, qh[5] = 0xe4 (11 10 01 00):
//     y[5]   = (0xa | 0 << 4) - 32 = -22, scale[0] = -8  ->  88
//     y[37]  = (0x0 | 1 << 4) - 32 = -16, scale[2] = -6  ->  48
//     y[69]  = (0x3 | 2 << 4) - 32 =   3, scale[4] = -4  ->  -6
//     y[101] = (0x0 | 3 << 4) - 32 =  16, scale[6] = -2  -> -16
//   second half (ql + 64, qh + 32): ql[84] = 0xf1, qh[52] = 0x1b (00 01 10 11), l = 20, is = 1:
//     y[148] = (0x1 | 3 << 4) - 32 =  17, scale[9]  =  1 ->  8.5
//     y[180] = (0x0 | 2 << 4) - 32 =   0, scale[11] =  3 ->  0
//     y[212] = (0xf | 1 << 4) - 32 =  -1, scale[13] =  5 -> -2.5
//     y[244] = (0x0 | 0 << 4) - 32 = -32, scale[15] = -128 -> 2048
TEST(Q6_K, HandMadeBlock) {
  std::vector<uint8_t> block(kQ6_KBlockBytes, 0);
  uint8_t* ql = block.data();
  uint8_t* qh = block.data() + 128;
  auto* scales = reinterpret_cast<int8_t*>(block.data() + 192);
  for (int g = 0; g < 16; ++g) scales[g] = static_cast<int8_t>(g - 8);
  scales[15] = -128;
  block[208] = 0x00;  // d = 0.5
  block[209] = 0x38;
  ql[5] = 0x3a;
  qh[5] = 0xe4;
  ql[84] = 0xf1;
  qh[52] = 0x1b;
  std::vector<float> y(256);
  DequantizeRow(TensorType::kQ6_K, block.data(), 256, y.data());
  std::vector<float> expected(256);
  for (int v = 0; v < 256; ++v) expected[v] = 0.5f * static_cast<float>(scales[v / 16]) * -32.f;
  expected[5] = 88.f;
  expected[37] = 48.f;
  expected[69] = -6.f;
  expected[101] = -16.f;
  expected[148] = 8.5f;
  expected[180] = 0.f;
  expected[212] = -2.5f;
  expected[244] = 2048.f;
  EXPECT_EQ(expected[0], 128.f);
  for (int v = 0; v < 256; ++v) EXPECT_EQ(y[v], expected[v]) << v;
}

TEST(Q6_K, RoundTripErrorBound) {
  std::mt19937 rng(6);
  std::normal_distribution<float> dist(0.f, 1.f);
  const uint64_t n = 256 * 40;
  std::vector<float> x(n);
  for (uint64_t i = 0; i < n; ++i) {
    // vary the magnitude per block and per 16-value group
    x[i] = dist(rng) * std::ldexp(1.f, static_cast<int>(i / 256 % 7) - 3) *
           (1.f + static_cast<float>(i / 16 % 4));
  }
  const std::vector<uint8_t> q = QuantizeQ6_K(x.data(), n);
  ASSERT_EQ(q.size(), n / 256 * kQ6_KBlockBytes);
  std::vector<float> y(n);
  DequantizeRow(TensorType::kQ6_K, q.data(), n, y.data());
  double err2 = 0, sig2 = 0;
  for (uint64_t b = 0; b < n / 256; ++b) {
    float amax = 0;
    for (int j = 0; j < 256; ++j) amax = std::max(amax, std::fabs(x[b * 256 + j]));
    for (int j = 0; j < 256; ++j) {
      const float e = std::fabs(y[b * 256 + j] - x[b * 256 + j]);
      ASSERT_LE(e, amax / 40.f) << "block " << b << " value " << j;
      err2 += double(e) * e;
      sig2 += double(x[b * 256 + j]) * x[b * 256 + j];
    }
  }
  EXPECT_LT(std::sqrt(err2 / sig2), 0.02);

  // All-zero input: an all-zero block (d = 0) that decodes to zeros.
  const std::vector<float> zeros(256, 0.f);
  const std::vector<uint8_t> qz = QuantizeQ6_K(zeros.data(), 256);
  for (uint8_t byte : qz) EXPECT_EQ(byte, 0);
}

// Values on a 6-bit grid where every 16-value group reaches the same signed extreme (-8 = -32 *
// 0.25): every group scale is 0.25, d = -1/512, scales = -128, and the codes reproduce x exactly.
TEST(Q6_K, GridValuesExact) {
  std::mt19937 rng(8);
  std::vector<float> x(512);
  for (int j = 0; j < 512; ++j)
    x[j] = static_cast<float>(static_cast<int>(rng() % 64) - 32) * 0.25f;
  for (int g = 0; g < 32; ++g) x[16 * g + g % 16] = -8.f;
  const std::vector<uint8_t> q = QuantizeQ6_K(x.data(), 512);
  EXPECT_EQ(LoadU16(&q[208]), Fp32ToFp16(-1.f / 512));
  for (int g = 0; g < 16; ++g) EXPECT_EQ(static_cast<int8_t>(q[192 + g]), -128);
  std::vector<float> y(512);
  DequantizeRow(TensorType::kQ6_K, q.data(), 512, y.data());
  EXPECT_EQ(y, x);
}

// ---- TernarizeAbsMean
// ----------------------------------------------------------------------------

TEST(Ternarize, KnownVectorWithTies) {
  // mean |w| = 8 / 8 = 1; w / s = w; ties 0.5 and -0.5 round to even (0), 1.5 -> 2 -> clamp 1.
  const float w[] = {0.5f, -0.5f, 1.5f, -1.5f, 0.25f, 2.0f, -0.75f, 1.0f};
  int8_t codes[8];
  EXPECT_EQ(TernarizeAbsMean(w, 8, codes), 1.0f);
  const int8_t expected[] = {0, 0, 1, -1, 0, 1, -1, 1};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(codes[i], expected[i]) << i;

  float w4[8];
  for (int i = 0; i < 8; ++i) w4[i] = w[i] * 0.25f;  // s = 0.25, same codes
  EXPECT_EQ(TernarizeAbsMean(w4, 8, codes), 0.25f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(codes[i], expected[i]) << i;
}

TEST(Ternarize, ZeroAndTinyInput) {
  const float zeros[4] = {0, 0, 0, 0};
  int8_t codes[4] = {5, 5, 5, 5};
  EXPECT_EQ(TernarizeAbsMean(zeros, 4, codes), 1e-5f);
  for (int8_t c : codes) EXPECT_EQ(c, 0);

  const float tiny[4] = {1e-7f, -1e-7f, 4e-6f, -6e-6f};  // mean 2.55e-6 floored to 1e-5
  EXPECT_EQ(TernarizeAbsMean(tiny, 4, codes), 1e-5f);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
  EXPECT_EQ(codes[2], 0);   // 0.4
  EXPECT_EQ(codes[3], -1);  // -0.6
}

TEST(Ternarize, RandomMatchesDefinition) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.f, 0.02f);
  std::vector<float> w(4096);
  for (auto& v : w) v = dist(rng);
  std::vector<int8_t> codes(w.size());
  const float s = TernarizeAbsMean(w.data(), w.size(), codes.data());
  double sum = 0;
  for (float v : w) sum += std::fabs(double(v));
  EXPECT_EQ(s, static_cast<float>(sum / w.size()));
  int counts[3] = {0, 0, 0};
  for (size_t i = 0; i < w.size(); ++i) {
    const float r = w[i] / s;
    const int expected = r > 0.5f ? 1 : r < -0.5f ? -1 : 0;  // no exact ties in random data
    ASSERT_EQ(codes[i], expected) << i;
    ++counts[codes[i] + 1];
  }
  for (int c : counts) EXPECT_GT(c, 500);  // a Gaussian gives roughly 31% / 38% / 31%
}

}  // namespace
}  // namespace trinity::quant
