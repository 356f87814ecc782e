// Pre-tokenizers: split text into the pieces byte-level BPE encodes one at a time.
//
// Hand-written equivalents of the reference regexes (leftmost alternative wins, with the
// backtracking the regex engine would do), run over UTF-8 with invalid bytes treated as one-byte
// characters that are neither letters, numbers nor space.
//
// Llama 3:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// GPT-2:    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace trinity {

enum class PreTokenizerKind { kLlama3, kGpt2 };

// Maps tokenizer.ggml.pre to a pre-tokenizer: "llama-bpe", "llama3" and "" select Llama 3,
// "gpt2" selects GPT-2; anything else throws trinity::Error naming the value.
PreTokenizerKind PreTokenizerFor(std::string_view pre);

// End (exclusive) of the pre-token that starts at text[pos]; pos < text.size().
size_t NextPreToken(PreTokenizerKind kind, std::string_view text, size_t pos);

// All pre-tokens of `text`, as views into it (for tests and tools).
std::vector<std::string_view> PreTokenize(PreTokenizerKind kind, std::string_view text);

}  // namespace trinity
