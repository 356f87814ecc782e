#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/convert/convert_internal.h"
#include "engine/gguf/tensor_type.h"
#include "engine/quant/quant.h"

namespace trinity::convert {

// Verbatim from microsoft/BitNet utils/convert-ms-to-gguf-bitnet.py (OutputFile.write_all). The
// "\n" inside the Jinja string literals are two characters, backslash and n, as in the file.
const char* const kMicrosoftChatTemplate =
    R"({% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\n\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %})";

namespace internal {

void WriteMetadata(gguf::Writer& w, const Hparams& hp, const TokenizerMeta& tok) {
  const std::string a = kArch;
  // Microsoft's ggml-model-i2_s.gguf, in file order.
  w.AddString("general.architecture", a);
  w.AddString("general.name", hp.name);
  w.AddUint32(a + ".vocab_size", hp.n_vocab);
  w.AddUint32(a + ".context_length", hp.n_ctx);
  w.AddUint32(a + ".embedding_length", hp.n_embd);
  w.AddUint32(a + ".block_count", hp.n_layer);
  w.AddUint32(a + ".feed_forward_length", hp.n_ff);
  w.AddUint32(a + ".rope.dimension_count", hp.n_rot);
  w.AddUint32(a + ".attention.head_count", hp.n_head);
  w.AddUint32(a + ".attention.head_count_kv", hp.n_head_kv);
  w.AddBool("tokenizer.ggml.add_bos_token", tok.add_bos);
  w.AddFloat32(a + ".attention.layer_norm_rms_epsilon", hp.rms_eps);
  w.AddFloat32(a + ".rope.freq_base", hp.rope_theta);
  w.AddUint32("general.file_type", kFileTypeI2S);
  w.AddString("tokenizer.ggml.model", tok.model);
  // Added by Trinity (Microsoft omits it; see convert.h): harmless for bitnet.cpp, which reads it
  // only to pick the pre-tokenizer, and right for every llama.cpp-based loader.
  if (!tok.pre.empty()) w.AddString("tokenizer.ggml.pre", tok.pre);
  w.AddStringArray("tokenizer.ggml.tokens", tok.tokens);
  w.AddFloat32Array("tokenizer.ggml.scores", tok.scores);
  w.AddInt32Array("tokenizer.ggml.token_type", tok.token_types);
  w.AddStringArray("tokenizer.ggml.merges", tok.merges);
  if (tok.bos_id) w.AddUint32("tokenizer.ggml.bos_token_id", *tok.bos_id);
  if (tok.eos_id) w.AddUint32("tokenizer.ggml.eos_token_id", *tok.eos_id);
  if (tok.pad_id) w.AddUint32("tokenizer.ggml.padding_token_id", *tok.pad_id);
  for (const gguf::KeyValue& kv : tok.extra) w.AddValue(kv.key, kv.value);
  if (!tok.chat_template.empty()) w.AddString("tokenizer.chat_template", tok.chat_template);
  w.AddUint32("general.quantization_version", 2);
  // Added by Trinity only when the FFN is not relu^2. bitnet.cpp ignores it.
  if (hp.activation != "relu2") w.AddString("trinity.ffn_activation", hp.activation);
}

std::string NormalizeActivation(std::string_view value, std::string_view where) {
  if (value == "relu2" || value == "relu_squared" || value == "squared_relu") return "relu2";
  if (value == "silu" || value == "swish") return "silu";
  Fail("{}: FFN activation \"{}\" is not supported; expected \"relu2\" (squared ReLU) or \"silu\"", where, value);
}

std::optional<uint32_t> EmbeddingTypeId(std::string_view t) {
  if (t == "f16") return kGgmlTypeF16;
  if (t == "f32") return kGgmlTypeF32;
  if (t == "q8_0") return kGgmlTypeQ8_0;
  if (t == "q6_k") return kGgmlTypeQ6_K;
  if (t == "keep") return std::nullopt;
  Fail("embedding type \"{}\" is not supported; expected f16, f32, q8_0, q6_k or keep", t);
}

std::vector<uint8_t> EncodeDense(const float* x, uint64_t n_cols, uint64_t n_rows, uint32_t type_id,
                                 std::string_view what) {
  const uint64_t n = n_cols * n_rows;
  switch (type_id) {
    case kGgmlTypeF32: {
      std::vector<uint8_t> out(n * 4);
      if (n > 0) std::memcpy(out.data(), x, n * 4);
      return out;
    }
    case kGgmlTypeF16:
      return quant::ToF16(x, n);
    case kGgmlTypeQ8_0:
      if (n_cols % quant::kQ8_0Block != 0) Fail("{}: row size {} is not a multiple of 32, needed for Q8_0", what, n_cols);
      return quant::QuantizeQ8_0(x, n);
    case kGgmlTypeQ6_K:
      if (n_cols % quant::kQ6_KBlock != 0) Fail("{}: row size {} is not a multiple of 256, needed for Q6_K", what, n_cols);
      return quant::QuantizeQ6_K(x, n);
    default:
      Fail("{}: cannot encode as GGUF type {}", what, type_id);
  }
}

std::vector<uint64_t> BlockTensorShape(std::string_view s, const Hparams& hp) {
  const uint64_t n_embd = hp.n_embd;
  const uint64_t n_embd_kv = static_cast<uint64_t>(hp.n_embd / hp.n_head) * hp.n_head_kv;
  if (s == "attn_q" || s == "attn_output") return {n_embd, n_embd};
  if (s == "attn_k" || s == "attn_v") return {n_embd, n_embd_kv};
  if (s == "ffn_gate" || s == "ffn_up") return {n_embd, hp.n_ff};
  if (s == "ffn_down") return {hp.n_ff, n_embd};
  if (s == "ffn_sub_norm") return {hp.n_ff};
  return {n_embd};  // attn_norm, attn_sub_norm, ffn_norm
}

void CheckOutputPath(const std::string& out_path, const std::string& in_path, bool force) {
  namespace fs = std::filesystem;
  if (out_path.empty()) Fail("no output path given");
  std::error_code ec;
  if (fs::exists(out_path, ec)) {
    if (fs::equivalent(out_path, in_path, ec)) Fail("{}: the output would overwrite the input", out_path);
    if (!force) Fail("{}: output file exists (use --force to overwrite)", out_path);
    if (fs::is_directory(out_path, ec)) Fail("{}: output path is a directory", out_path);
  }
}

void Log(const ConvertOptions& options, const std::string& line) {
  if (options.log) options.log(line);
}

}  // namespace internal
}  // namespace trinity::convert
