// Tokenizer tests: conformance with HF `tokenizers` on the Llama 3 cases, pre-tokenizer splits
// derived by hand from the regex, round trips, streaming decode, loaders and their errors.
#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/common/error.h"
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/tokenizer_internal.h"
#include "engine/tokenizer/unicode.h"

namespace trinity {
namespace {

const Tokenizer& Llama3() {
  static const Tokenizer* tokenizer = [] {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    TokenizerData data = Tokenizer::DataFromHFJson(TRINITY_SOURCE_DIR "/data/llama3/tokenizer.json");
    const auto parsed = Clock::now();
    auto* t = new Tokenizer(std::move(data));
    const auto built = Clock::now();
    std::printf("[ info     ] Llama 3 tokenizer.json: read in %.0f ms, tokenizer built in %.0f ms\n",
                std::chrono::duration<double, std::milli>(parsed - start).count(),
                std::chrono::duration<double, std::milli>(built - parsed).count());
    return t;
  }();
  return *tokenizer;
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<int32_t> ids_special;
};

std::vector<Case> LoadCases() {
  std::ifstream in(TRINITY_TEST_DATA "/llama3_cases.jsonl");
  EXPECT_TRUE(in) << "cannot open llama3_cases.jsonl";
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>(),
                     j.at("ids_special").get<std::vector<int32_t>>()});
  }
  return cases;
}

std::string Utf8(uint32_t cp) {
  std::string s;
  unicode::AppendUtf8(cp, &s);
  return s;
}

std::vector<std::string> Split(std::string_view text, PreTokenizerKind kind = PreTokenizerKind::kLlama3) {
  std::vector<std::string> pieces;
  for (std::string_view piece : PreTokenize(kind, text)) pieces.emplace_back(piece);
  return pieces;
}

using Pieces = std::vector<std::string>;

// ---- conformance ---------------------------------------------------------------------------------

TEST(TokenizerTest, Llama3ConformanceCases) {
  const Tokenizer& tok = Llama3();
  const std::vector<Case> cases = LoadCases();
  ASSERT_EQ(cases.size(), 255u);
  int plain_ok = 0, special_ok = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> plain = tok.Encode(c.text, /*parse_special=*/false);
    const std::vector<int32_t> special = tok.Encode(c.text, /*parse_special=*/true);
    plain_ok += plain == c.ids;
    special_ok += special == c.ids_special;
    EXPECT_EQ(plain, c.ids) << "text: " << nlohmann::json(c.text).dump();
    EXPECT_EQ(special, c.ids_special) << "text (parse_special): " << nlohmann::json(c.text).dump();
  }
  std::printf("[ info     ] conformance: %d/%zu plain, %d/%zu parse_special\n", plain_ok, cases.size(), special_ok,
              cases.size());
}

TEST(TokenizerTest, CasesRoundTrip) {
  const Tokenizer& tok = Llama3();
  for (const Case& c : LoadCases()) {
    EXPECT_EQ(tok.Decode(c.ids), c.text);
    EXPECT_EQ(tok.Decode(c.ids_special, /*render_special=*/true), c.text);
  }
}

TEST(TokenizerTest, Llama3Metadata) {
  const Tokenizer& tok = Llama3();
  EXPECT_EQ(tok.n_vocab(), 128256);
  const TokenizerData& data = tok.data();
  EXPECT_EQ(data.bos_id, 128000);
  EXPECT_EQ(data.eos_id, 128001);
  EXPECT_EQ(data.eot_id, 128009);
  EXPECT_EQ(data.pad_id, -1);
  EXPECT_EQ(data.pre, "llama-bpe");
  EXPECT_EQ(data.merges.size(), 280147u);
  EXPECT_EQ(tok.FindToken("<|eot_id|>"), 128009);
  EXPECT_EQ(tok.FindToken("<|reserved_special_token_4|>"), 128008);
  EXPECT_EQ(tok.FindToken("Ġthe"), 279);
  EXPECT_EQ(tok.FindToken("no such token, surely"), -1);
  for (int32_t id = 128000; id < 128256; ++id) EXPECT_TRUE(tok.IsControl(id)) << id;
  EXPECT_FALSE(tok.IsControl(279));
  EXPECT_EQ(tok.TokenBytes(279), " the");
  EXPECT_EQ(tok.TokenBytes(128009), "<|eot_id|>");
  EXPECT_EQ(tok.TokenBytes(198), "\n");
  EXPECT_THROW(tok.TokenBytes(128256), Error);
  EXPECT_THROW(tok.TokenBytes(-1), Error);
}

TEST(TokenizerTest, DecodeSkipsControlTokensUnlessRendered) {
  const Tokenizer& tok = Llama3();
  const std::vector<int32_t> ids = tok.Encode("<|begin_of_text|>Hi<|eot_id|>", /*parse_special=*/true);
  ASSERT_EQ(ids, (std::vector<int32_t>{128000, 13347, 128009}));
  EXPECT_EQ(tok.Decode(ids), "Hi");
  EXPECT_EQ(tok.Decode(ids, /*render_special=*/true), "<|begin_of_text|>Hi<|eot_id|>");
  const std::vector<int32_t> bad = {13347, 128256};
  EXPECT_THROW(tok.Decode(bad), Error);
}

TEST(TokenizerTest, PlainRangesKeepSpecialTextAsText) {
  const Tokenizer& tok = Llama3();
  // "<|begin_of_text|>" + "Hi<|eot_id|>there" (plain) + "<|eot_id|>"
  const std::string text = "<|begin_of_text|>Hi<|eot_id|>there<|eot_id|>";
  const Tokenizer::Range plain[] = {{17, 34}};
  const std::vector<int32_t> ids = tok.EncodeWithPlain(text, plain);
  std::vector<int32_t> want = {128000};
  for (int32_t id : tok.Encode("Hi<|eot_id|>there", /*parse_special=*/false)) want.push_back(id);
  want.push_back(128009);
  EXPECT_EQ(ids, want);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 1);
  // No ranges: Encode(parse_special = true).
  EXPECT_EQ(tok.EncodeWithPlain(text, {}), tok.Encode(text, /*parse_special=*/true));
  // A special token reaching into a plain range is not taken either.
  const Tokenizer::Range tail[] = {{20, text.size()}};  // starts inside the first "<|eot_id|>"
  const std::vector<int32_t> cut = tok.EncodeWithPlain(text, tail);
  EXPECT_EQ(std::count(cut.begin(), cut.end(), 128009), 0);
  EXPECT_EQ(tok.Decode(cut, /*render_special=*/true), text);
}

// ---- pre-tokenizer ---------------------------------------------------------------------------------

TEST(PreTokenizerTest, Contractions) {
  EXPECT_EQ(Split("don't"), (Pieces{"don", "'t"}));
  EXPECT_EQ(Split("DON'T"), (Pieces{"DON", "'T"}));
  EXPECT_EQ(Split("You'Re he'Ll"), (Pieces{"You", "'Re", " he", "'Ll"}));
  EXPECT_EQ(Split("shouldn't've"), (Pieces{"shouldn", "'t", "'ve"}));
  // U+2019 is not an apostrophe to the regex: it is punctuation that prefixes the letters.
  EXPECT_EQ(Split("it\u2019s"), (Pieces{"it", "\u2019s"}));
  EXPECT_EQ(Split("'tis"), (Pieces{"'t", "is"}));
  EXPECT_EQ(Split("'x"), (Pieces{"'x"}));
  EXPECT_EQ(Split("'''"), (Pieces{"'''"}));
  // Case folding is ASCII only: U+017F (long s) and U+212A (Kelvin) do not fold to s / k.
  EXPECT_EQ(Split("'\u017F"), (Pieces{"'\u017F"}));
  // GPT-2 contractions are case-sensitive.
  EXPECT_EQ(Split("DON'T don't", PreTokenizerKind::kGpt2), (Pieces{"DON", "'", "T", " don", "'t"}));
}

TEST(PreTokenizerTest, LettersNumbersPunctuation) {
  EXPECT_EQ(Split("Hello world!"), (Pieces{"Hello", " world", "!"}));
  EXPECT_EQ(Split("state-of-the-art"), (Pieces{"state", "-of", "-the", "-art"}));
  EXPECT_EQ(Split("12345"), (Pieces{"123", "45"}));
  EXPECT_EQ(Split("1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(Split("-42"), (Pieces{"-", "42"}));
  EXPECT_EQ(Split("123abc456"), (Pieces{"123", "abc", "456"}));
  EXPECT_EQ(Split("x^2 + y^2"), (Pieces{"x", "^", "2", " +", " y", "^", "2"}));
  EXPECT_EQ(Split("a.b"), (Pieces{"a", ".b"}));
  EXPECT_EQ(Split("end...\n"), (Pieces{"end", "...\n"}));
  EXPECT_EQ(Split("?\n\n"), (Pieces{"?\n\n"}));
  EXPECT_EQ(Split("\u00BD \u00BE"), (Pieces{"\u00BD", " ", "\u00BE"}));        // No: numbers
  EXPECT_EQ(Split("\u0661\u0662\u0663\u0664"), (Pieces{"\u0661\u0662\u0663", "\u0664"}));  // Arabic-Indic digits
  EXPECT_EQ(Split("caf\u00E9"), (Pieces{"caf\u00E9"}));
  EXPECT_EQ(Split("a\u0301b"), (Pieces{"a", "\u0301b"}));  // a combining mark is not \p{L}
  EXPECT_EQ(Split("GPT-2 ", PreTokenizerKind::kGpt2), (Pieces{"GPT", "-", "2", " "}));
  EXPECT_EQ(Split("a 12345 b", PreTokenizerKind::kGpt2), (Pieces{"a", " 12345", " b"}));
}

TEST(PreTokenizerTest, Whitespace) {
  EXPECT_EQ(Split("\thello"), (Pieces{"\thello"}));
  EXPECT_EQ(Split("a\tb"), (Pieces{"a", "\tb"}));
  EXPECT_EQ(Split("\ttabs\t\t\t\tout"), (Pieces{"\ttabs", "\t\t\t", "\tout"}));
  EXPECT_EQ(Split("hello  world"), (Pieces{"hello", " ", " world"}));
  EXPECT_EQ(Split("hello  "), (Pieces{"hello", "  "}));
  EXPECT_EQ(Split("  "), (Pieces{"  "}));
  EXPECT_EQ(Split("\r\n"), (Pieces{"\r\n"}));
  EXPECT_EQ(Split("a\r\nb"), (Pieces{"a", "\r\n", "b"}));
  EXPECT_EQ(Split("a \n b"), (Pieces{"a", " \n", " b"}));
  EXPECT_EQ(Split("  \n  \n  "), (Pieces{"  \n  \n", "  "}));
  EXPECT_EQ(Split("x \t\n y"), (Pieces{"x", " \t\n", " y"}));
  // U+0085 and U+00A0 are White_Space: they prefix letters like a space does.
  EXPECT_EQ(Split("a\u0085b"), (Pieces{"a", "\u0085b"}));
  EXPECT_EQ(Split("1\u0085\u00852"), (Pieces{"1", "\u0085", "\u0085", "2"}));
  EXPECT_EQ(Split("\u00A0\u00A0hello"), (Pieces{"\u00A0", "\u00A0hello"}));
  EXPECT_EQ(Split("a \u3000b"), (Pieces{"a", " ", "\u3000b"}));
  EXPECT_EQ(Split("\u3000\u3000\u3000"), (Pieces{"\u3000\u3000\u3000"}));
  // U+FEFF is not White_Space: it is punctuation-like.
  EXPECT_EQ(Split("x  \uFEFFy"), (Pieces{"x", " ", " \uFEFF", "y"}));
  EXPECT_EQ(Split("x\uFEFF\uFEFF"), (Pieces{"x", "\uFEFF\uFEFF"}));
  // U+001C..U+001F are not White_Space either (Python's isspace() says they are).
  EXPECT_EQ(Split("a\x1c\x1c b"), (Pieces{"a", "\x1c\x1c", " b"}));
  EXPECT_EQ(Split("hello  \n", PreTokenizerKind::kGpt2), (Pieces{"hello", "  \n"}));
  EXPECT_EQ(Split("a  b", PreTokenizerKind::kGpt2), (Pieces{"a", " ", " b"}));
}

TEST(PreTokenizerTest, WhiteSpaceSetIsExact) {
  const uint32_t expected[] = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001,
                               0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A,
                               0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  std::vector<uint32_t> found;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (unicode::ClassOf(cp) == unicode::CharClass::kSpace) found.push_back(cp);
  }
  EXPECT_EQ(found, std::vector<uint32_t>(std::begin(expected), std::end(expected)));
  EXPECT_EQ(unicode::ClassOf(0xFEFF), unicode::CharClass::kOther);
  EXPECT_EQ(unicode::ClassOf(0x200B), unicode::CharClass::kOther);
  EXPECT_EQ(unicode::ClassOf(0x180E), unicode::CharClass::kOther);
}

TEST(PreTokenizerTest, UnicodeClasses) {
  using unicode::CharClass;
  EXPECT_EQ(unicode::ClassOf('a'), CharClass::kLetter);
  EXPECT_EQ(unicode::ClassOf(0x00AA), CharClass::kLetter);   // ª (Lo)
  EXPECT_EQ(unicode::ClassOf(0x4E2D), CharClass::kLetter);   // 中
  EXPECT_EQ(unicode::ClassOf(0x1D400), CharClass::kLetter);  // 𝐀
  EXPECT_EQ(unicode::ClassOf(0x0345), CharClass::kOther);    // combining ypogegrammeni (Mn)
  EXPECT_EQ(unicode::ClassOf(0x00B2), CharClass::kNumber);   // ² (No)
  EXPECT_EQ(unicode::ClassOf(0x2160), CharClass::kNumber);   // Ⅰ (Nl)
  EXPECT_EQ(unicode::ClassOf(0x1D7CE), CharClass::kNumber);  // 𝟎 (Nd)
  EXPECT_EQ(unicode::ClassOf(0x1F999), CharClass::kOther);   // 🦙
  EXPECT_EQ(unicode::ClassOf(0x0378), CharClass::kOther);    // unassigned
  EXPECT_EQ(unicode::ClassOf(unicode::kInvalid), CharClass::kOther);
}

TEST(PreTokenizerTest, InvalidUtf8IsOneByteOther) {
  // A stray continuation byte and a truncated sequence are punctuation-like single bytes.
  EXPECT_EQ(Split("a\x80z"), (Pieces{"a", "\x80z"}));
  EXPECT_EQ(Split("ab \xF0\x9F"), (Pieces{"ab", " \xF0\x9F"}));
  EXPECT_EQ(Split("\xC0\xAF"), (Pieces{"\xC0\xAF"}));  // overlong '/'
}

TEST(PreTokenizerTest, SelectsByPre) {
  EXPECT_EQ(PreTokenizerFor(""), PreTokenizerKind::kLlama3);
  EXPECT_EQ(PreTokenizerFor("llama-bpe"), PreTokenizerKind::kLlama3);
  EXPECT_EQ(PreTokenizerFor("llama3"), PreTokenizerKind::kLlama3);
  EXPECT_EQ(PreTokenizerFor("gpt2"), PreTokenizerKind::kGpt2);
  try {
    PreTokenizerFor("qwen2");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen2"), std::string::npos) << e.what();
  }
}

// ---- round trips on text it has never seen --------------------------------------------------------

std::string RandomText(std::mt19937* rng, size_t n_chars) {
  static const std::vector<std::string> pool = [] {
    std::vector<std::string> p = {"a", "Z", " ", "  ", "\t", "\n", "\r\n", "\r", "'", "'s", "'LL", "-", ".", ",",
                                  "0", "7", "12345", "\u2019", "\u00E9", "e\u0301", "\u0345", "\u00A0", "\u0085",
                                  "\uFEFF", "\u3000", "\u2028", "\u200B", "\u200D", "\U0001F999", "\U0001F44D\U0001F3FD",
                                  "\U0001F3F3\uFE0F\u200D\U0001F308", "\u4E2D", "\u6587", "\uD55C", "\u0645", "\u05E9",
                                  "\u0915\u094D", "\u00BD", "\u0661", "\U0001D400", "\uFFFD", "\x7F", "\x01", "<|",
                                  "|>", "<|eot_id|>", "<|begin_of_text|>", "\u2009", "the", " the", "don't"};
    for (uint32_t cp : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x2005u, 0x200Au,
                        0x2028u, 0x2029u, 0x202Fu, 0x205Fu, 0x3000u}) {
      p.push_back(Utf8(cp));
    }
    return p;
  }();
  std::string text;
  for (size_t i = 0; i < n_chars; ++i) {
    const uint32_t kind = (*rng)() % 4;
    if (kind == 0) {
      // Any scalar value, weighted towards the BMP.
      uint32_t cp = (*rng)() % ((*rng)() % 2 ? 0x800 : 0x110000);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
      text += Utf8(cp);
    } else {
      text += pool[(*rng)() % pool.size()];
    }
  }
  return text;
}

TEST(TokenizerTest, RandomUtf8RoundTrip) {
  const Tokenizer& tok = Llama3();
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 2000; ++iter) {
    const std::string text = RandomText(&rng, rng() % 40);
    const std::vector<int32_t> ids = tok.Encode(text, /*parse_special=*/false);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 128000);  // plain text never produces special tokens
    }
    ASSERT_EQ(tok.Decode(ids), text) << nlohmann::json(text).dump();
    const std::vector<int32_t> special = tok.Encode(text, /*parse_special=*/true);
    for (int32_t id : special) {
      ASSERT_LT(id, tok.n_vocab());
    }
    ASSERT_EQ(tok.Decode(special, /*render_special=*/true), text) << nlohmann::json(text).dump();
    // Pre-tokens tile the input exactly.
    std::string joined;
    for (std::string_view piece : PreTokenize(PreTokenizerKind::kLlama3, text)) {
      ASSERT_FALSE(piece.empty());
      joined += piece;
    }
    ASSERT_EQ(joined, text);
  }
}

TEST(TokenizerTest, RandomBytesRoundTrip) {
  // Byte-level BPE is lossless even on invalid UTF-8.
  const Tokenizer& tok = Llama3();
  std::mt19937 rng(99);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes(rng() % 32, '\0');
    for (char& b : bytes) b = static_cast<char>(rng() % 3 == 0 ? 0x80 + rng() % 0x80 : rng() % 256);
    const std::vector<int32_t> ids = tok.Encode(bytes, /*parse_special=*/false);
    ASSERT_EQ(tok.Decode(ids), bytes);
  }
}

TEST(TokenizerTest, LongRunsAreFast) {
  // One pre-token of 200k letters: the merge loop must not be quadratic.
  const Tokenizer& tok = Llama3();
  const std::string text(200000, 'a');
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.Encode(text, false);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ info     ] 200k-letter word: %zu tokens in %.1f ms\n", ids.size(), ms);
  EXPECT_EQ(tok.Decode(ids), text);
}

// ---- streaming decode -----------------------------------------------------------------------------

int32_t ByteToken(const Tokenizer& tok, uint8_t b) {
  const int32_t id = tok.FindToken(ByteLevelEncode(std::string(1, static_cast<char>(b))));
  EXPECT_GE(id, 0);
  return id;
}

TEST(StreamDecoderTest, EmojiByteByByte) {
  const Tokenizer& tok = Llama3();
  const std::string emoji = "\U0001F999";  // F0 9F A6 99
  StreamDecoder decoder(tok);
  std::string out;
  for (size_t i = 0; i < emoji.size(); ++i) {
    const std::string piece = decoder.Push(ByteToken(tok, static_cast<uint8_t>(emoji[i])));
    if (i + 1 < emoji.size()) {
      EXPECT_EQ(piece, "") << "byte " << i;
    }
    out += piece;
  }
  EXPECT_EQ(out, emoji);
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(StreamDecoderTest, MatchesDecodeOnText) {
  const Tokenizer& tok = Llama3();
  const std::string text = "Hello 世界 🦙👍🏽 🏳️‍🌈 naïve <|eot_id|> done";
  const std::vector<int32_t> ids = tok.Encode(text, /*parse_special=*/true);
  StreamDecoder decoder(tok);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    // Every piece is valid UTF-8 on its own.
    for (size_t pos = 0; pos < piece.size();) {
      const unicode::Utf8Check check = unicode::CheckUtf8(piece, pos);
      ASSERT_EQ(check.status, unicode::Utf8Status::kComplete);
      pos += check.len;
    }
    out += piece;
  }
  out += decoder.Flush();
  EXPECT_EQ(out, tok.Decode(ids));
  EXPECT_EQ(out.find("<|eot_id|>"), std::string::npos);

  StreamDecoder rendering(tok, /*render_special=*/true);
  std::string rendered;
  for (int32_t id : ids) rendered += rendering.Push(id);
  EXPECT_EQ(rendered + rendering.Flush(), text);
}

TEST(StreamDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer& tok = Llama3();
  const std::string fffd = "\uFFFD";
  {
    // F0 9F then 'a': the sequence cannot complete -> one U+FFFD, then 'a'.
    StreamDecoder decoder(tok);
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xF0)), "");
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0x9F)), "");
    EXPECT_EQ(decoder.Push(ByteToken(tok, 'a')), fffd + "a");
    EXPECT_EQ(decoder.Flush(), "");
  }
  {
    // A lone continuation byte and an impossible lead byte each become U+FFFD at once.
    StreamDecoder decoder(tok);
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0x80)), fffd);
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xFF)), fffd);
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xED)), "");
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xA0)), fffd + fffd);  // ED A0 would be a surrogate
  }
  {
    // Held-back bytes at the end become one U+FFFD on Flush.
    StreamDecoder decoder(tok);
    EXPECT_EQ(decoder.Push(ByteToken(tok, 'x')), "x");
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xE4)), "");
    EXPECT_EQ(decoder.Push(ByteToken(tok, 0xB8)), "");
    EXPECT_EQ(decoder.Flush(), fffd);
    EXPECT_EQ(decoder.Flush(), "");
  }
}

// ---- small hand-made vocabularies -----------------------------------------------------------------

TokenizerData TinyData() {
  TokenizerData data;
  data.pre = "gpt2";
  // Every byte as a token, then merges.
  for (int b = 0; b < 256; ++b) data.tokens.push_back(ByteLevelEncode(std::string(1, static_cast<char>(b))));
  for (const char* t : {"ab", "bc", "abc", "aa", "aaaa", "Ġa", "<eos>"}) data.tokens.push_back(t);
  data.token_types.assign(data.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  data.token_types.back() = static_cast<int32_t>(TokenType::kControl);
  data.merges = {"b c", "a b", "a bc", "a a", "aa aa", "Ġ a"};
  data.eos_id = static_cast<int32_t>(data.tokens.size() - 1);
  return data;
}

TEST(TokenizerTest, MergesApplyByRank) {
  const Tokenizer tok(TinyData());
  auto id = [&](const char* text) { return tok.FindToken(text); };
  // "b c" outranks "a b": abc -> a + bc -> abc.
  EXPECT_EQ(tok.Encode("abc", false), (std::vector<int32_t>{id("abc")}));
  // Equal pairs merge leftmost first: aaa -> aa + a.
  EXPECT_EQ(tok.Encode("aaa", false), (std::vector<int32_t>{id("aa"), id("a")}));
  EXPECT_EQ(tok.Encode("aaaaa", false), (std::vector<int32_t>{id("aaaa"), id("a")}));
  // " ab" is one GPT-2 pre-token; "a b" outranks "Ġ a".
  EXPECT_EQ(tok.Encode(" ab", false), (std::vector<int32_t>{id("Ġ"), id("ab")}));
  EXPECT_EQ(tok.Encode(" a", false), (std::vector<int32_t>{id("Ġa")}));
  EXPECT_EQ(tok.Encode("<eos>", true), (std::vector<int32_t>{tok.data().eos_id}));
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{tok.data().eos_id}), "");
}

void ExpectError(const TokenizerData& data, const std::string& needle) {
  try {
    Tokenizer tok(data);
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerTest, RejectsMalformedData) {
  TokenizerData data = TinyData();
  data.model = "llama";
  ExpectError(data, "tokenizer.ggml.model");
  data = TinyData();
  data.pre = "falcon";
  ExpectError(data, "falcon");
  data = TinyData();
  data.merges.push_back("abc");
  ExpectError(data, "tokenizer.ggml.merges[6]");
  data = TinyData();
  data.merges.push_back("a  b");
  ExpectError(data, "tokenizer.ggml.merges[6]");
  data = TinyData();
  data.merges.push_back("x yz");
  ExpectError(data, "not in the vocabulary");
  data = TinyData();
  data.bos_id = 100000;
  ExpectError(data, "tokenizer.ggml.bos_token_id");
  data = TinyData();
  data.token_types.pop_back();
  ExpectError(data, "tokenizer.ggml.token_type");
  data = TinyData();
  data.scores = {1.0f};
  ExpectError(data, "tokenizer.ggml.scores");
  data = TinyData();
  data.tokens.clear();
  data.token_types.clear();
  ExpectError(data, "tokenizer.ggml.tokens");
}

// ---- loaders -----------------------------------------------------------------------------------------

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(TokenizerTest, HFJsonAcceptsPairMergesAndNamesErrors) {
  nlohmann::json j;
  nlohmann::json vocab;
  for (int b = 0; b < 256; ++b) vocab[ByteLevelEncode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({nlohmann::json::array({"a", "b"})})}};
  j["added_tokens"] = nlohmann::json::array(
      {{{"id", 257}, {"content", "<|end_of_text|>"}, {"special", true}},
       {{"id", 258}, {"content", "<tool>"}, {"special", false}}});
  const TokenizerData data = Tokenizer::DataFromHFJson(WriteTemp("tok_pairs.json", j.dump()));
  EXPECT_EQ(data.merges, (std::vector<std::string>{"a b"}));
  EXPECT_EQ(data.eos_id, 257);
  EXPECT_EQ(data.bos_id, -1);
  EXPECT_EQ(data.token_types[257], static_cast<int32_t>(TokenType::kControl));
  EXPECT_EQ(data.token_types[258], static_cast<int32_t>(TokenType::kUserDefined));
  const Tokenizer tok(data);
  EXPECT_EQ(tok.Encode("ab<tool>", true), (std::vector<int32_t>{256, 258}));
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{256, 258, 257}), "ab<tool>");

  j["model"]["merges"] = nlohmann::json::array({42});
  try {
    Tokenizer::DataFromHFJson(WriteTemp("tok_bad.json", j.dump()));
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.merges[0]"), std::string::npos) << e.what();
  }
  auto expect_json_error = [](const std::string& json_text, const std::string& needle) {
    try {
      Tokenizer::DataFromHFJson(WriteTemp("tok_err.json", json_text));
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_json_error("{\"model\": ", "not valid JSON");
  expect_json_error("[1, 2]", "not a tokenizer.json");
  expect_json_error(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}, "merges": []}})", "WordPiece");
  expect_json_error(R"({"model": {"vocab": {"a": -3}, "merges": []}})", "model.vocab[\"a\"]");
  expect_json_error(R"({"model": {"vocab": {"a": 0}}})", "model.merges is missing");
  expect_json_error(R"({"model": {"vocab": {"a": 0}, "merges": [["a", "b", "c"]]}})", "model.merges[0]");
  expect_json_error(R"({"model": {"vocab": {"a": 0}, "merges": []}, "added_tokens": [{"content": "x"}]})",
                    "added_tokens[0]");
  EXPECT_THROW(Tokenizer::DataFromHFJson("/nonexistent/tokenizer.json"), Error);
}

gguf::Writer TinyGGUF(const TokenizerData& data) {
  gguf::Writer writer;
  writer.AddString("general.architecture", "llama");
  writer.AddString("tokenizer.ggml.model", data.model);
  writer.AddString("tokenizer.ggml.pre", data.pre);
  writer.AddStringArray("tokenizer.ggml.tokens", data.tokens);
  writer.AddInt32Array("tokenizer.ggml.token_type", data.token_types);
  writer.AddStringArray("tokenizer.ggml.merges", data.merges);
  writer.AddUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(data.eos_id));
  writer.AddBool("tokenizer.ggml.add_bos_token", false);
  return writer;
}

TEST(TokenizerTest, DataFromGGUF) {
  const TokenizerData tiny = TinyData();
  {
    const std::vector<uint8_t> image = TinyGGUF(tiny).WriteMemory();
    const auto file = gguf::File::FromMemory(image.data(), image.size());
    const TokenizerData data = Tokenizer::DataFromGGUF(*file);
    EXPECT_EQ(data.tokens, tiny.tokens);
    EXPECT_EQ(data.token_types, tiny.token_types);
    EXPECT_EQ(data.merges, tiny.merges);
    EXPECT_EQ(data.eos_id, tiny.eos_id);
    EXPECT_EQ(data.bos_id, -1);
    EXPECT_EQ(data.pre, "gpt2");
    EXPECT_FALSE(data.add_bos);
    const Tokenizer tok(data);
    EXPECT_EQ(tok.Encode("abc", false), (std::vector<int32_t>{tok.FindToken("abc")}));
  }
  auto expect_error = [](gguf::Writer writer, const std::string& needle) {
    const std::vector<uint8_t> image = writer.WriteMemory();
    const auto file = gguf::File::FromMemory(image.data(), image.size());
    try {
      Tokenizer::DataFromGGUF(*file);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {
    gguf::Writer writer;
    writer.AddString("tokenizer.ggml.model", "llama");
    expect_error(std::move(writer), "only byte-level BPE");
  }
  {
    TokenizerData data = tiny;
    data.pre = "deepseek-coder";
    expect_error(TinyGGUF(data), "deepseek-coder");
  }
  {
    TokenizerData data = tiny;
    data.merges.push_back("nospace");
    expect_error(TinyGGUF(data), "tokenizer.ggml.merges[6]");
  }
  {
    TokenizerData data = tiny;
    data.eos_id = 5000;
    expect_error(TinyGGUF(data), "tokenizer.ggml.eos_token_id");
  }
  {
    TokenizerData data = tiny;
    data.token_types.pop_back();
    expect_error(TinyGGUF(data), "tokenizer.ggml.token_type");
  }
  {
    gguf::Writer writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddStringArray("tokenizer.ggml.tokens", tiny.tokens);
    expect_error(std::move(writer), "tokenizer.ggml.merges");
  }
}

// ---- throughput ----------------------------------------------------------------------------------------

TEST(TokenizerTest, EncodeThroughput) {
  const Tokenizer& tok = Llama3();
  // English prose from the repository (held-out public-domain text), repeated to ~4 MB.
  std::ifstream in(TRINITY_TEST_DATA "/heldout.txt", std::ios::binary);
  ASSERT_TRUE(in) << "tests/data/heldout.txt is missing";
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text;
  while (text.size() < 4'000'000) text += buffer.str();
  // Best of three passes: the time is printed, never asserted (shared machines are noisy).
  std::vector<int32_t> ids;
  double s = 1e9;
  for (int pass = 0; pass < 3; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    ids = tok.Encode(text, false);
    s = std::min(s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("[ info     ] encode: %.2f MB in %.3f s = %.1f MB/s, %zu tokens (%.2f bytes/token), one thread\n",
              text.size() / 1e6, s, text.size() / 1e6 / s, ids.size(), double(text.size()) / ids.size());
  const auto decode_start = std::chrono::steady_clock::now();
  const std::string decoded = tok.Decode(ids);
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - decode_start).count();
  std::printf("[ info     ] decode: %.1f MB/s\n", text.size() / 1e6 / decode_s);
  EXPECT_EQ(decoded, text);
}

}  // namespace
}  // namespace trinity
