// Exact (de)quantisation of the weight formats Trinity reads and writes.
//
// Ternary formats are unpacked to int8 codes in {-1, 0, +1} plus scales; the model loader turns
// every ternary format into the engine's one internal layout (see model/ternary.h). Dense formats
// are dequantised row by row to float. Everything here is plain scalar code and bit exact; it is
// the reference the fast kernels are tested against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/gguf/tensor_type.h"

namespace trinity::quant {

// Pack functions throw trinity::Error for a value outside {-1, 0, +1}; all functions throw when n
// is not a multiple of the format's block.

// ---- I2_S (Microsoft, x86 layout) -------------------------------------------------------------
// n values (n % 128 == 0) -> n/4 packed bytes, then one little-endian f32 scale, then 28 padding
// bytes. In block i (32 bytes), byte b holds values 128i+b (bits 7-6), +32 (5-4), +64 (3-2),
// +96 (1-0). Codes: -1 -> 0, 0 -> 1, +1 -> 2 (3 is invalid and decodes as 0).
inline constexpr int kI2SBlock = 128;
void UnpackI2S(const uint8_t* data, uint64_t n, int8_t* out);
float I2SScale(const uint8_t* data, uint64_t n);
// Writes n/4 + 32 bytes (padding bytes are zero).
void PackI2S(const int8_t* values, uint64_t n, float scale, uint8_t* out);
std::vector<uint8_t> PackI2S(const int8_t* values, uint64_t n, float scale);

// ---- TQ2_0 (mainline ggml): 256 values per block: uint8 qs[64]; f16 d ------------------------
// value = (q - 1) * d with q the 2-bit code. Byte qs[32h + m] (h = 0, 1) holds values
// 128h + 32l + m in bits 2l..2l+1 (first value in the low bits). q = 3 is never written by ggml;
// it decodes as 0 here, as in I2_S (ggml itself would compute +2).
inline constexpr int kTQBlock = 256;
inline constexpr int kTQ2_0BlockBytes = 66;
// out: n codes in {-1,0,1}; block_scales: n/256 floats (the f16 d of each block).
void UnpackTQ2_0(const uint8_t* data, uint64_t n, int8_t* out, float* block_scales);
void PackTQ2_0(const int8_t* values, uint64_t n, const float* block_scales, uint8_t* out);

// ---- TQ1_0 (mainline ggml): 256 values per block: uint8 qs[48]; uint8 qh[4]; f16 d ------------
// base-3 packing, order of ggml's quantize_row_tq1_0_ref / dequantize_row_tq1_0:
//   values   0..159: qs[m] (m < 32) holds values m + 32t,            trit t = 0..4
//   values 160..239: qs[32 + m] (m < 16) holds values 160 + m + 16t, trit t = 0..4
//   values 240..255: qh[j] (j < 4) holds values 240 + j + 4t,        trit t = 0..3 (trit 4 = 0)
// trit t0 is the most significant; byte = ceil(sum_t trit_t 3^(4-t) * 256 / 243) and trit t is
// read back as ((uint8_t)(byte * 3^t) * 3) >> 8; code = trit - 1.
inline constexpr int kTQ1_0BlockBytes = 54;
void UnpackTQ1_0(const uint8_t* data, uint64_t n, int8_t* out, float* block_scales);
void PackTQ1_0(const int8_t* values, uint64_t n, const float* block_scales, uint8_t* out);

// ---- dense rows ---------------------------------------------------------------------------------
// Q8_0 block: f16 d; int8 qs[32]. Q6_K block: uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d.
inline constexpr int kQ8_0Block = 32;
inline constexpr int kQ8_0BlockBytes = 34;
inline constexpr int kQ6_KBlock = 256;
inline constexpr int kQ6_KBlockBytes = 210;
// Dequantise n values (n a multiple of the type's block size) of a dense type to float:
// F32, F16, BF16, Q8_0, Q6_K, and TQ1_0/TQ2_0 (code * d). Throws trinity::Error for other types.
void DequantizeRow(TensorType type, const uint8_t* data, uint64_t n, float* out);
bool CanDequantize(TensorType type);

// Quantisers used by tools and tests, following ggml's quantize_row_{q8_0,q6_K}_ref step by step
// (Q8_0: d = amax / 127, q = roundf(x * (1 / d)); Q6_K: make_qx_quants search per 16 values).
// ToF16: 2n little-endian bytes, round to nearest even.
std::vector<uint8_t> QuantizeQ8_0(const float* x, uint64_t n);
std::vector<uint8_t> QuantizeQ6_K(const float* x, uint64_t n);
std::vector<uint8_t> ToF16(const float* x, uint64_t n);

// ---- BitNet b1.58 weight quantisation (training numerics) -------------------------------------
// s = mean(|W|) (floored at 1e-5 as in training), Wq = clamp(round(W / s), -1, 1).
// Returns s; writes the codes.
float TernarizeAbsMean(const float* w, uint64_t n, int8_t* codes);

// Ternarises dense (F32/F16/BF16) linear weights. Values that are already ternary (every non-zero
// |w| equal, as in llama.cpp's F16 BitNet files, which store codes * scale) keep that value as the
// scale, so loading them is exact; genuine master weights follow TernarizeAbsMean.
float TernarizeDense(const float* w, uint64_t n, int8_t* codes);

}  // namespace trinity::quant
