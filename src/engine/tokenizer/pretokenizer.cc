#include "engine/tokenizer/pretokenizer.h"

#include <array>
#include <cstdint>

#include "engine/common/error.h"
#include "engine/tokenizer/unicode.h"

namespace trinity {
namespace {

using unicode::CharClass;

constexpr std::array<CharClass, 128> MakeAsciiClasses() {
  std::array<CharClass, 128> classes{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      classes[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      classes[c] = CharClass::kNumber;
    } else if (c == ' ' || (c >= '\t' && c <= '\r')) {
      classes[c] = CharClass::kSpace;
    } else {
      classes[c] = CharClass::kOther;
    }
  }
  return classes;
}
constexpr std::array<CharClass, 128> kAsciiClasses = MakeAsciiClasses();

struct Char {
  CharClass cls;
  uint32_t len;
};

// Scans one string; every position handed to it is < text_.size() unless said otherwise.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  size_t size() const { return text_.size(); }
  uint8_t Byte(size_t pos) const { return static_cast<uint8_t>(text_[pos]); }

  Char At(size_t pos) const {
    const uint8_t b = Byte(pos);
    if (b < 0x80) return {kAsciiClasses[b], 1};
    const unicode::DecodedChar c = unicode::DecodeUtf8(text_, pos);
    return {unicode::ClassOf(c.cp), c.len};
  }
  // Class at pos, or kOther... callers check pos < size() first.
  CharClass ClassAt(size_t pos) const { return At(pos).cls; }

  // End of the run of characters of class `cls` starting at pos (pos may be size()).
  size_t RunEnd(size_t pos, CharClass cls) const {
    while (pos < size()) {
      const Char c = At(pos);
      if (c.cls != cls) break;
      pos += c.len;
    }
    return pos;
  }
  size_t SkipNewlines(size_t pos) const {
    while (pos < size() && (Byte(pos) == '\r' || Byte(pos) == '\n')) ++pos;
    return pos;
  }

  // 's 't 're 've 'm 'll 'd at pos (ASCII case-insensitive when `fold`); returns the end or 0.
  size_t Contraction(size_t pos, bool fold) const {
    if (Byte(pos) != '\'' || pos + 1 >= size()) return 0;
    auto lower = [&](size_t p) -> uint8_t {
      const uint8_t b = Byte(p);
      return fold && b >= 'A' && b <= 'Z' ? b + ('a' - 'A') : b;
    };
    const uint8_t b1 = lower(pos + 1);
    if (b1 == 's' || b1 == 't' || b1 == 'm' || b1 == 'd') return pos + 2;
    if (pos + 2 >= size()) return 0;
    const uint8_t b2 = lower(pos + 2);
    if ((b1 == 'r' && b2 == 'e') || (b1 == 'v' && b2 == 'e') || (b1 == 'l' && b2 == 'l')) return pos + 3;
    return 0;
  }

  // The whitespace alternatives shared by both regexes, at a space character:
  //   \s+(?!\S) | \s+   (Llama 3 tries \s*[\r\n]+ first; pass `newline_rule`).
  size_t Whitespace(size_t pos, bool newline_rule) const {
    size_t end = pos;
    size_t last_start = pos;       // start of the last whitespace character
    size_t last_newline = SIZE_MAX;  // position of the last \r or \n
    size_t count = 0;
    while (end < size()) {
      const Char c = At(end);
      if (c.cls != CharClass::kSpace) break;
      if (Byte(end) == '\r' || Byte(end) == '\n') last_newline = end;
      last_start = end;
      end += c.len;
      ++count;
    }
    // \s*[\r\n]+ : greedy \s* backs off to the last newline; [\r\n]+ takes it.
    if (newline_rule && last_newline != SIZE_MAX) return last_newline + 1;
    // \s+(?!\S) : at the end of the text the whole run; otherwise all but the last character,
    // which must then be followed by whitespace (it is: the last character of the run).
    if (end == size() || count < 2) return end;  // count < 2: falls through to \s+
    return last_start;
  }

 private:
  std::string_view text_;
};

size_t NextLlama3(const Scanner& s, size_t pos) {
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (size_t end = s.Contraction(pos, /*fold=*/true)) return end;
  const Char c = s.At(pos);
  const uint8_t b = s.Byte(pos);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c.cls == CharClass::kLetter) return s.RunEnd(pos, CharClass::kLetter);
  if (c.cls != CharClass::kNumber && b != '\r' && b != '\n' && pos + c.len < s.size() &&
      s.ClassAt(pos + c.len) == CharClass::kLetter) {
    return s.RunEnd(pos + c.len, CharClass::kLetter);
  }
  // \p{N}{1,3}
  if (c.cls == CharClass::kNumber) {
    size_t end = pos + c.len;
    for (int n = 1; n < 3 && end < s.size(); ++n) {
      const Char next = s.At(end);
      if (next.cls != CharClass::kNumber) break;
      end += next.len;
    }
    return end;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  if (b == ' ' && pos + 1 < s.size() && s.ClassAt(pos + 1) == CharClass::kOther) {
    return s.SkipNewlines(s.RunEnd(pos + 1, CharClass::kOther));
  }
  if (c.cls == CharClass::kOther) return s.SkipNewlines(s.RunEnd(pos, CharClass::kOther));
  // \s*[\r\n]+ | \s+(?!\S) | \s+
  return s.Whitespace(pos, /*newline_rule=*/true);
}

size_t NextGpt2(const Scanner& s, size_t pos) {
  // 's|'t|'re|'ve|'m|'ll|'d
  if (size_t end = s.Contraction(pos, /*fold=*/false)) return end;
  //  ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
  size_t start = pos;
  if (s.Byte(pos) == ' ' && pos + 1 < s.size() && s.ClassAt(pos + 1) != CharClass::kSpace) start = pos + 1;
  const CharClass cls = s.ClassAt(start);
  if (cls != CharClass::kSpace) return s.RunEnd(start, cls);
  // \s+(?!\S) | \s+
  return s.Whitespace(pos, /*newline_rule=*/false);
}

}  // namespace

PreTokenizerKind PreTokenizerFor(std::string_view pre) {
  if (pre.empty() || pre == "llama-bpe" || pre == "llama3") return PreTokenizerKind::kLlama3;
  if (pre == "gpt2") return PreTokenizerKind::kGpt2;
  Fail("tokenizer.ggml.pre = \"{}\" is not a supported pre-tokenizer (supported: llama-bpe, llama3, gpt2)", pre);
}

size_t NextPreToken(PreTokenizerKind kind, std::string_view text, size_t pos) {
  const Scanner scanner(text);
  return kind == PreTokenizerKind::kLlama3 ? NextLlama3(scanner, pos) : NextGpt2(scanner, pos);
}

std::vector<std::string_view> PreTokenize(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string_view> pieces;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = NextPreToken(kind, text, pos);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

}  // namespace trinity
