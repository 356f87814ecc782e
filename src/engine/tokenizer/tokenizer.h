// Byte-level BPE tokenizer (GPT-2 byte map, Llama 3 pre-tokenizer by default).
//
// Built from GGUF metadata (tokenizer.ggml.*) or from a Hugging Face tokenizer.json. Agrees with
// the reference implementation (HF `tokenizers`) on tests/data/llama3_cases.jsonl.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace trinity {

namespace gguf {
class File;
}

// GGUF token types (llama.cpp's enum).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything that defines a tokenizer; what GGUF stores under tokenizer.ggml.*.
struct TokenizerData {
  std::string model = "gpt2";               // tokenizer.ggml.model
  std::string pre = "llama-bpe";            // tokenizer.ggml.pre ("" means default: Llama 3)
  std::vector<std::string> tokens;          // id -> token text (byte-level unicode form)
  std::vector<float> scores;                // may be empty
  std::vector<int32_t> token_types;         // TokenType per id
  std::vector<std::string> merges;          // "a b" pairs, rank order
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;                      // <|eot_id|> if present, else -1
  int32_t pad_id = -1;
  bool add_bos = true;                      // tokenizer.ggml.add_bos_token
};

class Tokenizer {
 public:
  explicit Tokenizer(TokenizerData data);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Reads tokenizer.ggml.* (throws trinity::Error naming the key on anything malformed).
  static TokenizerData DataFromGGUF(const gguf::File& file);
  // Reads a Hugging Face tokenizer.json (model.vocab, model.merges, added_tokens).
  static TokenizerData DataFromHFJson(const std::string& path);

  // Never adds BOS. With parse_special, the text of control/user-defined tokens (e.g.
  // "<|eot_id|>") becomes that token; without, it is encoded as plain text.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special) const;
  // Byte range [begin, end) of a text.
  struct Range {
    size_t begin = 0;
    size_t end = 0;
  };
  // Encode(text, parse_special = true), except that special-token text inside the `plain` ranges
  // (sorted, disjoint: e.g. the messages inside a chat template) is encoded as plain text, so what
  // a user writes can never become a control token such as <|eot_id|>. Text outside special tokens
  // is tokenised exactly as Encode does.
  std::vector<int32_t> EncodeWithPlain(std::string_view text, std::span<const Range> plain) const;
  // Raw bytes of the tokens, concatenated (control tokens render as their text only when
  // render_special is true).
  std::string Decode(std::span<const int32_t> ids, bool render_special = false) const;
  // The raw bytes of one token (may be part of a UTF-8 character).
  std::string TokenBytes(int32_t id) const;

  int32_t n_vocab() const;
  bool IsControl(int32_t id) const;  // control tokens (BOS, EOS, eot, reserved...)
  int32_t FindToken(std::string_view text) const;  // -1 when absent
  const TokenizerData& data() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text without ever emitting half a UTF-8 character: bytes of an
// incomplete character are held back until the character completes (invalid sequences are
// emitted as U+FFFD once it is clear they cannot complete).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool render_special = false);
  std::string Push(int32_t id);  // text that is complete after this token
  std::string Flush();           // whatever is held back (invalid bytes -> U+FFFD)

 private:
  const Tokenizer* tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace trinity
