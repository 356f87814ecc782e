#include "engine/tokenizer/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/common/error.h"

namespace trinity::unicode {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kBlockBits = 8;
constexpr uint32_t kBlockSize = 1u << kBlockBits;
constexpr uint32_t kNumBlocks = (kMaxCodePoint + 1) >> kBlockBits;  // 0x1100

// Unicode White_Space (PropList.txt): what \s means to the reference regex engine. U+0085 is in;
// U+FEFF, U+200B and U+180E are out.
constexpr uint32_t kWhiteSpace[] = {0x09,   0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,   0xA0,   0x1680,
                                    0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
                                    0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};

// Two-level table: block_index[cp >> 8] selects a 256-entry block of classes. Most blocks are
// identical (unassigned planes, CJK ideographs), so the ~1.1 M entries shrink to a few hundred
// distinct blocks.
struct ClassTable {
  std::array<uint16_t, kNumBlocks> block_index;
  std::vector<uint8_t> blocks;  // n_blocks * 256 CharClass values
};

// Reads \p{L} and \p{N} for every code point out of PCRE2: one JIT-compiled scan over a buffer
// holding every scalar value once, in order.
ClassTable BuildClassTable() {
  std::vector<uint8_t> classes(kMaxCodePoint + 1, static_cast<uint8_t>(CharClass::kOther));

  // Letters and numbers live in planes 0-3 only (plane 14 holds tags and variation selectors,
  // 15-16 private use, 4-13 nothing); scanning plane 14 as well costs little and guards against
  // future assignments there.
  std::string all;
  all.reserve(4 * 0x50000);
  for (uint32_t cp = 0; cp <= kMaxCodePoint; ++cp) {
    if (cp == 0x40000) cp = 0xE0000;
    if (cp == 0xF0000) break;
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are not scalar values
    AppendUtf8(cp, &all);
  }

  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("(\\p{L}+)|\\p{N}+"), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (re == nullptr) Fail("tokenizer: cannot compile the Unicode class regex (PCRE2 error {})", error_code);
  const bool jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(re, nullptr);

  const auto* subject = reinterpret_cast<PCRE2_SPTR>(all.data());
  PCRE2_SIZE offset = 0;
  while (offset < all.size()) {
    const int rc = jit ? pcre2_jit_match(re, subject, all.size(), offset, PCRE2_NO_UTF_CHECK, match, nullptr)
                       : pcre2_match(re, subject, all.size(), offset, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH, or nothing more we can use
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    const bool letters = rc >= 2 && ovector[2] != PCRE2_UNSET;
    const auto cls = static_cast<uint8_t>(letters ? CharClass::kLetter : CharClass::kNumber);
    for (size_t pos = ovector[0]; pos < ovector[1];) {
      const DecodedChar c = DecodeUtf8(all, pos);
      classes[c.cp] = cls;
      pos += c.len;
    }
    offset = ovector[1] > ovector[0] ? ovector[1] : ovector[0] + 1;
  }
  pcre2_match_data_free(match);
  pcre2_code_free(re);

  for (uint32_t cp : kWhiteSpace) classes[cp] = static_cast<uint8_t>(CharClass::kSpace);

  ClassTable table;
  std::unordered_map<std::string_view, uint16_t> seen;
  std::vector<std::string> distinct;
  for (uint32_t b = 0; b < kNumBlocks; ++b) {
    std::string_view block(reinterpret_cast<const char*>(classes.data()) + b * kBlockSize, kBlockSize);
    auto [it, inserted] = seen.emplace(block, static_cast<uint16_t>(seen.size()));
    if (inserted) table.blocks.insert(table.blocks.end(), block.begin(), block.end());
    table.block_index[b] = it->second;
  }
  return table;
}

const ClassTable& Table() {
  static const ClassTable table = BuildClassTable();
  return table;
}

}  // namespace

Utf8Check CheckUtf8(std::string_view text, size_t pos) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) return {Utf8Status::kComplete, 1};
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Status::kInvalid, 1};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (pos + k >= text.size()) return {Utf8Status::kIncomplete, k};
    const auto b = static_cast<uint8_t>(text[pos + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return {Utf8Status::kInvalid, k};
  }
  return {Utf8Status::kComplete, need + 1};
}

DecodedChar DecodeUtf8(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  if (s[0] < 0x80) return {s[0], 1};
  const Utf8Check check = CheckUtf8(text, pos);
  if (check.status != Utf8Status::kComplete) return {kInvalid, 1};
  switch (check.len) {
    case 2:
      return {(uint32_t{s[0]} & 0x1F) << 6 | (s[1] & 0x3F), 2};
    case 3:
      return {(uint32_t{s[0]} & 0x0F) << 12 | (uint32_t{s[1]} & 0x3F) << 6 | (s[2] & 0x3F), 3};
    default:
      return {(uint32_t{s[0]} & 0x07) << 18 | (uint32_t{s[1]} & 0x3F) << 12 | (uint32_t{s[2]} & 0x3F) << 6 |
                  (s[3] & 0x3F),
              4};
  }
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsWhiteSpace(uint32_t cp) {
  for (uint32_t space : kWhiteSpace) {
    if (cp == space) return true;
  }
  return false;
}

CharClass ClassOf(uint32_t cp) {
  if (cp > kMaxCodePoint) return CharClass::kOther;
  const ClassTable& table = Table();
  return static_cast<CharClass>(table.blocks[size_t{table.block_index[cp >> kBlockBits]} * kBlockSize +
                                             (cp & (kBlockSize - 1))]);
}

}  // namespace trinity::unicode
