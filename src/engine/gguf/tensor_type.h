// Tensor element types Trinity knows, and how the raw GGUF type ids map onto them.
//
// Microsoft's BitNet fork reuses ids that mainline ggml gives to other types (I2_S is 36 there).
// The id is therefore resolved together with the file's architecture: for `bitnet-b1.58` and
// `bitnet-25` id 36 is I2_S; elsewhere the mainline table applies.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace trinity {

enum class TensorType {
  kUnknown,
  kF32,
  kF16,
  kBF16,
  kF64,
  kI8,
  kI16,
  kI32,
  kI64,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ8_1,
  kQ2_K,
  kQ3_K,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kQ8_K,
  kIQ2_XXS,
  kIQ2_XS,
  kIQ3_XXS,
  kIQ1_S,
  kIQ4_NL,
  kIQ3_S,
  kIQ2_S,
  kIQ4_XS,
  kIQ1_M,
  kTQ1_0,
  kTQ2_0,
  kMXFP4,
  kI2_S,  // Microsoft: 2-bit ternary, 128-value blocks, one f32 scale after the data
};

// Raw ids as written to files.
inline constexpr uint32_t kGgmlTypeF32 = 0;
inline constexpr uint32_t kGgmlTypeF16 = 1;
inline constexpr uint32_t kGgmlTypeQ8_0 = 8;
inline constexpr uint32_t kGgmlTypeQ6_K = 14;
inline constexpr uint32_t kGgmlTypeBF16 = 30;
inline constexpr uint32_t kGgmlTypeTQ1_0 = 34;
inline constexpr uint32_t kGgmlTypeTQ2_0 = 35;
inline constexpr uint32_t kBitnetTypeI2_S = 36;  // Microsoft's fork only

struct TensorTypeTraits {
  std::string_view name;
  uint32_t block_values;  // values per block (1 for plain types)
  uint32_t block_bytes;   // bytes per block
};

// Traits of a type (kUnknown gives {"unknown", 0, 0}).
const TensorTypeTraits& Traits(TensorType type);

// Resolves a raw id in the context of an architecture name. nullopt when unknown.
std::optional<TensorType> ResolveTensorType(uint32_t type_id, std::string_view architecture);

// True for architectures written by Microsoft's BitNet tools (which use their own type ids).
bool IsMicrosoftBitnetArch(std::string_view architecture);

// Bytes a tensor of `n_values` values occupies, or nullopt when n_values is not a whole number of
// blocks or the result overflows. I2_S: n/4 + 32 (packed codes, f32 scale, 28 padding bytes).
std::optional<uint64_t> TensorBytes(TensorType type, uint64_t n_values);

}  // namespace trinity
