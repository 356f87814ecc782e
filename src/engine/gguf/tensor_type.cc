#include "engine/gguf/tensor_type.h"

#include <array>
#include <limits>

namespace trinity {
namespace {

constexpr uint32_t kNoId = std::numeric_limits<uint32_t>::max();

struct TypeEntry {
  TensorType type;
  uint32_t ggml_id;  // mainline ggml id, kNoId when the type has none
  TensorTypeTraits traits;
};

// The one list of types, in TensorType order. Sizes are sizeof(block_*) from ggml-common.h.
constexpr TypeEntry kTypes[] = {
    {TensorType::kUnknown, kNoId, {"unknown", 0, 0}},
    {TensorType::kF32, 0, {"F32", 1, 4}},
    {TensorType::kF16, 1, {"F16", 1, 2}},
    {TensorType::kBF16, 30, {"BF16", 1, 2}},
    {TensorType::kF64, 28, {"F64", 1, 8}},
    {TensorType::kI8, 24, {"I8", 1, 1}},
    {TensorType::kI16, 25, {"I16", 1, 2}},
    {TensorType::kI32, 26, {"I32", 1, 4}},
    {TensorType::kI64, 27, {"I64", 1, 8}},
    {TensorType::kQ4_0, 2, {"Q4_0", 32, 18}},
    {TensorType::kQ4_1, 3, {"Q4_1", 32, 20}},
    {TensorType::kQ5_0, 6, {"Q5_0", 32, 22}},
    {TensorType::kQ5_1, 7, {"Q5_1", 32, 24}},
    {TensorType::kQ8_0, 8, {"Q8_0", 32, 34}},
    {TensorType::kQ8_1, 9, {"Q8_1", 32, 36}},
    {TensorType::kQ2_K, 10, {"Q2_K", 256, 84}},
    {TensorType::kQ3_K, 11, {"Q3_K", 256, 110}},
    {TensorType::kQ4_K, 12, {"Q4_K", 256, 144}},
    {TensorType::kQ5_K, 13, {"Q5_K", 256, 176}},
    {TensorType::kQ6_K, 14, {"Q6_K", 256, 210}},
    {TensorType::kQ8_K, 15, {"Q8_K", 256, 292}},
    {TensorType::kIQ2_XXS, 16, {"IQ2_XXS", 256, 66}},
    {TensorType::kIQ2_XS, 17, {"IQ2_XS", 256, 74}},
    {TensorType::kIQ3_XXS, 18, {"IQ3_XXS", 256, 98}},
    {TensorType::kIQ1_S, 19, {"IQ1_S", 256, 50}},
    {TensorType::kIQ4_NL, 20, {"IQ4_NL", 32, 18}},
    {TensorType::kIQ3_S, 21, {"IQ3_S", 256, 110}},
    {TensorType::kIQ2_S, 22, {"IQ2_S", 256, 82}},
    {TensorType::kIQ4_XS, 23, {"IQ4_XS", 256, 136}},
    {TensorType::kIQ1_M, 29, {"IQ1_M", 256, 56}},
    {TensorType::kTQ1_0, 34, {"TQ1_0", 256, 54}},
    {TensorType::kTQ2_0, 35, {"TQ2_0", 256, 66}},
    {TensorType::kMXFP4, 39, {"MXFP4", 32, 17}},
    // 128 values in 32 bytes, plus one f32 scale and 28 padding bytes per tensor (not per block).
    {TensorType::kI2_S, kNoId, {"I2_S", 128, 32}},
};

constexpr bool TableInEnumOrder() {
  for (size_t i = 0; i < std::size(kTypes); ++i) {
    if (static_cast<size_t>(kTypes[i].type) != i) return false;
  }
  return static_cast<size_t>(TensorType::kI2_S) + 1 == std::size(kTypes);
}
static_assert(TableInEnumOrder(), "kTypes must list every TensorType in enum order");

constexpr uint64_t kI2sTrailerBytes = 32;  // f32 scale + 28 padding bytes

}  // namespace

const TensorTypeTraits& Traits(TensorType type) {
  const auto index = static_cast<size_t>(type);
  return index < std::size(kTypes) ? kTypes[index].traits : kTypes[0].traits;
}

bool IsMicrosoftBitnetArch(std::string_view architecture) {
  return architecture == "bitnet-b1.58" || architecture == "bitnet-25";
}

std::optional<TensorType> ResolveTensorType(uint32_t type_id, std::string_view architecture) {
  if (IsMicrosoftBitnetArch(architecture) && type_id >= kBitnetTypeI2_S) {
    // Microsoft's fork: 36 I2_S, 37 I8_S, 38 TL1, 39 TL2. Only I2_S is read.
    if (type_id == kBitnetTypeI2_S) return TensorType::kI2_S;
    return std::nullopt;
  }
  if (type_id == kNoId) return std::nullopt;
  for (const TypeEntry& entry : kTypes) {
    if (entry.ggml_id == type_id) return entry.type;
  }
  return std::nullopt;
}

std::optional<uint64_t> TensorBytes(TensorType type, uint64_t n_values) {
  const TensorTypeTraits& traits = Traits(type);
  if (traits.block_values == 0 || n_values % traits.block_values != 0) return std::nullopt;
  const uint64_t blocks = n_values / traits.block_values;
  if (blocks > std::numeric_limits<uint64_t>::max() / traits.block_bytes) return std::nullopt;
  uint64_t bytes = blocks * traits.block_bytes;
  if (type == TensorType::kI2_S) {
    if (bytes > std::numeric_limits<uint64_t>::max() - kI2sTrailerBytes) return std::nullopt;
    bytes += kI2sTrailerBytes;
  }
  return bytes;
}

}  // namespace trinity
