// Pieces shared by the two converters (not part of the public interface).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/common/error.h"
#include "engine/convert/convert.h"
#include "engine/gguf/gguf.h"

namespace trinity::convert::internal {

inline constexpr const char* kArch = "bitnet-b1.58";
inline constexpr uint32_t kFileTypeI2S = 40;

// Hyper-parameters written under bitnet-b1.58.* (all uint32 / float32, as Microsoft writes them).
struct Hparams {
  std::string name;
  uint32_t n_vocab = 0;
  uint32_t n_ctx = 0;
  uint32_t n_embd = 0;
  uint32_t n_layer = 0;
  uint32_t n_ff = 0;
  uint32_t n_rot = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 500000.0f;
  std::string activation = "relu2";  // "relu2" | "silu"
};

// Everything written under tokenizer.*.
struct TokenizerMeta {
  bool add_bos = true;
  std::string model = "gpt2";
  std::string pre = "llama-bpe";  // empty: not written
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> token_types;
  std::vector<std::string> merges;
  std::optional<uint32_t> bos_id, eos_id, pad_id;
  std::vector<gguf::KeyValue> extra;  // other tokenizer.* keys, written after padding_token_id
  std::string chat_template;          // empty: not written
};

// Writes the metadata in Microsoft's order (see convert.h for the two added keys).
void WriteMetadata(gguf::Writer& writer, const Hparams& hp, const TokenizerMeta& tok);

// Canonical activation name for a user/config string, or throws ("relu2", "silu").
std::string NormalizeActivation(std::string_view value, std::string_view where);

// Checks embedding_type early. Returns the GGUF type id, or nullopt for "keep".
std::optional<uint32_t> EmbeddingTypeId(std::string_view embedding_type);
// Encodes n_rows x n_cols floats as type_id (F32, F16, Q8_0, Q6_K); `what` names the tensor.
std::vector<uint8_t> EncodeDense(const float* x, uint64_t n_cols, uint64_t n_rows, uint32_t type_id,
                                 std::string_view what);

// Per-block tensor names, in the order written (block-local suffixes, without "blk.N.").
struct BlockTensor {
  const char* gguf;      // e.g. "attn_q"
  bool ternary;          // I2_S linear (else an F32 norm)
};
inline constexpr BlockTensor kBlockTensors[] = {
    {"attn_norm", false}, {"attn_q", true},  {"attn_k", true},        {"attn_v", true},
    {"attn_sub_norm", false}, {"attn_output", true}, {"ffn_norm", false}, {"ffn_gate", true},
    {"ffn_up", true},     {"ffn_sub_norm", false}, {"ffn_down", true},
};
// ggml shape {ne0 = in, ne1 = out} of a linear, or {n} of a norm.
std::vector<uint64_t> BlockTensorShape(std::string_view suffix, const Hparams& hp);

void CheckOutputPath(const std::string& out_path, const std::string& in_path, bool force);
void Log(const ConvertOptions& options, const std::string& line);

}  // namespace trinity::convert::internal
