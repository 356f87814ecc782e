// Hugging Face BitNet checkpoint -> Microsoft I2_S GGUF.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/convert/convert.h"
#include "engine/convert/convert_internal.h"
#include "engine/convert/safetensors.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/tensor_type.h"
#include "engine/quant/quant.h"
#include "engine/tokenizer/tokenizer.h"

namespace trinity::convert {
namespace {

namespace fs = std::filesystem;
using internal::Hparams;
using internal::Log;
using internal::TokenizerMeta;
using nlohmann::json;

json ReadJsonFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) Fail("{}: cannot read", path.string());
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) Fail("{}: not valid JSON", path.string());
  if (!j.is_object()) Fail("{}: expected a JSON object", path.string());
  return j;
}

uint32_t ConfigUint(const json& config, const std::string& key, const std::string& path,
                    std::optional<uint32_t> fallback = std::nullopt) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    if (fallback) return *fallback;
    Fail("{}: missing \"{}\"", path, key);
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
    Fail("{}: \"{}\" must be a positive integer, got {}", path, key, it->dump());
  }
  return static_cast<uint32_t>(it->get<int64_t>());
}

float ConfigFloat(const json& config, const std::string& key, const std::string& path, float fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_number() || !(it->get<double>() > 0.0) || !std::isfinite(it->get<double>())) {
    Fail("{}: \"{}\" must be a positive number, got {}", path, key, it->dump());
  }
  return static_cast<float>(it->get<double>());
}

// How weight_scale enters the product (see convert.h).
enum class ScaleMode { kMultiply, kDivide };

struct HfModel {
  Hparams hp;
  bool tied = true;
  bool tie_specified = false;  // config.json names tie_word_embeddings
  ScaleMode scale_mode = ScaleMode::kMultiply;
  std::optional<uint32_t> bos_id, eos_id, pad_id;  // from config.json
};

std::optional<uint32_t> OptionalId(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  const json* v = &*it;
  if (v->is_array() && !v->empty()) v = &(*v)[0];  // eos_token_id may be a list
  if (!v->is_number_integer() || v->get<int64_t>() < 0 ||
      v->get<int64_t>() > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(v->get<int64_t>());
}

HfModel ReadConfig(const fs::path& dir, const ConvertOptions& options) {
  const fs::path path = dir / "config.json";
  const std::string p = path.string();
  const json c = ReadJsonFile(path);
  bool is_bitnet = c.value("model_type", std::string()) == "bitnet";
  if (auto a = c.find("architectures"); a != c.end() && a->is_array()) {
    for (const json& e : *a) is_bitnet = is_bitnet || (e.is_string() && e.get<std::string>() == "BitNetForCausalLM");
  }
  if (!is_bitnet) {
    Fail("{}: not a BitNet checkpoint: expected model_type \"bitnet\" or architectures [\"BitNetForCausalLM\"], got "
         "model_type {}",
         p, c.contains("model_type") ? c["model_type"].dump() : "(none)");
  }
  HfModel m;
  Hparams& hp = m.hp;
  hp.n_embd = ConfigUint(c, "hidden_size", p);
  hp.n_layer = ConfigUint(c, "num_hidden_layers", p);
  hp.n_head = ConfigUint(c, "num_attention_heads", p);
  hp.n_head_kv = ConfigUint(c, "num_key_value_heads", p, hp.n_head);
  hp.n_ff = ConfigUint(c, "intermediate_size", p);
  hp.n_vocab = ConfigUint(c, "vocab_size", p);
  hp.n_ctx = ConfigUint(c, "max_position_embeddings", p);
  // Defaults are transformers' BitNetConfig defaults.
  hp.rms_eps = ConfigFloat(c, "rms_norm_eps", p, 1e-5f);
  hp.rope_theta = ConfigFloat(c, "rope_theta", p, 500000.0f);
  if (hp.n_embd % hp.n_head != 0) Fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", p, hp.n_embd, hp.n_head);
  if (hp.n_head % hp.n_head_kv != 0) {
    Fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", p, hp.n_head, hp.n_head_kv);
  }
  hp.n_rot = hp.n_embd / hp.n_head;
  if (auto hd = c.find("head_dim"); hd != c.end() && !hd->is_null() &&
                                    (!hd->is_number_integer() || hd->get<int64_t>() != static_cast<int64_t>(hp.n_rot))) {
    Fail("{}: head_dim {} differs from hidden_size / num_attention_heads = {}; not supported", p, hd->dump(), hp.n_rot);
  }
  if (hp.n_rot % 2 != 0) Fail("{}: head dimension {} must be even for RoPE", p, hp.n_rot);
  // I2_S blocks are 128 values and never straddle a row: every linear's input size (hidden_size,
  // intermediate_size) must be a multiple of 128.
  if (hp.n_embd % quant::kI2SBlock != 0) Fail("{}: hidden_size {} must be a multiple of 128 for I2_S", p, hp.n_embd);
  if (hp.n_ff % quant::kI2SBlock != 0) Fail("{}: intermediate_size {} must be a multiple of 128 for I2_S", p, hp.n_ff);
  if (auto rs = c.find("rope_scaling"); rs != c.end() && !rs->is_null()) {
    Fail("{}: rope_scaling {} is not supported by the bitnet-b1.58 GGUF format", p, rs->dump());
  }
  const std::string act = options.ffn_activation.empty() ? c.value("hidden_act", std::string("relu2")) : options.ffn_activation;
  hp.activation = internal::NormalizeActivation(act, p + " hidden_act");
  if (auto t = c.find("tie_word_embeddings"); t != c.end() && t->is_boolean()) {
    m.tied = t->get<bool>();
    m.tie_specified = true;
  } else {
    // Decided by the presence of lm_head.weight.
    if (t != c.end() && !t->is_null()) Fail("{}: \"tie_word_embeddings\" must be a boolean", p);
  }
  if (auto q = c.find("quantization_config"); q != c.end() && q->is_object()) {
    // transformers: AutoBitLinear multiplies by weight_scale; BitLinear (the BitNetQuantConfig
    // default linear_class) divides by it.
    const std::string linear_class = q->value("linear_class", std::string("bitlinear"));
    if (linear_class == "autobitlinear") {
      m.scale_mode = ScaleMode::kMultiply;
    } else if (linear_class == "bitlinear") {
      m.scale_mode = ScaleMode::kDivide;
    } else {
      Fail("{}: quantization_config.linear_class \"{}\" is unknown; expected \"autobitlinear\" or \"bitlinear\"", p,
           linear_class);
    }
  }
  m.bos_id = OptionalId(c, "bos_token_id");
  m.eos_id = OptionalId(c, "eos_token_id");
  m.pad_id = OptionalId(c, "pad_token_id");
  return m;
}

std::string DefaultName(const std::string& hf_dir) {
  fs::path p = fs::absolute(fs::path(hf_dir)).lexically_normal();
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  return name.empty() ? std::string("bitnet") : name;
}

// Special-token text from tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> SpecialTokenText(const json& tc, const char* key) {
  auto it = tc.find(key);
  if (it == tc.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

TokenizerMeta ReadTokenizer(const fs::path& dir, const HfModel& m, const ConvertOptions& options) {
  const fs::path tj = dir / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(tj, ec)) Fail("{}: missing tokenizer.json (the Llama 3 tokenizer is required)", dir.string());
  TokenizerData data = Tokenizer::DataFromHFJson(tj.string());
  TokenizerMeta t;
  t.add_bos = true;  // as Microsoft writes it
  t.model = "gpt2";
  t.pre = "llama-bpe";
  t.tokens = std::move(data.tokens);
  t.merges = std::move(data.merges);
  t.token_types = std::move(data.token_types);
  const size_t n_tok = t.tokens.size();
  if (n_tok > m.hp.n_vocab) {
    Fail("{}: {} tokens but config.json vocab_size is {}", tj.string(), n_tok, m.hp.n_vocab);
  }
  if (t.token_types.empty()) t.token_types.assign(n_tok, static_cast<int32_t>(TokenType::kNormal));
  if (t.token_types.size() != n_tok) Fail("{}: {} token types for {} tokens", tj.string(), t.token_types.size(), n_tok);
  // Pad to vocab_size with unused tokens, as llama.cpp's converter does.
  if (n_tok < m.hp.n_vocab) {
    Log(options, fmt::format("tokenizer has {} tokens, vocab_size is {}: padding with [PAD<id>] tokens", n_tok, m.hp.n_vocab));
    for (size_t i = n_tok; i < m.hp.n_vocab; ++i) {
      t.tokens.push_back(fmt::format("[PAD{}]", i));
      t.token_types.push_back(static_cast<int32_t>(TokenType::kUnused));
    }
  }
  // Microsoft: base vocabulary score 0.0, added tokens -1000.
  t.scores.resize(t.tokens.size());
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    t.scores[i] = t.token_types[i] == static_cast<int32_t>(TokenType::kNormal) ? 0.0f : -1000.0f;
  }
  auto find_token = [&](const std::string& text) -> std::optional<uint32_t> {
    for (size_t i = 0; i < t.tokens.size(); ++i) {
      if (t.tokens[i] == text) return static_cast<uint32_t>(i);
    }
    return std::nullopt;
  };
  // Special ids as gguf-py's SpecialVocab finds them: tokenizer_config.json first, then config.json.
  const fs::path tc_path = dir / "tokenizer_config.json";
  if (fs::exists(tc_path, ec)) {
    const json tc = ReadJsonFile(tc_path);
    if (auto s = SpecialTokenText(tc, "bos_token")) t.bos_id = find_token(*s);
    if (auto s = SpecialTokenText(tc, "eos_token")) t.eos_id = find_token(*s);
    if (auto s = SpecialTokenText(tc, "pad_token")) t.pad_id = find_token(*s);
  }
  if (!t.bos_id) t.bos_id = m.bos_id;
  if (!t.eos_id) t.eos_id = m.eos_id;
  if (!t.pad_id) t.pad_id = m.pad_id;
  if (!t.bos_id && data.bos_id >= 0) t.bos_id = static_cast<uint32_t>(data.bos_id);
  if (!t.eos_id && data.eos_id >= 0) t.eos_id = static_cast<uint32_t>(data.eos_id);
  if (!t.bos_id) t.bos_id = find_token("<|begin_of_text|>");
  if (!t.eos_id) t.eos_id = find_token("<|end_of_text|>");
  // Llama 3 has no pad token; Microsoft's file pads with EOS (128001).
  if (!t.pad_id) t.pad_id = t.eos_id;
  for (auto [what, id] : {std::pair{"bos", t.bos_id}, {"eos", t.eos_id}, {"padding", t.pad_id}}) {
    if (id && *id >= t.tokens.size()) Fail("{}: {} token id {} is outside the vocabulary", dir.string(), what, *id);
  }
  if (!t.bos_id || !t.eos_id) Fail("{}: cannot determine the BOS/EOS token ids", dir.string());
  t.chat_template = kMicrosoftChatTemplate;
  return t;
}

struct Ternary {
  std::vector<int8_t> codes;  // [out][in] row-major
  float scale = 0.0f;
};

bool IsFloat(StDtype d) { return d == StDtype::kF32 || d == StDtype::kF16 || d == StDtype::kBF16; }

// Checks the presence, dtype and shape of one linear (cheap: before any conversion work).
void CheckLinear(const SafetensorsSet& st, const std::string& hf, uint64_t out, uint64_t in) {
  const StTensor& w = st.Get(hf + ".weight");
  const std::string& file = st.FileOf(w);
  if (w.dtype == StDtype::kU8) {
    if (w.shape != std::vector<uint64_t>{out / 4, in} || out % 4 != 0) {
      Fail("{}: tensor {}.weight is packed uint8 of shape {}, but config.json implies [{}, {}] ({} outputs / 4, {} inputs)",
           file, hf, w.ShapeString(), out / 4, in, out, in);
    }
    const StTensor* s = st.Find(hf + ".weight_scale");
    if (s == nullptr) Fail("{}: tensor {}.weight is packed uint8 but {}.weight_scale is missing", file, hf, hf);
    if (s->n_elements() != 1 || !IsFloat(s->dtype)) {
      Fail("{}: tensor {}.weight_scale must hold one F32/F16/BF16 value, got {} of shape {}", st.FileOf(*s), hf,
           StDtypeName(s->dtype), s->ShapeString());
    }
  } else if (IsFloat(w.dtype)) {
    if (w.shape != std::vector<uint64_t>{out, in}) {
      Fail("{}: tensor {}.weight has shape {}, but config.json implies [{}, {}]", file, hf, w.ShapeString(), out, in);
    }
  } else {
    Fail("{}: tensor {}.weight has dtype {}; expected packed U8 or F32/F16/BF16", file, hf, StDtypeName(w.dtype));
  }
}

Ternary LoadLinear(const SafetensorsSet& st, const std::string& hf, uint64_t out, uint64_t in, ScaleMode mode) {
  const StTensor& w = st.Get(hf + ".weight");
  const std::string& file = st.FileOf(w);
  Ternary t;
  t.codes.resize(out * in);
  const StTensor* ws = st.Find(hf + ".weight_scale");
  std::optional<float> stored_scale;
  if (ws != nullptr) {
    if (ws->n_elements() != 1) Fail("{}: tensor {}.weight_scale must hold one value", st.FileOf(*ws), hf);
    const float v = ReadFloats(*ws, st.FileOf(*ws))[0];
    stored_scale = mode == ScaleMode::kMultiply ? v : 1.0f / v;
    if (!std::isfinite(*stored_scale)) {
      Fail("{}: tensor {}.weight_scale = {} gives a non-finite scale", st.FileOf(*ws), hf, v);
    }
  }
  if (w.dtype == StDtype::kU8) {
    // packed[p, c], bits 2i..2i+1 hold element (r = i * out/4 + p, c); value = code - 1.
    const uint64_t rows = out / 4;
    for (uint64_t p = 0; p < rows; ++p) {
      for (uint64_t c = 0; c < in; ++c) {
        const uint8_t byte = w.data[p * in + c];
        for (uint64_t i = 0; i < 4; ++i) {
          const int code = (byte >> (2 * i)) & 3;
          if (code == 3) {
            Fail("{}: tensor {}.weight holds the invalid 2-bit code 3 at packed [{}, {}] bits {}-{}", file, hf, p, c,
                 2 * i, 2 * i + 1);
          }
          t.codes[(i * rows + p) * in + c] = static_cast<int8_t>(code - 1);
        }
      }
    }
    t.scale = *stored_scale;  // CheckLinear made sure it exists
    return t;
  }
  const std::vector<float> values = ReadFloats(w, file);
  if (stored_scale) {
    // Unpacked offline weights: the values are the codes themselves.
    for (uint64_t i = 0; i < values.size(); ++i) {
      const float v = values[i];
      if (v != -1.0f && v != 0.0f && v != 1.0f) {
        Fail("{}: tensor {}.weight has a weight_scale, so its values must be -1, 0 or +1; element {} is {}", file, hf, i, v);
      }
      t.codes[i] = static_cast<int8_t>(v);
    }
    t.scale = *stored_scale;
    return t;
  }
  t.scale = quant::TernarizeDense(values.data(), values.size(), t.codes.data());
  return t;
}

std::vector<float> LoadVector(const SafetensorsSet& st, const std::string& name, uint64_t n) {
  const StTensor& t = st.Get(name);
  if (t.shape != std::vector<uint64_t>{n}) {
    Fail("{}: tensor {} has shape {}, but config.json implies [{}]", st.FileOf(t), name, t.ShapeString(), n);
  }
  return ReadFloats(t, st.FileOf(t));
}

void CheckMatrix(const SafetensorsSet& st, const std::string& name, uint64_t rows, uint64_t cols) {
  const StTensor& t = st.Get(name);
  if (!IsFloat(t.dtype)) Fail("{}: tensor {} has dtype {}; expected F32/F16/BF16", st.FileOf(t), name, StDtypeName(t.dtype));
  if (t.shape != std::vector<uint64_t>{rows, cols}) {
    Fail("{}: tensor {} has shape {}, but config.json implies [{}, {}] (vocab_size, hidden_size)", st.FileOf(t), name,
         t.ShapeString(), rows, cols);
  }
}

// HF name of a block tensor (without .weight).
std::string HfBlockName(uint32_t layer, std::string_view gguf) {
  const std::string p = fmt::format("model.layers.{}.", layer);
  if (gguf == "attn_norm") return p + "input_layernorm";
  if (gguf == "attn_q") return p + "self_attn.q_proj";
  if (gguf == "attn_k") return p + "self_attn.k_proj";
  if (gguf == "attn_v") return p + "self_attn.v_proj";
  if (gguf == "attn_sub_norm") return p + "self_attn.attn_sub_norm";
  if (gguf == "attn_output") return p + "self_attn.o_proj";
  if (gguf == "ffn_norm") return p + "post_attention_layernorm";
  if (gguf == "ffn_gate") return p + "mlp.gate_proj";
  if (gguf == "ffn_up") return p + "mlp.up_proj";
  if (gguf == "ffn_sub_norm") return p + "mlp.ffn_sub_norm";
  return p + "mlp.down_proj";  // ffn_down
}

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

}  // namespace

void ConvertHfToGguf(const std::string& hf_dir, const std::string& out_path, const ConvertOptions& options) {
  const std::optional<uint32_t> embd_type = internal::EmbeddingTypeId(options.embedding_type);
  if (!embd_type) Fail("embedding type \"keep\" applies to GGUF input only; use f16, f32, q8_0 or q6_k");
  internal::CheckOutputPath(out_path, hf_dir, options.force);
  const fs::path dir(hf_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) Fail("{}: not a directory (expected a Hugging Face checkpoint)", hf_dir);

  HfModel m = ReadConfig(dir, options);
  Hparams& hp = m.hp;
  hp.name = options.name.empty() ? DefaultName(hf_dir) : options.name;
  const SafetensorsSet st = SafetensorsSet::OpenDir(hf_dir);

  // Validate every tensor before converting anything.
  const bool has_lm_head = st.Find("lm_head.weight") != nullptr;
  if (!m.tie_specified) m.tied = !has_lm_head;
  if (!m.tied && !has_lm_head) {
    Fail("{}: config.json sets tie_word_embeddings false but lm_head.weight is missing", hf_dir);
  }
  CheckMatrix(st, "model.embed_tokens.weight", hp.n_vocab, hp.n_embd);
  if (!m.tied) CheckMatrix(st, "lm_head.weight", hp.n_vocab, hp.n_embd);
  std::set<std::string> used = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!m.tied) used.insert("lm_head.weight");
  (void)LoadVector(st, "model.norm.weight", hp.n_embd);
  for (uint32_t l = 0; l < hp.n_layer; ++l) {
    for (const internal::BlockTensor& bt : internal::kBlockTensors) {
      const std::string hf = HfBlockName(l, bt.gguf);
      const std::vector<uint64_t> ne = internal::BlockTensorShape(bt.gguf, hp);
      if (bt.ternary) {
        CheckLinear(st, hf, ne[1], ne[0]);
        used.insert(hf + ".weight_scale");
      } else {
        (void)LoadVector(st, hf + ".weight", ne[0]);
      }
      used.insert(hf + ".weight");
    }
  }
  for (const StTensor* t : st.AllTensors()) {
    if (!used.count(t->name)) Log(options, fmt::format("ignoring tensor {} ({})", t->name, st.FileOf(*t)));
  }
  if (m.tied && has_lm_head) Log(options, "ignoring lm_head.weight: the embeddings are tied");
  const TokenizerMeta tok = ReadTokenizer(dir, m, options);

  gguf::Writer writer;
  internal::WriteMetadata(writer, hp, tok);
  Log(options, fmt::format("{}: {} layers, n_embd {}, n_ff {}, heads {}/{}, vocab {}, activation {}", hf_dir, hp.n_layer,
                           hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.n_vocab, hp.activation));

  // token_embd: HF [vocab, hidden] row-major is ggml {hidden, vocab}.
  {
    const StTensor& t = st.Get("model.embed_tokens.weight");
    const std::vector<float> v = ReadFloats(t, st.FileOf(t));
    writer.AddTensor("token_embd.weight", {hp.n_embd, hp.n_vocab}, *embd_type,
                     internal::EncodeDense(v.data(), hp.n_embd, hp.n_vocab, *embd_type, "token_embd.weight"));
  }
  writer.AddTensor("output_norm.weight", {hp.n_embd}, kGgmlTypeF32, F32Bytes(LoadVector(st, "model.norm.weight", hp.n_embd)));
  if (!m.tied) {
    const StTensor& t = st.Get("lm_head.weight");
    const std::vector<float> v = ReadFloats(t, st.FileOf(t));
    writer.AddTensor("output.weight", {hp.n_embd, hp.n_vocab}, *embd_type,
                     internal::EncodeDense(v.data(), hp.n_embd, hp.n_vocab, *embd_type, "output.weight"));
  }
  for (uint32_t l = 0; l < hp.n_layer; ++l) {
    for (const internal::BlockTensor& bt : internal::kBlockTensors) {
      const std::string hf = HfBlockName(l, bt.gguf);
      const std::string name = fmt::format("blk.{}.{}.weight", l, bt.gguf);
      std::vector<uint64_t> ne = internal::BlockTensorShape(bt.gguf, hp);
      if (bt.ternary) {
        const Ternary t = LoadLinear(st, hf, ne[1], ne[0], m.scale_mode);
        writer.AddTensor(name, ne, kBitnetTypeI2_S, quant::PackI2S(t.codes.data(), t.codes.size(), t.scale));
      } else {
        writer.AddTensor(name, ne, kGgmlTypeF32, F32Bytes(LoadVector(st, hf + ".weight", ne[0])));
      }
    }
    Log(options, fmt::format("converted block {}/{}", l + 1, hp.n_layer));
  }
  writer.WriteFile(out_path);
}

}  // namespace trinity::convert
