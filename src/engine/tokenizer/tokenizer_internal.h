// Shared between the tokenizer's translation units (and its tests); not part of the module API.
#pragma once

#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"

namespace trinity {

// Checks what can be checked without building the vocabulary: model, pre, array sizes, token
// types, special ids, the "a b" form of every merge. Throws trinity::Error naming the GGUF key.
void ValidateTokenizerData(const TokenizerData& data);

// Raw bytes -> GPT-2 byte-level text (the form tokens and merges are stored in).
std::string ByteLevelEncode(std::string_view bytes);

}  // namespace trinity
