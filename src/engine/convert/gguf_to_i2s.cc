// Ternary GGUF (llama.cpp `bitnet` with TQ2_0 / TQ1_0, or Microsoft's own) -> Microsoft I2_S GGUF.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "engine/convert/convert.h"
#include "engine/convert/convert_internal.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/tensor_type.h"
#include "engine/quant/quant.h"
#include "engine/tokenizer/tokenizer.h"

namespace trinity::convert {
namespace {

using internal::Hparams;
using internal::Log;
using internal::TokenizerMeta;

uint32_t ToU32(uint64_t v, const gguf::File& f, std::string_view key) {
  if (v == 0 || v > 0xffffffffu) Fail("{}: {} = {} is out of range", f.path(), key, v);
  return static_cast<uint32_t>(v);
}

// GGUF raw id of the plain types an embedding may have.
std::optional<uint32_t> DenseTypeId(TensorType t) {
  switch (t) {
    case TensorType::kF32:
      return kGgmlTypeF32;
    case TensorType::kF16:
      return kGgmlTypeF16;
    case TensorType::kQ8_0:
      return kGgmlTypeQ8_0;
    case TensorType::kQ6_K:
      return kGgmlTypeQ6_K;
    default:
      return std::nullopt;
  }
}

std::vector<float> Dequantize(const gguf::File& f, const gguf::TensorInfo& t) {
  if (!quant::CanDequantize(t.type)) {
    Fail("{}: tensor {} has type {}, which cannot be converted", f.path(), t.name, Traits(t.type).name);
  }
  std::vector<float> out(t.n_elements());
  quant::DequantizeRow(t.type, f.TensorData(t), out.size(), out.data());
  return out;
}

std::vector<uint8_t> CopyBytes(const gguf::File& f, const gguf::TensorInfo& t) {
  const uint8_t* p = f.TensorData(t);
  return std::vector<uint8_t>(p, p + t.size_bytes);
}

const gguf::TensorInfo& GetTensor(const gguf::File& f, const std::string& name, const std::vector<uint64_t>& ne) {
  const gguf::TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) Fail("{}: tensor {} is missing", f.path(), name);
  if (t->ne != ne) {
    Fail("{}: tensor {} has shape {{{}}}, expected {{{}}} from the model's hyper-parameters", f.path(), name,
         fmt::join(t->ne, ", "), fmt::join(ne, ", "));
  }
  return *t;
}

// Embedding-like tensor (token_embd, output) in the requested type.
void AddEmbedding(gguf::Writer& w, const gguf::File& f, const gguf::TensorInfo& t, std::optional<uint32_t> target) {
  const std::optional<uint32_t> source = DenseTypeId(t.type);
  if (!target) {  // keep
    if (!source) {
      Fail("{}: tensor {} has type {}; \"keep\" needs F16, F32, Q8_0 or Q6_K", f.path(), t.name, Traits(t.type).name);
    }
    w.AddTensor(t.name, t.ne, *source, CopyBytes(f, t));
    return;
  }
  if (source == target) {
    w.AddTensor(t.name, t.ne, *target, CopyBytes(f, t));
    return;
  }
  const std::vector<float> v = Dequantize(f, t);
  w.AddTensor(t.name, t.ne, *target, internal::EncodeDense(v.data(), t.ne[0], t.ne[1], *target, t.name));
}

std::vector<uint8_t> NormBytes(const gguf::File& f, const gguf::TensorInfo& t) {
  if (t.type == TensorType::kF32) return CopyBytes(f, t);
  const std::vector<float> v = Dequantize(f, t);
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// llama.cpp's optional per-tensor scale (blk.N.attn_q.scale), multiplying the layer's output.
std::optional<float> ExtraScale(const gguf::File& f, const std::string& weight_name) {
  const std::string name = weight_name.substr(0, weight_name.size() - std::string_view(".weight").size()) + ".scale";
  const gguf::TensorInfo* s = f.FindTensor(name);
  if (s == nullptr) return std::nullopt;
  if (s->n_elements() != 1 || (s->type != TensorType::kF32 && s->type != TensorType::kF16 && s->type != TensorType::kBF16)) {
    Fail("{}: tensor {} must hold a single F32/F16/BF16 value", f.path(), name);
  }
  const float v = Dequantize(f, *s)[0];
  if (!std::isfinite(v)) Fail("{}: tensor {} = {} is not finite", f.path(), name, v);
  return v;
}

// One ternary linear -> I2_S bytes.
std::vector<uint8_t> ConvertLinear(const gguf::File& f, const gguf::TensorInfo& t) {
  const uint64_t n = t.n_elements();
  const std::optional<float> extra = ExtraScale(f, t.name);
  std::vector<int8_t> codes(n);
  float scale = 0.0f;
  switch (t.type) {
    case TensorType::kI2_S: {
      std::vector<uint8_t> bytes = CopyBytes(f, t);  // exact copy, padding included
      if (extra) {
        scale = quant::I2SScale(bytes.data(), n) * *extra;
        std::memcpy(bytes.data() + n / 4, &scale, 4);
      }
      return bytes;
    }
    case TensorType::kTQ2_0:
    case TensorType::kTQ1_0: {
      std::vector<float> block_scales(n / quant::kTQBlock);
      if (t.type == TensorType::kTQ2_0) {
        quant::UnpackTQ2_0(f.TensorData(t), n, codes.data(), block_scales.data());
      } else {
        quant::UnpackTQ1_0(f.TensorData(t), n, codes.data(), block_scales.data());
      }
      // I2_S has one scale per tensor: every block holding a non-zero code must agree (compared as
      // the exact f16 values, widened to float). All-zero blocks contribute nothing.
      std::optional<size_t> first;
      for (size_t b = 0; b < block_scales.size(); ++b) {
        bool any = false;
        for (uint64_t i = b * quant::kTQBlock; i < (b + 1) * quant::kTQBlock && !any; ++i) any = codes[i] != 0;
        if (!any) continue;
        if (!first) {
          first = b;
        } else if (block_scales[b] != block_scales[*first]) {
          Fail("{}: tensor {} ({}) has per-block scales that differ (block {}: {}, block {}: {}); I2_S holds one scale "
               "per tensor, so it cannot be converted exactly",
               f.path(), t.name, Traits(t.type).name, *first, block_scales[*first], b, block_scales[b]);
        }
      }
      scale = first ? block_scales[*first] : 0.0f;
      if (!std::isfinite(scale)) Fail("{}: tensor {} has a non-finite block scale", f.path(), t.name);
      break;
    }
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16: {
      const std::vector<float> v = Dequantize(f, t);
      scale = quant::TernarizeDense(v.data(), n, codes.data());
      break;
    }
    default:
      Fail("{}: tensor {} has type {}; ternary layers must be I2_S, TQ2_0, TQ1_0, F32, F16 or BF16", f.path(), t.name,
           Traits(t.type).name);
  }
  if (extra) scale *= *extra;
  return quant::PackI2S(codes.data(), n, scale);
}

TokenizerMeta ReadTokenizer(const gguf::File& f) {
  TokenizerMeta t;
  t.add_bos = f.FindBool("tokenizer.ggml.add_bos_token").value_or(true);
  const std::optional<std::string> model = f.FindString("tokenizer.ggml.model");
  if (!model) Fail("{}: tokenizer.ggml.model is missing: the file has no tokenizer", f.path());
  t.model = *model;
  // Added when absent (see convert.h): the BitNet b1.58 family uses the Llama 3 tokenizer.
  t.pre = f.FindString("tokenizer.ggml.pre").value_or(t.model == "gpt2" ? "llama-bpe" : "");
  t.tokens = f.GetStringArray("tokenizer.ggml.tokens");
  const size_t n = t.tokens.size();
  if (f.Find("tokenizer.ggml.token_type") != nullptr) {
    const std::vector<int64_t>& types = f.GetIntArray("tokenizer.ggml.token_type");
    if (types.size() != n) Fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), types.size(), n);
    t.token_types.assign(types.begin(), types.end());
  } else {
    t.token_types.assign(n, static_cast<int32_t>(TokenType::kNormal));
  }
  if (f.Find("tokenizer.ggml.scores") != nullptr) {
    const std::vector<double>& scores = f.GetFloatArray("tokenizer.ggml.scores");
    if (scores.size() != n) Fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(), scores.size(), n);
    t.scores.assign(scores.begin(), scores.end());
  } else {  // Microsoft writes them: 0 for the base vocabulary, -1000 for added tokens
    t.scores.resize(n);
    for (size_t i = 0; i < n; ++i) t.scores[i] = t.token_types[i] == static_cast<int32_t>(TokenType::kNormal) ? 0.0f : -1000.0f;
  }
  if (f.Find("tokenizer.ggml.merges") != nullptr) {
    t.merges = f.GetStringArray("tokenizer.ggml.merges");
  } else if (t.model == "gpt2") {
    Fail("{}: tokenizer.ggml.merges is missing (a gpt2 BPE tokenizer needs it)", f.path());
  }
  auto id = [&](const char* key) -> std::optional<uint32_t> {
    const std::optional<uint64_t> v = f.FindUint(key);
    if (!v) return std::nullopt;
    if (*v >= n) Fail("{}: {} = {} is outside the vocabulary of {} tokens", f.path(), key, *v, n);
    return static_cast<uint32_t>(*v);
  };
  t.bos_id = id("tokenizer.ggml.bos_token_id");
  t.eos_id = id("tokenizer.ggml.eos_token_id");
  t.pad_id = id("tokenizer.ggml.padding_token_id");
  static const std::set<std::string, std::less<>> kKnown = {
      "tokenizer.ggml.add_bos_token", "tokenizer.ggml.model",         "tokenizer.ggml.pre",
      "tokenizer.ggml.tokens",        "tokenizer.ggml.token_type",    "tokenizer.ggml.scores",
      "tokenizer.ggml.merges",        "tokenizer.ggml.bos_token_id",  "tokenizer.ggml.eos_token_id",
      "tokenizer.ggml.padding_token_id", "tokenizer.chat_template"};
  for (const gguf::KeyValue& kv : f.metadata()) {
    if (kv.key.starts_with("tokenizer.") && !kKnown.count(kv.key)) t.extra.push_back(kv);
  }
  // The source's own template is kept (a llama.cpp file converted from 2B-4T carries the model's
  // real template); Microsoft's marker string otherwise.
  t.chat_template = f.FindString("tokenizer.chat_template").value_or(kMicrosoftChatTemplate);
  return t;
}

// Microsoft-format input whose linears are all I2_S: copied through, metadata and tensors in
// file order. Only general.name (when given), trinity.ffn_activation (when given) and the
// embedding type (per options) change.
void CopyThrough(const gguf::File& f, const std::string& out_path, const ConvertOptions& options,
                 std::optional<uint32_t> embd_type) {
  gguf::Writer w;
  const std::string activation =
      options.ffn_activation.empty() ? "" : internal::NormalizeActivation(options.ffn_activation, "--ffn-activation");
  bool wrote_activation = false;
  for (const gguf::KeyValue& kv : f.metadata()) {
    if (kv.key == "general.alignment") continue;  // the writer lays the file out with the default 32
    if (kv.key == "general.name" && !options.name.empty()) {
      w.AddString(kv.key, options.name);
    } else if (kv.key == "trinity.ffn_activation" && !activation.empty()) {
      if (activation != "relu2") w.AddString(kv.key, activation);
      wrote_activation = true;
    } else {
      w.AddValue(kv.key, kv.value);
    }
  }
  if (!activation.empty() && activation != "relu2" && !wrote_activation) w.AddString("trinity.ffn_activation", activation);
  for (const gguf::TensorInfo& t : f.tensors()) {
    if (t.name == "token_embd.weight" || t.name == "output.weight") {
      AddEmbedding(w, f, t, embd_type);
    } else {
      w.AddTensor(t.name, t.ne, t.type_id, CopyBytes(f, t));
    }
  }
  w.WriteFile(out_path);
}

}  // namespace

void ConvertGgufToI2S(const std::string& in_path, const std::string& out_path, const ConvertOptions& options) {
  const std::optional<uint32_t> embd_type = internal::EmbeddingTypeId(options.embedding_type);
  internal::CheckOutputPath(out_path, in_path, options.force);
  const std::unique_ptr<gguf::File> file = gguf::File::Open(in_path);
  const gguf::File& f = *file;
  const std::string arch = f.GetString("general.architecture");
  if (arch != "bitnet" && !IsMicrosoftBitnetArch(arch)) {
    Fail("{}: architecture \"{}\" is not a BitNet b1.58 model; expected bitnet, bitnet-b1.58 or bitnet-25", f.path(), arch);
  }
  const std::string a = arch + ".";
  Hparams hp;
  hp.n_embd = ToU32(f.GetUint(a + "embedding_length"), f, a + "embedding_length");
  hp.n_layer = ToU32(f.GetUint(a + "block_count"), f, a + "block_count");
  hp.n_ff = ToU32(f.GetUint(a + "feed_forward_length"), f, a + "feed_forward_length");
  hp.n_head = ToU32(f.GetUint(a + "attention.head_count"), f, a + "attention.head_count");
  hp.n_head_kv = ToU32(f.FindUint(a + "attention.head_count_kv").value_or(hp.n_head), f, a + "attention.head_count_kv");
  hp.n_ctx = ToU32(f.GetUint(a + "context_length"), f, a + "context_length");
  hp.rms_eps = static_cast<float>(f.GetFloat(a + "attention.layer_norm_rms_epsilon"));
  hp.rope_theta = static_cast<float>(f.FindFloat(a + "rope.freq_base").value_or(10000.0));  // llama.cpp's default
  if (hp.n_embd % hp.n_head != 0 || hp.n_head % hp.n_head_kv != 0) {
    Fail("{}: {} heads / {} KV heads do not divide embedding length {}", f.path(), hp.n_head, hp.n_head_kv, hp.n_embd);
  }
  hp.n_rot = ToU32(f.FindUint(a + "rope.dimension_count").value_or(hp.n_embd / hp.n_head), f, a + "rope.dimension_count");
  if (hp.n_rot != hp.n_embd / hp.n_head) {
    Fail("{}: rope.dimension_count {} differs from the head dimension {}; not supported", f.path(), hp.n_rot,
         hp.n_embd / hp.n_head);
  }
  if (hp.n_embd % quant::kI2SBlock != 0 || hp.n_ff % quant::kI2SBlock != 0) {
    Fail("{}: embedding length {} and feed-forward length {} must be multiples of 128 for I2_S", f.path(), hp.n_embd, hp.n_ff);
  }
  const gguf::TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) Fail("{}: tensor token_embd.weight is missing", f.path());
  if (embd->ne.size() != 2 || embd->ne[0] != hp.n_embd) {
    Fail("{}: tensor token_embd.weight has shape {{{}}}, expected {{{}, n_vocab}}", f.path(), fmt::join(embd->ne, ", "),
         hp.n_embd);
  }
  hp.n_vocab = ToU32(embd->ne[1], f, "token_embd.weight rows");
  if (auto v = f.FindUint(a + "vocab_size"); v && *v != hp.n_vocab) {
    Fail("{}: {}vocab_size = {} but token_embd.weight has {} rows", f.path(), a, *v, hp.n_vocab);
  }
  // Activation: llama.cpp computes SiLU for `bitnet`; Microsoft's architectures imply relu^2; a
  // trinity.ffn_activation key or the option overrides.
  std::string activation = options.ffn_activation;
  if (activation.empty()) activation = f.FindString("trinity.ffn_activation").value_or(arch == "bitnet" ? "silu" : "relu2");
  hp.activation = internal::NormalizeActivation(activation, f.path() + " FFN activation");
  std::string default_name = std::filesystem::path(in_path).stem().string();
  hp.name = !options.name.empty() ? options.name : f.FindString("general.name").value_or(default_name);

  // Validate shapes of every tensor first.
  std::set<std::string> used = {"token_embd.weight", "output_norm.weight", "output.weight"};
  (void)GetTensor(f, "output_norm.weight", {hp.n_embd});
  if (const gguf::TensorInfo* out = f.FindTensor("output.weight"); out != nullptr) {
    (void)GetTensor(f, "output.weight", {hp.n_embd, hp.n_vocab});
  }
  bool all_i2s = true;
  for (uint32_t l = 0; l < hp.n_layer; ++l) {
    for (const internal::BlockTensor& bt : internal::kBlockTensors) {
      const std::string name = fmt::format("blk.{}.{}.weight", l, bt.gguf);
      const gguf::TensorInfo& t = GetTensor(f, name, internal::BlockTensorShape(bt.gguf, hp));
      used.insert(name);
      if (bt.ternary) {
        all_i2s = all_i2s && t.type == TensorType::kI2_S;
        used.insert(fmt::format("blk.{}.{}.scale", l, bt.gguf));
      }
    }
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    if (!used.count(t.name)) Log(options, fmt::format("ignoring tensor {}", t.name));
  }

  if (IsMicrosoftBitnetArch(arch) && all_i2s) {
    Log(options, fmt::format("{}: already I2_S ({}): copying through", f.path(), arch));
    CopyThrough(f, out_path, options, embd_type);
    return;
  }

  const TokenizerMeta tok = ReadTokenizer(f);
  if (tok.tokens.size() != hp.n_vocab) {
    Fail("{}: tokenizer.ggml.tokens has {} entries but token_embd.weight has {} rows", f.path(), tok.tokens.size(),
         hp.n_vocab);
  }
  gguf::Writer w;
  internal::WriteMetadata(w, hp, tok);
  Log(options, fmt::format("{} ({}): {} layers, n_embd {}, n_ff {}, heads {}/{}, vocab {}, activation {}", f.path(), arch,
                           hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.n_vocab, hp.activation));

  AddEmbedding(w, f, *embd, embd_type);
  w.AddTensor("output_norm.weight", {hp.n_embd}, kGgmlTypeF32, NormBytes(f, *f.FindTensor("output_norm.weight")));
  if (const gguf::TensorInfo* out = f.FindTensor("output.weight"); out != nullptr) AddEmbedding(w, f, *out, embd_type);
  for (uint32_t l = 0; l < hp.n_layer; ++l) {
    for (const internal::BlockTensor& bt : internal::kBlockTensors) {
      const std::string name = fmt::format("blk.{}.{}.weight", l, bt.gguf);
      const gguf::TensorInfo& t = *f.FindTensor(name);
      if (bt.ternary) {
        w.AddTensor(name, t.ne, kBitnetTypeI2_S, ConvertLinear(f, t));
      } else {
        w.AddTensor(name, t.ne, kGgmlTypeF32, NormBytes(f, t));
      }
    }
    Log(options, fmt::format("converted block {}/{}", l + 1, hp.n_layer));
  }
  w.WriteFile(out_path);
}

}  // namespace trinity::convert
