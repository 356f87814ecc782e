// The little Unicode the tokenizer needs: UTF-8 decoding that never fails (an invalid byte is a
// one-byte "character" of its own) and the three character classes the pre-tokenizer regexes
// test: \p{L}, \p{N} and \s.
//
// \p{L} and \p{N} come from PCRE2's Unicode tables, read once into a compact two-level table the
// first time they are needed. \s is the explicit White_Space list (it includes U+0085 and excludes
// U+FEFF), not PCRE2's \s, whose UCP definition differs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace trinity::unicode {

enum class CharClass : uint8_t {
  kOther = 0,   // none of the below (punctuation, symbols, controls, marks, invalid bytes...)
  kLetter = 1,  // \p{L}
  kNumber = 2,  // \p{N}
  kSpace = 3,   // \s: Unicode White_Space
};

// Code point used for a byte that does not start a valid UTF-8 sequence.
inline constexpr uint32_t kInvalid = 0xFFFFFFFF;

struct DecodedChar {
  uint32_t cp;   // code point, or kInvalid
  uint32_t len;  // bytes consumed, >= 1
};

// Decodes the character at text[pos] (pos < text.size()). Overlong forms, surrogates, values
// above U+10FFFF and truncated sequences decode as {kInvalid, 1}.
DecodedChar DecodeUtf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of cp (cp must be a valid scalar value).
void AppendUtf8(uint32_t cp, std::string* out);

bool IsWhiteSpace(uint32_t cp);

// Class of a code point (kInvalid -> kOther). Thread-safe; the first non-ASCII call builds the
// table (a few milliseconds).
CharClass ClassOf(uint32_t cp);

// Result of looking at the bytes at text[pos] as the start of a UTF-8 character.
enum class Utf8Status { kComplete, kIncomplete, kInvalid };
struct Utf8Check {
  Utf8Status status;
  size_t len;  // kComplete: char length; kInvalid: length of the maximal invalid subpart (>= 1)
};
// Classifies text[pos...] without assuming more bytes are absent: a valid prefix of a character
// that runs into the end of `text` is kIncomplete.
Utf8Check CheckUtf8(std::string_view text, size_t pos);

}  // namespace trinity::unicode
