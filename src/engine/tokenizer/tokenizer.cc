#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <string>
#include <utility>

#include "engine/common/error.h"
#include "engine/tokenizer/flat_map.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/tokenizer_internal.h"
#include "engine/tokenizer/unicode.h"

namespace trinity {
namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
// are shifted to U+0100.. in byte order, so every token is printable text.
struct ByteMap {
  std::array<uint32_t, 256> byte_to_cp;
  std::array<int16_t, 324> cp_to_byte;  // -1 where the code point is not in the image
};

constexpr ByteMap MakeByteMap() {
  ByteMap map{};
  for (auto& b : map.cp_to_byte) b = -1;
  uint32_t shifted = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map.byte_to_cp[b] = printable ? b : shifted++;
    map.cp_to_byte[map.byte_to_cp[b]] = static_cast<int16_t>(b);
  }
  return map;
}
constexpr ByteMap kByteMap = MakeByteMap();

// Raw bytes of a token text in byte-level form; false if some character is not in the map.
bool ByteLevelToBytes(std::string_view text, std::string* bytes) {
  bytes->clear();
  for (size_t pos = 0; pos < text.size();) {
    const unicode::DecodedChar c = unicode::DecodeUtf8(text, pos);
    if (c.cp >= kByteMap.cp_to_byte.size() || kByteMap.cp_to_byte[c.cp] < 0) return false;
    bytes->push_back(static_cast<char>(kByteMap.cp_to_byte[c.cp]));
    pos += c.len;
  }
  return true;
}

bool IsSpecialType(int32_t type) {
  return type == static_cast<int32_t>(TokenType::kControl) || type == static_cast<int32_t>(TokenType::kUserDefined);
}

}  // namespace

std::string ByteLevelEncode(std::string_view bytes) {
  std::string text;
  text.reserve(bytes.size() * 2);
  for (char b : bytes) unicode::AppendUtf8(kByteMap.byte_to_cp[static_cast<uint8_t>(b)], &text);
  return text;
}

void ValidateTokenizerData(const TokenizerData& data) {
  if (data.model != "gpt2") {
    Fail("tokenizer.ggml.model = \"{}\" is not supported: only byte-level BPE (\"gpt2\") is", data.model);
  }
  PreTokenizerFor(data.pre);  // throws naming an unknown tokenizer.ggml.pre
  const size_t n_vocab = data.tokens.size();
  if (n_vocab == 0) Fail("tokenizer.ggml.tokens is empty");
  if (n_vocab > static_cast<size_t>(INT32_MAX)) Fail("tokenizer.ggml.tokens has {} entries (too many)", n_vocab);
  if (!data.token_types.empty() && data.token_types.size() != n_vocab) {
    Fail("tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}", data.token_types.size(),
         n_vocab);
  }
  for (size_t i = 0; i < data.token_types.size(); ++i) {
    if (data.token_types[i] < 0 || data.token_types[i] > static_cast<int32_t>(TokenType::kByte)) {
      Fail("tokenizer.ggml.token_type[{}] = {} is not a token type (0..6)", i, data.token_types[i]);
    }
  }
  if (!data.scores.empty() && data.scores.size() != n_vocab) {
    Fail("tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}", data.scores.size(), n_vocab);
  }
  const std::pair<const char*, int32_t> ids[] = {{"tokenizer.ggml.bos_token_id", data.bos_id},
                                                 {"tokenizer.ggml.eos_token_id", data.eos_id},
                                                 {"tokenizer.ggml.eot_token_id", data.eot_id},
                                                 {"tokenizer.ggml.padding_token_id", data.pad_id}};
  for (const auto& [key, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n_vocab)) {
      Fail("{} = {} is outside the vocabulary (n_vocab {})", key, id, n_vocab);
    }
  }
  for (size_t i = 0; i < data.merges.size(); ++i) {
    const std::string& merge = data.merges[i];
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      Fail("tokenizer.ggml.merges[{}] = \"{}\" is not two tokens separated by one space", i, merge);
    }
  }
}

struct Tokenizer::Impl {
  TokenizerData data;
  PreTokenizerKind pre_kind = PreTokenizerKind::kLlama3;
  bool ignore_merges = true;  // look the whole pre-token up before merging (Llama 3 only)
  std::vector<std::string> token_bytes;     // id -> raw bytes
  std::vector<uint8_t> is_control;          // id -> TokenType::kControl
  FlatStringMap bpe_vocab;                  // raw bytes -> id, tokens BPE may produce
  FlatStringMap text_to_id;                 // token text (as stored) -> id, for FindToken
  std::array<int32_t, 256> byte_ids;        // raw byte -> id of its one-byte token, -1 if none
  MergeMap merges;                          // (left, right) -> rank and result
  // Control/user-defined tokens parse_special looks for, longest first, bucketed by first byte.
  std::array<std::vector<int32_t>, 256> specials_by_first_byte;

  // Scratch space for one BPE word.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
    // Heap order: lowest rank first, leftmost first among equal ranks.
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  struct Scratch {
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  int32_t ByteId(uint8_t b) const {
    const int32_t id = byte_ids[b];
    if (id < 0) Fail("tokenizer: the vocabulary has no token for byte 0x{:02X}", b);
    return id;
  }

  void PushCandidate(Scratch* scratch, int32_t pos) const {
    const Symbol& left = scratch->symbols[pos];
    if (left.next < 0) return;
    const MergeMap::Merge* merge = merges.Find(left.id, scratch->symbols[left.next].id);
    if (merge == nullptr) return;
    scratch->heap.push_back({merge->rank, pos, merge->merged_id});
    std::push_heap(scratch->heap.begin(), scratch->heap.end());
  }

  // Byte-level BPE of one pre-token (raw bytes), appended to out.
  //   symbols = bytes; repeat: merge the adjacent pair of lowest rank (leftmost on ties).
  // A linked list of symbols and a heap of candidate merges make this O(n log n); a candidate
  // whose symbols have changed since it was queued is skipped when popped.
  void Bpe(std::string_view piece, Scratch* scratch, std::vector<int32_t>* out) const {
    if (ignore_merges || piece.size() == 1) {
      if (const int32_t id = bpe_vocab.Find(piece); id >= 0) {
        out->push_back(id);
        return;
      }
    }
    if (piece.size() > static_cast<size_t>(INT32_MAX)) Fail("tokenizer: a pre-token of {} bytes is too long", piece.size());
    const auto n = static_cast<int32_t>(piece.size());
    auto& symbols = scratch->symbols;
    auto& heap = scratch->heap;
    symbols.resize(n);
    heap.clear();
    for (int32_t i = 0; i < n; ++i) {
      symbols[i] = {ByteId(static_cast<uint8_t>(piece[i])), i - 1, i + 1 < n ? i + 1 : -1};
    }
    for (int32_t i = 0; i + 1 < n; ++i) PushCandidate(scratch, i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = symbols[top.pos];
      if (left.id < 0 || left.next < 0) continue;  // merged away, or now last
      Symbol& right = symbols[left.next];
      const MergeMap::Merge* merge = merges.Find(left.id, right.id);
      if (merge == nullptr || merge->merged_id != top.merged_id) continue;  // stale
      left.id = top.merged_id;
      right.id = -1;
      left.next = right.next;
      if (left.next >= 0) symbols[left.next].prev = top.pos;
      if (left.prev >= 0) PushCandidate(scratch, left.prev);
      PushCandidate(scratch, top.pos);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
  }

  // Plain text (no special-token parsing).
  void EncodeText(std::string_view text, Scratch* scratch, std::vector<int32_t>* out) const {
    for (size_t pos = 0; pos < text.size();) {
      const size_t end = NextPreToken(pre_kind, text, pos);
      Bpe(text.substr(pos, end - pos), scratch, out);
      pos = end;
    }
  }

  // Longest special token that starts at text[pos], or -1.
  int32_t SpecialAt(std::string_view text, size_t pos) const {
    for (int32_t id : specials_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      if (text.substr(pos).starts_with(data.tokens[id])) return id;
    }
    return -1;
  }
};

Tokenizer::Tokenizer(TokenizerData data) : impl_(std::make_unique<Impl>()) {
  ValidateTokenizerData(data);
  Impl& impl = *impl_;
  const size_t n_vocab = data.tokens.size();
  if (data.token_types.empty()) data.token_types.assign(n_vocab, static_cast<int32_t>(TokenType::kNormal));
  impl.pre_kind = PreTokenizerFor(data.pre);
  impl.ignore_merges = impl.pre_kind == PreTokenizerKind::kLlama3;

  impl.token_bytes.resize(n_vocab);
  impl.is_control.resize(n_vocab);
  impl.byte_ids.fill(-1);
  impl.bpe_vocab.Reserve(n_vocab);
  impl.text_to_id.Reserve(n_vocab);
  std::vector<std::pair<size_t, int32_t>> specials;  // (length, id)
  for (size_t i = 0; i < n_vocab; ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string& text = data.tokens[i];
    const int32_t type = data.token_types[i];
    impl.is_control[i] = type == static_cast<int32_t>(TokenType::kControl);
    impl.text_to_id.Insert(text, id);  // the first id wins for duplicated texts
    if (IsSpecialType(type)) {
      // Control and user-defined tokens stand for their text as written, not byte-level form.
      impl.token_bytes[i] = text;
      if (!text.empty()) specials.emplace_back(text.size(), id);
      continue;
    }
    // A text outside the byte map cannot come from byte-level BPE; keep it verbatim for decoding.
    if (!ByteLevelToBytes(text, &impl.token_bytes[i])) {
      impl.token_bytes[i] = text;
      continue;
    }
    const std::string& bytes = impl.token_bytes[i];
    if (bytes.empty()) continue;
    impl.bpe_vocab.Insert(bytes, id);
    if (bytes.size() == 1 && impl.byte_ids[static_cast<uint8_t>(bytes[0])] < 0) {
      impl.byte_ids[static_cast<uint8_t>(bytes[0])] = id;
    }
  }
  std::stable_sort(specials.begin(), specials.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [length, id] : specials) {
    impl.specials_by_first_byte[static_cast<uint8_t>(data.tokens[id][0])].push_back(id);
  }

  impl.merges.Reserve(data.merges.size());
  std::string left_bytes, right_bytes, merged_bytes;
  for (size_t rank = 0; rank < data.merges.size(); ++rank) {
    const std::string& merge = data.merges[rank];
    const size_t space = merge.find(' ');
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    auto find = [&](std::string_view part, std::string* bytes) -> int32_t {
      if (!ByteLevelToBytes(part, bytes)) {
        Fail("tokenizer.ggml.merges[{}] = \"{}\": \"{}\" is not byte-level text", rank, merge, part);
      }
      const int32_t id = impl.bpe_vocab.Find(*bytes);
      if (id < 0) Fail("tokenizer.ggml.merges[{}] = \"{}\": \"{}\" is not in the vocabulary", rank, merge, part);
      return id;
    };
    const int32_t left_id = find(left, &left_bytes);
    const int32_t right_id = find(right, &right_bytes);
    merged_bytes.assign(left_bytes).append(right_bytes);
    const int32_t merged_id = impl.bpe_vocab.Find(merged_bytes);
    if (merged_id < 0) {
      Fail("tokenizer.ggml.merges[{}] = \"{}\": the merged token is not in the vocabulary", rank, merge);
    }
    // A pair listed twice keeps its first (lowest) rank.
    impl.merges.Insert(left_id, right_id, {static_cast<int32_t>(rank), merged_id});
  }
  impl.data = std::move(data);
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  if (!parse_special) {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    Impl::Scratch scratch;
    impl_->EncodeText(text, &scratch, &ids);
    return ids;
  }
  return EncodeWithPlain(text, {});
}

std::vector<int32_t> Tokenizer::EncodeWithPlain(std::string_view text, std::span<const Range> plain) const {
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  Impl::Scratch scratch;
  // Split out special tokens first (leftmost, then longest), encode the text between them. A
  // special token is taken only where it neither starts in nor reaches into a plain range.
  size_t start = 0;
  size_t next_plain = 0;  // the first plain range not wholly before pos
  for (size_t pos = 0; pos < text.size(); ++pos) {
    while (next_plain < plain.size() && plain[next_plain].end <= pos) ++next_plain;
    if (next_plain < plain.size() && plain[next_plain].begin <= pos) {
      pos = plain[next_plain].end - 1;  // skip the range (the loop's ++ lands on its end)
      continue;
    }
    if (impl.specials_by_first_byte[static_cast<uint8_t>(text[pos])].empty()) continue;
    const int32_t id = impl.SpecialAt(text, pos);
    if (id < 0) continue;
    if (next_plain < plain.size() && pos + impl.data.tokens[id].size() > plain[next_plain].begin) continue;
    impl.EncodeText(text.substr(start, pos - start), &scratch, &ids);
    ids.push_back(id);
    pos += impl.data.tokens[id].size() - 1;
    start = pos + 1;
  }
  impl.EncodeText(text.substr(start), &scratch, &ids);
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool render_special) const {
  std::string text;
  text.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    if (!render_special && IsControl(id)) continue;
    text += impl_->token_bytes[id];
  }
  return text;
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= n_vocab()) Fail("tokenizer: token id {} is outside the vocabulary (n_vocab {})", id, n_vocab());
  return impl_->token_bytes[id];
}

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->token_bytes.size()); }

bool Tokenizer::IsControl(int32_t id) const {
  if (id < 0 || id >= n_vocab()) Fail("tokenizer: token id {} is outside the vocabulary (n_vocab {})", id, n_vocab());
  return impl_->is_control[id] != 0;
}

int32_t Tokenizer::FindToken(std::string_view text) const {
  return impl_->text_to_id.Find(text);
}

const TokenizerData& Tokenizer::data() const { return impl_->data; }

// ---- StreamDecoder ------------------------------------------------------------------------------

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Moves every complete character from the front of *pending to the result, replacing each
// maximal invalid subpart with U+FFFD; an incomplete tail stays in *pending unless `flush`.
std::string DrainUtf8(std::string* pending, bool flush) {
  std::string out;
  size_t pos = 0;
  while (pos < pending->size()) {
    const unicode::Utf8Check check = unicode::CheckUtf8(*pending, pos);
    if (check.status == unicode::Utf8Status::kComplete) {
      out.append(*pending, pos, check.len);
    } else if (check.status == unicode::Utf8Status::kInvalid || flush) {
      out += kReplacement;
    } else {
      break;  // may still complete
    }
    pos += check.len;
  }
  pending->erase(0, pos);
  return out;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool render_special)
    : tokenizer_(&tokenizer), render_special_(render_special) {}

std::string StreamDecoder::Push(int32_t id) {
  if (!render_special_ && tokenizer_->IsControl(id)) return {};
  pending_ += tokenizer_->TokenBytes(id);
  return DrainUtf8(&pending_, /*flush=*/false);
}

std::string StreamDecoder::Flush() { return DrainUtf8(&pending_, /*flush=*/true); }

}  // namespace trinity
