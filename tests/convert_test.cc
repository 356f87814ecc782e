// Converter tests: synthetic Hugging Face checkpoints (packed uint8 + weight_scale, bf16 master
// weights, sharded, untied) and llama.cpp TQ2_0 / TQ1_0 GGUFs -> Microsoft I2_S GGUF, checked
// tensor by tensor (codes exact, scales equal, embedding bits equal) and key by key; plus every
// class of malformed safetensors input.
#include "engine/convert/convert.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/convert/safetensors.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/tensor_type.h"
#include "engine/quant/quant.h"
#include "engine/tokenizer/tokenizer.h"

namespace trinity::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- helpers ------------------------------------------------------------------------------------

uint16_t ToBf16(float f) {  // round to nearest even
  uint32_t x;
  std::memcpy(&x, &f, 4);
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

struct StEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
std::vector<uint8_t> Bf16Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = ToBf16(v[i]);
    b[2 * i] = h & 0xff;
    b[2 * i + 1] = h >> 8;
  }
  return b;
}
std::vector<uint8_t> F16Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = Fp32ToFp16(v[i]);
    b[2 * i] = h & 0xff;
    b[2 * i + 1] = h >> 8;
  }
  return b;
}
// The float a value of `dtype` decodes to.
float RoundTo(const std::string& dtype, float v) {
  if (dtype == "BF16") return Bf16ToFp32(ToBf16(v));
  if (dtype == "F16") return Fp16ToFp32(Fp32ToFp16(v));
  return v;
}
std::vector<uint8_t> FloatBytes(const std::string& dtype, const std::vector<float>& v) {
  if (dtype == "BF16") return Bf16Bytes(v);
  if (dtype == "F16") return F16Bytes(v);
  return F32Bytes(v);
}

// The 8-byte little-endian header size.
std::vector<uint8_t> SizePrefix(uint64_t n) {
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  return out;
}

std::vector<uint8_t> SafetensorsImage(const std::vector<StEntry>& tensors) {
  json header = json::object();
  uint64_t off = 0;
  for (const StEntry& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string h = header.dump();
  while (h.size() % 8 != 0) h += ' ';
  std::vector<uint8_t> out = SizePrefix(h.size());
  out.insert(out.end(), h.begin(), h.end());
  for (const StEntry& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

void WriteBytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// GPT-2 byte -> unicode map, as UTF-8 strings.
std::string ByteToken(int b) {
  int cp = b;
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool p = (x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

// A minimal but real byte-level BPE tokenizer.json with exactly n_vocab tokens: 256 byte tokens,
// letter-pair merges, and 3 Llama 3 special tokens at the end.
json MakeTokenizerJson(int n_vocab) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToken(b)] = b;
  json merges = json::array();
  const int n_merges = n_vocab - 256 - 3;
  for (int i = 0; i < n_merges; ++i) {
    const std::string a(1, static_cast<char>('a' + i / 26)), b(1, static_cast<char>('a' + i % 26));
    merges.push_back(a + " " + b);
    vocab[a + b] = 256 + i;
  }
  json added = json::array();
  const char* specials[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"};
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", n_vocab - 3 + i}, {"content", specials[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"model", {{"type", "BPE"}, {"ignore_merges", true}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}},
          {"decoder", {{"type", "ByteLevel"}}}};
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "trinity_convert_XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// ---- synthetic model ----------------------------------------------------------------------------

struct Shape {
  uint32_t n_embd = 256, n_layer = 4, n_head = 4, n_head_kv = 2, n_ff = 768, n_vocab = 384;
};

const char* const kLinears[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
const char* const kNorms[] = {"attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"};

std::string HfName(uint32_t l, const std::string& g) {
  static const std::map<std::string, std::string> m = {
      {"attn_q", "self_attn.q_proj"},         {"attn_k", "self_attn.k_proj"},     {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"},    {"ffn_gate", "mlp.gate_proj"},      {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},          {"attn_norm", "input_layernorm"},   {"ffn_norm", "post_attention_layernorm"},
      {"attn_sub_norm", "self_attn.attn_sub_norm"}, {"ffn_sub_norm", "mlp.ffn_sub_norm"}};
  return fmt::format("model.layers.{}.{}", l, m.at(g));
}

// {out, in} of a linear.
std::pair<uint64_t, uint64_t> LinearDims(const Shape& s, const std::string& g) {
  const uint64_t kv = s.n_embd / s.n_head * s.n_head_kv;
  if (g == "attn_q" || g == "attn_output") return {s.n_embd, s.n_embd};
  if (g == "attn_k" || g == "attn_v") return {kv, s.n_embd};
  if (g == "ffn_gate" || g == "ffn_up") return {s.n_ff, s.n_embd};
  return {s.n_embd, s.n_ff};  // ffn_down
}

// The expected content of the converted file.
struct Expected {
  std::vector<float> embd;                                  // decoded source values [vocab][embd]
  std::vector<float> lm_head;                               // when untied
  std::map<std::string, std::vector<float>> norms;          // gguf name -> values
  std::map<std::string, std::vector<int8_t>> codes;         // gguf name -> [out][in]
  std::map<std::string, float> scales;
};

struct Variant {
  bool packed = true;           // packed uint8 + weight_scale, else bf16 master weights
  bool sharded = false;         // two files + model.safetensors.index.json
  bool tied = true;             // else lm_head.weight
  std::string hidden_act = "relu2";
  std::string linear_class = "autobitlinear";  // "" = no quantization_config
  std::string embd_dtype = "BF16";
};

class Checkpoint {
 public:
  Checkpoint(const Shape& s, const Variant& v, uint32_t seed = 7) : s_(s), v_(v), rng_(seed) {}

  std::vector<float> Normal(size_t n, float sd) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> x(n);
    for (float& f : x) f = d(rng_);
    return x;
  }

  // Writes the checkpoint into dir and fills expected_.
  void Write(const fs::path& dir, json tokenizer = MakeTokenizerJson(384)) {
    std::vector<StEntry> entries;
    auto add_float = [&](const std::string& name, const std::string& dtype, std::vector<uint64_t> shape,
                         const std::vector<float>& values) { entries.push_back({name, dtype, shape, FloatBytes(dtype, values)}); };
    {
      std::vector<float> e = Normal(uint64_t{s_.n_vocab} * s_.n_embd, 0.25f);
      add_float("model.embed_tokens.weight", v_.embd_dtype, {s_.n_vocab, s_.n_embd}, e);
      for (float& x : e) x = RoundTo(v_.embd_dtype, x);
      exp_.embd = e;
    }
    if (!v_.tied) {
      std::vector<float> e = Normal(uint64_t{s_.n_vocab} * s_.n_embd, 0.25f);
      add_float("lm_head.weight", "BF16", {s_.n_vocab, s_.n_embd}, e);
      for (float& x : e) x = RoundTo("BF16", x);
      exp_.lm_head = e;
    }
    auto add_norm = [&](const std::string& hf, const std::string& gguf, uint64_t n, const std::string& dtype) {
      std::vector<float> w = Normal(n, 0.2f);
      for (float& x : w) x = RoundTo(dtype, x + 1.0f);
      add_float(hf, dtype, {n}, w);
      exp_.norms[gguf] = w;
    };
    add_norm("model.norm.weight", "output_norm.weight", s_.n_embd, "F32");
    std::uniform_int_distribution<int> code(-1, 1);
    std::uniform_real_distribution<float> sc(0.01f, 0.1f);
    for (uint32_t l = 0; l < s_.n_layer; ++l) {
      for (const char* g : kNorms) {
        add_norm(HfName(l, g) + ".weight", fmt::format("blk.{}.{}.weight", l, g), g == std::string("ffn_sub_norm") ? s_.n_ff : s_.n_embd,
                 l % 2 ? "BF16" : "F32");
      }
      for (const char* g : kLinears) {
        const auto [out, in] = LinearDims(s_, g);
        const std::string hf = HfName(l, g);
        const std::string gguf = fmt::format("blk.{}.{}.weight", l, g);
        std::vector<int8_t> codes(out * in);
        if (v_.packed) {
          for (int8_t& c : codes) c = static_cast<int8_t>(code(rng_));
          // HF packing along the output dim: (r = i*(out/4) + p, c) -> packed[p, c] bits 2i..2i+1.
          std::vector<uint8_t> packed(out / 4 * in, 0);
          for (uint64_t r = 0; r < out; ++r) {
            const uint64_t i = r / (out / 4), p = r % (out / 4);
            for (uint64_t c = 0; c < in; ++c) packed[p * in + c] |= static_cast<uint8_t>((codes[r * in + c] + 1) << (2 * i));
          }
          entries.push_back({hf + ".weight", "U8", {out / 4, in}, packed});
          const std::string sdt = l % 3 == 0 ? "BF16" : (l % 3 == 1 ? "F32" : "F16");
          const float stored = RoundTo(sdt, sc(rng_));
          add_float(hf + ".weight_scale", sdt, {1}, {stored});
          exp_.scales[gguf] = v_.linear_class == "bitlinear" ? 1.0f / stored : stored;
        } else {
          std::vector<float> w = Normal(out * in, 0.05f);
          add_float(hf + ".weight", "BF16", {out, in}, w);
          for (float& x : w) x = RoundTo("BF16", x);
          exp_.scales[gguf] = quant::TernarizeAbsMean(w.data(), w.size(), codes.data());
        }
        exp_.codes[gguf] = codes;
      }
    }
    json config = {{"architectures", {"BitNetForCausalLM"}},
                   {"model_type", "bitnet"},
                   {"hidden_size", s_.n_embd},
                   {"num_hidden_layers", s_.n_layer},
                   {"num_attention_heads", s_.n_head},
                   {"num_key_value_heads", s_.n_head_kv},
                   {"intermediate_size", s_.n_ff},
                   {"vocab_size", s_.n_vocab},
                   {"max_position_embeddings", 4096},
                   {"rms_norm_eps", 1e-5},
                   {"rope_theta", 500000.0},
                   {"hidden_act", v_.hidden_act},
                   {"tie_word_embeddings", v_.tied},
                   {"bos_token_id", s_.n_vocab - 3},
                   {"eos_token_id", s_.n_vocab - 2}};
    if (v_.packed && !v_.linear_class.empty()) {
      config["quantization_config"] = {
          {"quant_method", "bitnet"}, {"linear_class", v_.linear_class}, {"quantization_mode", "offline"}};
    }
    WriteText(dir / "config.json", config.dump(2));
    WriteText(dir / "tokenizer.json", tokenizer.dump());
    if (v_.sharded) {
      const size_t half = entries.size() / 2;
      std::vector<StEntry> a(entries.begin(), entries.begin() + half), b(entries.begin() + half, entries.end());
      WriteBytes(dir / "model-00001-of-00002.safetensors", SafetensorsImage(a));
      WriteBytes(dir / "model-00002-of-00002.safetensors", SafetensorsImage(b));
      json wm = json::object();
      for (const StEntry& e : a) wm[e.name] = "model-00001-of-00002.safetensors";
      for (const StEntry& e : b) wm[e.name] = "model-00002-of-00002.safetensors";
      WriteText(dir / "model.safetensors.index.json", json{{"metadata", json::object()}, {"weight_map", wm}}.dump());
    } else {
      WriteBytes(dir / "model.safetensors", SafetensorsImage(entries));
    }
    entries_ = std::move(entries);
  }

  const Expected& expected() const { return exp_; }
  const std::vector<StEntry>& entries() const { return entries_; }

 private:
  Shape s_;
  Variant v_;
  std::mt19937 rng_;
  Expected exp_;
  std::vector<StEntry> entries_;
};

std::vector<std::string> ExpectedKeyOrder(bool with_activation) {
  std::vector<std::string> keys = {"general.architecture",
                                   "general.name",
                                   "bitnet-b1.58.vocab_size",
                                   "bitnet-b1.58.context_length",
                                   "bitnet-b1.58.embedding_length",
                                   "bitnet-b1.58.block_count",
                                   "bitnet-b1.58.feed_forward_length",
                                   "bitnet-b1.58.rope.dimension_count",
                                   "bitnet-b1.58.attention.head_count",
                                   "bitnet-b1.58.attention.head_count_kv",
                                   "tokenizer.ggml.add_bos_token",
                                   "bitnet-b1.58.attention.layer_norm_rms_epsilon",
                                   "bitnet-b1.58.rope.freq_base",
                                   "general.file_type",
                                   "tokenizer.ggml.model",
                                   "tokenizer.ggml.pre",
                                   "tokenizer.ggml.tokens",
                                   "tokenizer.ggml.scores",
                                   "tokenizer.ggml.token_type",
                                   "tokenizer.ggml.merges",
                                   "tokenizer.ggml.bos_token_id",
                                   "tokenizer.ggml.eos_token_id",
                                   "tokenizer.ggml.padding_token_id",
                                   "tokenizer.chat_template",
                                   "general.quantization_version"};
  if (with_activation) keys.push_back("trinity.ffn_activation");
  return keys;
}

std::vector<std::string> ExpectedTensorOrder(const Shape& s, bool tied) {
  std::vector<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (!tied) names.push_back("output.weight");
  const char* block[] = {"attn_norm", "attn_q",  "attn_k",       "attn_v",  "attn_sub_norm", "attn_output",
                         "ffn_norm",  "ffn_gate", "ffn_up", "ffn_sub_norm", "ffn_down"};
  for (uint32_t l = 0; l < s.n_layer; ++l) {
    for (const char* b : block) names.push_back(fmt::format("blk.{}.{}.weight", l, b));
  }
  return names;
}

// Checks every tensor of a converted file against the expectation.
void CheckTensors(const gguf::File& f, const Shape& s, const Expected& e, bool tied) {
  std::vector<std::string> names;
  for (const gguf::TensorInfo& t : f.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, ExpectedTensorOrder(s, tied));

  auto check_f16 = [&](const char* name, const std::vector<float>& values) {
    const gguf::TensorInfo* t = f.FindTensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, TensorType::kF16) << name;
    EXPECT_EQ(t->ne, (std::vector<uint64_t>{s.n_embd, s.n_vocab})) << name;
    const uint8_t* d = f.TensorData(*t);
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t h = static_cast<uint16_t>(d[2 * i] | (d[2 * i + 1] << 8));
      ASSERT_EQ(h, Fp32ToFp16(values[i])) << name << " element " << i;
    }
  };
  check_f16("token_embd.weight", e.embd);
  if (!tied) check_f16("output.weight", e.lm_head);
  for (const auto& [name, values] : e.norms) {
    const gguf::TensorInfo* t = f.FindTensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, TensorType::kF32) << name;
    EXPECT_EQ(t->ne, std::vector<uint64_t>{values.size()}) << name;
    EXPECT_EQ(std::memcmp(f.TensorData(*t), values.data(), values.size() * 4), 0) << name;
  }
  for (const auto& [name, codes] : e.codes) {
    const gguf::TensorInfo* t = f.FindTensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, TensorType::kI2_S) << name;
    EXPECT_EQ(t->type_id, kBitnetTypeI2_S) << name;
    ASSERT_EQ(t->n_elements(), codes.size()) << name;
    EXPECT_EQ(t->size_bytes, codes.size() / 4 + 32) << name;
    std::vector<int8_t> got(codes.size());
    quant::UnpackI2S(f.TensorData(*t), codes.size(), got.data());
    EXPECT_EQ(got, codes) << name;
    EXPECT_EQ(quant::I2SScale(f.TensorData(*t), codes.size()), e.scales.at(name)) << name;
  }
}

void CheckMetadata(const gguf::File& f, const Shape& s, const std::string& activation) {
  std::vector<std::string> keys;
  for (const gguf::KeyValue& kv : f.metadata()) keys.push_back(kv.key);
  EXPECT_EQ(keys, ExpectedKeyOrder(activation != "relu2"));
  EXPECT_EQ(f.GetString("general.architecture"), "bitnet-b1.58");
  for (const char* k : {"bitnet-b1.58.vocab_size", "bitnet-b1.58.context_length", "bitnet-b1.58.embedding_length",
                        "bitnet-b1.58.block_count", "bitnet-b1.58.feed_forward_length", "bitnet-b1.58.rope.dimension_count",
                        "bitnet-b1.58.attention.head_count", "bitnet-b1.58.attention.head_count_kv", "general.file_type",
                        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                        "general.quantization_version"}) {
    ASSERT_NE(f.Find(k), nullptr) << k;
    EXPECT_EQ(f.Find(k)->type, gguf::ValueType::kUint32) << k;
  }
  EXPECT_EQ(f.Find("bitnet-b1.58.rope.freq_base")->type, gguf::ValueType::kFloat32);
  EXPECT_EQ(f.Find("bitnet-b1.58.attention.layer_norm_rms_epsilon")->type, gguf::ValueType::kFloat32);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.vocab_size"), s.n_vocab);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.embedding_length"), s.n_embd);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.block_count"), s.n_layer);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.feed_forward_length"), s.n_ff);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.rope.dimension_count"), s.n_embd / s.n_head);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.attention.head_count"), s.n_head);
  EXPECT_EQ(f.GetUint("bitnet-b1.58.attention.head_count_kv"), s.n_head_kv);
  EXPECT_EQ(f.GetUint("general.file_type"), 40u);
  EXPECT_EQ(f.GetUint("general.quantization_version"), 2u);
  EXPECT_FLOAT_EQ(f.GetFloat("bitnet-b1.58.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(f.GetFloat("bitnet-b1.58.rope.freq_base"), 500000.0);
  EXPECT_EQ(f.FindBool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(f.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.GetString("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.GetString("tokenizer.chat_template"), kMicrosoftChatTemplate);
  EXPECT_NE(f.GetString("tokenizer.chat_template").find("BITNET"), std::string::npos);
  if (activation != "relu2") {
    EXPECT_EQ(f.GetString("trinity.ffn_activation"), activation);
  }
  EXPECT_EQ(f.alignment(), 32u);
}

void CheckSmallTokenizer(const gguf::File& f, uint32_t n_vocab) {
  const std::vector<std::string>& tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), n_vocab);
  EXPECT_EQ(tokens[0], ByteToken(0));
  EXPECT_EQ(tokens['!'], "!");
  EXPECT_EQ(tokens[n_vocab - 3], "<|begin_of_text|>");
  const std::vector<int64_t>& types = f.GetIntArray("tokenizer.ggml.token_type");
  const std::vector<double>& scores = f.GetFloatArray("tokenizer.ggml.scores");
  for (uint32_t i = 0; i < n_vocab; ++i) {
    const bool special = i >= n_vocab - 3;
    EXPECT_EQ(types[i], special ? 3 : 1) << i;
    EXPECT_EQ(scores[i], special ? -1000.0 : 0.0) << i;
  }
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.merges").size(), n_vocab - 259);
  EXPECT_EQ(f.GetUint("tokenizer.ggml.bos_token_id"), n_vocab - 3);
  EXPECT_EQ(f.GetUint("tokenizer.ggml.eos_token_id"), n_vocab - 2);
  EXPECT_EQ(f.GetUint("tokenizer.ggml.padding_token_id"), n_vocab - 2);
  // The metadata is a tokenizer the engine accepts.
  const Tokenizer tok(Tokenizer::DataFromGGUF(f));
  EXPECT_EQ(tok.n_vocab(), static_cast<int32_t>(n_vocab));
  EXPECT_EQ(tok.Decode(tok.Encode("abc hello", false)), "abc hello");
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- HF checkpoint -> I2_S ------------------------------------------------------------------------

TEST(ConvertHf, PackedCheckpointIsExact) {
  TempDir tmp;
  const fs::path dir = tmp.path / "tiny-bitnet";
  fs::create_directory(dir);
  Shape s;
  Checkpoint ck(s, Variant{});
  ck.Write(dir);
  const std::string out = (tmp.path / "out.gguf").string();
  std::vector<std::string> log;
  ConvertOptions opt;
  opt.log = [&](std::string_view line) { log.emplace_back(line); };
  ConvertHfToGguf(dir.string(), out, opt);
  EXPECT_FALSE(log.empty());
  const auto f = gguf::File::Open(out);
  CheckMetadata(*f, s, "relu2");
  EXPECT_EQ(f->GetString("general.name"), "tiny-bitnet");
  CheckSmallTokenizer(*f, s.n_vocab);
  CheckTensors(*f, s, ck.expected(), true);
}

TEST(ConvertHf, Bf16MasterWeightsAreTernarisedWithAbsMean) {
  TempDir tmp;
  Shape s;
  Variant v;
  v.packed = false;
  Checkpoint ck(s, v);
  ck.Write(tmp.path);
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertOptions opt;
  opt.name = "masters";
  ConvertHfToGguf(tmp.path.string(), out, opt);
  const auto f = gguf::File::Open(out);
  CheckMetadata(*f, s, "relu2");
  EXPECT_EQ(f->GetString("general.name"), "masters");
  CheckTensors(*f, s, ck.expected(), true);
}

TEST(ConvertHf, ShardedUntiedSiluF16Embedding) {
  TempDir tmp;
  Shape s;
  s.n_layer = 2;
  Variant v;
  v.sharded = true;
  v.tied = false;
  v.hidden_act = "silu";
  v.embd_dtype = "F32";
  Checkpoint ck(s, v);
  ck.Write(tmp.path);
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertHfToGguf(tmp.path.string(), out, {});
  const auto f = gguf::File::Open(out);
  CheckMetadata(*f, s, "silu");
  CheckTensors(*f, s, ck.expected(), false);
}

TEST(ConvertHf, BitLinearWeightScaleIsInverted) {
  TempDir tmp;
  Shape s;
  s.n_layer = 1;
  Variant v;
  v.linear_class = "bitlinear";
  Checkpoint ck(s, v);
  ck.Write(tmp.path);
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertHfToGguf(tmp.path.string(), out, {});
  const auto f = gguf::File::Open(out);
  CheckTensors(*f, s, ck.expected(), true);
}

TEST(ConvertHf, EmbeddingTypes) {
  TempDir tmp;
  Shape s;
  s.n_layer = 1;
  Checkpoint ck(s, Variant{});
  ck.Write(tmp.path);
  const std::vector<float>& embd = ck.expected().embd;
  for (const auto& [type, tt] : {std::pair{"f32", TensorType::kF32}, {"q8_0", TensorType::kQ8_0}, {"q6_k", TensorType::kQ6_K}}) {
    const std::string out = (tmp.path / fmt::format("out_{}.gguf", type)).string();
    ConvertOptions opt;
    opt.embedding_type = type;
    ConvertHfToGguf(tmp.path.string(), out, opt);
    const auto f = gguf::File::Open(out);
    const gguf::TensorInfo* t = f->FindTensor("token_embd.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, tt) << type;
    std::vector<uint8_t> want;
    if (tt == TensorType::kF32) want = F32Bytes(embd);
    if (tt == TensorType::kQ8_0) want = quant::QuantizeQ8_0(embd.data(), embd.size());
    if (tt == TensorType::kQ6_K) want = quant::QuantizeQ6_K(embd.data(), embd.size());
    ASSERT_EQ(t->size_bytes, want.size()) << type;
    EXPECT_EQ(std::memcmp(f->TensorData(*t), want.data(), want.size()), 0) << type;
  }
  ConvertOptions bad;
  bad.embedding_type = "q4_0";
  EXPECT_NE(ErrorOf([&] { ConvertHfToGguf(tmp.path.string(), (tmp.path / "x.gguf").string(), bad); }).find("q4_0"),
            std::string::npos);
}

TEST(ConvertHf, RealLlama3Tokenizer) {
  TempDir tmp;
  Shape s;
  s.n_layer = 1;
  s.n_vocab = 128256;
  Checkpoint ck(s, Variant{});
  std::ifstream in(std::string(TRINITY_SOURCE_DIR) + "/data/llama3/tokenizer.json");
  ck.Write(tmp.path, json::parse(in));
  // config.json of the real model: bos 128000, eos 128001; tokenizer_config.json names them too.
  json config = json::parse(std::ifstream(tmp.path / "config.json"));
  config["bos_token_id"] = 128000;
  config["eos_token_id"] = 128001;
  WriteText(tmp.path / "config.json", config.dump());
  fs::copy_file(std::string(TRINITY_SOURCE_DIR) + "/data/llama3/tokenizer_config.json", tmp.path / "tokenizer_config.json");
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertHfToGguf(tmp.path.string(), out, {});
  const auto f = gguf::File::Open(out);
  CheckMetadata(*f, s, "relu2");
  EXPECT_EQ(f->GetStringArray("tokenizer.ggml.tokens").size(), 128256u);
  EXPECT_EQ(f->GetStringArray("tokenizer.ggml.merges").size(), 280147u);
  EXPECT_EQ(f->GetUint("tokenizer.ggml.bos_token_id"), 128000u);
  EXPECT_EQ(f->GetUint("tokenizer.ggml.eos_token_id"), 128001u);
  EXPECT_EQ(f->GetUint("tokenizer.ggml.padding_token_id"), 128001u);
  const std::vector<int64_t>& types = f->GetIntArray("tokenizer.ggml.token_type");
  const std::vector<double>& scores = f->GetFloatArray("tokenizer.ggml.scores");
  EXPECT_EQ(types[0], 1);
  EXPECT_EQ(scores[0], 0.0);
  EXPECT_EQ(types[127999], 1);
  for (int id : {128000, 128001, 128009, 128255}) {
    EXPECT_EQ(types[id], 3) << id;
    EXPECT_EQ(scores[id], -1000.0) << id;
  }
  CheckTensors(*f, s, ck.expected(), true);
}

TEST(ConvertHf, OutputExistsNeedsForce) {
  TempDir tmp;
  Shape s;
  s.n_layer = 1;
  Checkpoint ck(s, Variant{});
  ck.Write(tmp.path);
  const std::string out = (tmp.path / "out.gguf").string();
  WriteText(out, "existing");
  EXPECT_NE(ErrorOf([&] { ConvertHfToGguf(tmp.path.string(), out, {}); }).find("exists"), std::string::npos);
  ConvertOptions opt;
  opt.force = true;
  ConvertHfToGguf(tmp.path.string(), out, opt);
  EXPECT_NO_THROW(gguf::File::Open(out));
}

// ---- malformed checkpoints --------------------------------------------------------------------------

class Malformed : public ::testing::Test {
 protected:
  void SetUp() override {
    s_.n_layer = 1;
    ck_ = std::make_unique<Checkpoint>(s_, Variant{});
    ck_->Write(tmp_.path);
    st_ = (tmp_.path / "model.safetensors").string();
    image_ = ReadAll(st_);
  }
  static std::vector<uint8_t> ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
  }
  std::string Convert() {
    return ErrorOf([&] { ConvertHfToGguf(tmp_.path.string(), (tmp_.path / "out.gguf").string(), {}); });
  }
  // Rewrites the checkpoint with `edit` applied to its entries.
  void Rewrite(const std::function<void(std::vector<StEntry>&)>& edit) {
    std::vector<StEntry> e = ck_->entries();
    edit(e);
    WriteBytes(st_, SafetensorsImage(e));
  }
  // Rewrites the JSON header (keeping the data area).
  void RewriteHeader(const std::function<void(json&)>& edit) {
    uint64_t n;
    std::memcpy(&n, image_.data(), 8);
    json h = json::parse(image_.begin() + 8, image_.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    edit(h);
    std::string text = h.dump();
    std::vector<uint8_t> out = SizePrefix(text.size());
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), image_.begin() + 8 + static_cast<std::ptrdiff_t>(n), image_.end());
    WriteBytes(st_, out);
  }
  static bool Has(const std::string& msg, std::initializer_list<std::string_view> parts) {
    for (std::string_view p : parts) {
      if (msg.find(p) == std::string::npos) return false;
    }
    return true;
  }

  TempDir tmp_;
  Shape s_;
  std::unique_ptr<Checkpoint> ck_;
  std::string st_;
  std::vector<uint8_t> image_;
};

TEST_F(Malformed, BaselineConverts) { EXPECT_EQ(Convert(), "(no error)"); }

TEST_F(Malformed, TruncatedFile) {
  std::vector<uint8_t> cut(image_.begin(), image_.end() - 1000);
  WriteBytes(st_, cut);
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "outside the data area"})) << msg;
  WriteBytes(st_, std::vector<uint8_t>(image_.begin(), image_.begin() + 5));
  EXPECT_TRUE(Has(Convert(), {"model.safetensors", "truncated"})) << Convert();
}

TEST_F(Malformed, HeaderSizeTooBig) {
  std::vector<uint8_t> bad = image_;
  const uint64_t n = bad.size();  // more than what follows the size field
  std::memcpy(bad.data(), &n, 8);
  WriteBytes(st_, bad);
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "header size"})) << msg;
}

TEST_F(Malformed, HeaderNotJson) {
  std::vector<uint8_t> bad = image_;
  bad[8] = '[';
  bad[9] = '!';
  WriteBytes(st_, bad);
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "JSON"})) << msg;
}

TEST_F(Malformed, OffsetsOutOfRange) {
  RewriteHeader([](json& h) { h["model.norm.weight"]["data_offsets"][1] = uint64_t{1} << 40; });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "model.norm.weight", "outside the data area"})) << msg;
}

TEST_F(Malformed, OffsetsDisagreeWithShape) {
  RewriteHeader([](json& h) { h["model.norm.weight"]["shape"] = {128}; });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "model.norm.weight", "needs 512"})) << msg;
}

TEST_F(Malformed, OverlappingTensors) {
  RewriteHeader([](json& h) {
    h["model.layers.0.input_layernorm.weight"]["data_offsets"] = h["model.norm.weight"]["data_offsets"];
  });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "overlap"})) << msg;
}

TEST_F(Malformed, UnknownDtype) {
  RewriteHeader([](json& h) { h["model.norm.weight"]["dtype"] = "F8_E9M9"; });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "model.norm.weight", "F8_E9M9"})) << msg;
}

TEST_F(Malformed, WrongShapeVersusConfig) {
  Rewrite([](std::vector<StEntry>& e) {
    for (StEntry& t : e) {
      if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {t.shape[0] * 2, t.shape[1] / 2};
    }
  });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.safetensors", "model.layers.0.self_attn.k_proj.weight", "config.json implies [32, 256]"}))
      << msg;
}

TEST_F(Malformed, WrongEmbeddingShape) {
  json config = json::parse(std::ifstream(tmp_.path / "config.json"));
  config["vocab_size"] = 512;
  WriteText(tmp_.path / "config.json", config.dump());
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.embed_tokens.weight", "[512, 256]"})) << msg;
}

TEST_F(Malformed, MissingTensor) {
  Rewrite([](std::vector<StEntry>& e) {
    std::erase_if(e, [](const StEntry& t) { return t.name == "model.layers.0.mlp.ffn_sub_norm.weight"; });
  });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.layers.0.mlp.ffn_sub_norm.weight", "missing"})) << msg;
}

TEST_F(Malformed, MissingWeightScale) {
  Rewrite([](std::vector<StEntry>& e) {
    std::erase_if(e, [](const StEntry& t) { return t.name == "model.layers.0.mlp.up_proj.weight_scale"; });
  });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.layers.0.mlp.up_proj.weight_scale", "missing"})) << msg;
}

TEST_F(Malformed, InvalidPackedCode) {
  Rewrite([](std::vector<StEntry>& e) {
    for (StEntry& t : e) {
      if (t.name == "model.layers.0.mlp.down_proj.weight") t.bytes[77] = 0xff;
    }
  });
  const std::string msg = Convert();
  EXPECT_TRUE(Has(msg, {"model.layers.0.mlp.down_proj.weight", "invalid 2-bit code"})) << msg;
}

TEST_F(Malformed, ConfigProblems) {
  json config = json::parse(std::ifstream(tmp_.path / "config.json"));
  json bad = config;
  bad["model_type"] = "llama";
  bad.erase("architectures");
  WriteText(tmp_.path / "config.json", bad.dump());
  EXPECT_TRUE(Has(Convert(), {"config.json", "not a BitNet checkpoint"})) << Convert();
  bad = config;
  bad.erase("hidden_size");
  WriteText(tmp_.path / "config.json", bad.dump());
  EXPECT_TRUE(Has(Convert(), {"config.json", "hidden_size"})) << Convert();
  bad = config;
  bad["hidden_act"] = "gelu";
  WriteText(tmp_.path / "config.json", bad.dump());
  EXPECT_TRUE(Has(Convert(), {"gelu"})) << Convert();
  WriteText(tmp_.path / "config.json", "{not json");
  EXPECT_TRUE(Has(Convert(), {"config.json", "JSON"})) << Convert();
  fs::remove(tmp_.path / "config.json");
  EXPECT_TRUE(Has(Convert(), {"config.json"})) << Convert();
}

TEST_F(Malformed, MissingTokenizer) {
  fs::remove(tmp_.path / "tokenizer.json");
  EXPECT_TRUE(Has(Convert(), {"tokenizer.json"})) << Convert();
}

TEST(Safetensors, ReadsEveryFloatDtype) {
  std::vector<StEntry> e = {{"a", "F32", {2}, F32Bytes({1.5f, -2.0f})},
                            {"b", "F16", {2}, F16Bytes({0.5f, 3.0f})},
                            {"c", "BF16", {1, 2}, Bf16Bytes({-1.0f, 0.25f})},
                            {"d", "U8", {3}, {1, 2, 3}},
                            {"z", "F32", {0}, {}}};
  const std::vector<uint8_t> img = SafetensorsImage(e);
  const auto f = SafetensorsFile::FromMemory(img.data(), img.size(), "mem.safetensors");
  ASSERT_EQ(f->tensors().size(), 5u);
  EXPECT_EQ(ReadFloats(*f->Find("a"), "m"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(ReadFloats(*f->Find("b"), "m"), (std::vector<float>{0.5f, 3.0f}));
  EXPECT_EQ(ReadFloats(*f->Find("c"), "m"), (std::vector<float>{-1.0f, 0.25f}));
  EXPECT_EQ(f->Find("c")->shape, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(f->Find("d")->data[2], 3);
  EXPECT_EQ(f->Find("nope"), nullptr);
  EXPECT_THROW(ReadFloats(*f->Find("d"), "m"), Error);
  // Every truncation of the image is rejected cleanly (never a crash).
  for (size_t n = 0; n < img.size(); ++n) {
    std::vector<uint8_t> cut(img.begin(), img.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(SafetensorsFile::FromMemory(cut.data(), cut.size()), Error) << n;
  }
}

// ---- GGUF (llama.cpp bitnet, TQ2_0 / TQ1_0) -> I2_S --------------------------------------------------

struct TqModel {
  Shape s;
  Expected e;
  std::vector<uint8_t> image;
};

// A llama.cpp-style `bitnet` GGUF. Block scales equal within each tensor (as llama.cpp writes
// them), except that some blocks are all zero with d = 0; blk.0.attn_q and blk.1.ffn_down carry
// a `.scale` tensor. `nonuniform` breaks one tensor's block scales.
TqModel MakeTqModel(uint32_t type_id, bool nonuniform = false, bool with_template = true) {
  TqModel m;
  m.s.n_layer = 2;
  const Shape& s = m.s;
  std::mt19937 rng(11);
  gguf::Writer w;
  const std::string a = "bitnet.";
  w.AddString("general.architecture", "bitnet");
  w.AddString("general.name", "tq-model");
  w.AddUint32(a + "context_length", 4096);
  w.AddUint32(a + "embedding_length", s.n_embd);
  w.AddUint32(a + "feed_forward_length", s.n_ff);
  w.AddUint32(a + "block_count", s.n_layer);
  w.AddUint32(a + "attention.head_count", s.n_head);
  w.AddUint32(a + "attention.head_count_kv", s.n_head_kv);
  w.AddFloat32(a + "rope.freq_base", 500000.0f);
  w.AddFloat32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddUint32("general.file_type", type_id == kGgmlTypeTQ2_0 ? 37 : 36);
  // Tokenizer as llama.cpp writes it (no scores; int32 ids; an extra eot key).
  const json tj = MakeTokenizerJson(s.n_vocab);
  const TokenizerData td = [&] {
    TempDir t;
    WriteText(t.path / "tokenizer.json", tj.dump());
    return Tokenizer::DataFromHFJson((t.path / "tokenizer.json").string());
  }();
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "llama-bpe");
  w.AddStringArray("tokenizer.ggml.tokens", td.tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", td.token_types);
  w.AddStringArray("tokenizer.ggml.merges", td.merges);
  w.AddInt32("tokenizer.ggml.bos_token_id", static_cast<int32_t>(s.n_vocab - 3));
  w.AddInt32("tokenizer.ggml.eos_token_id", static_cast<int32_t>(s.n_vocab - 2));
  w.AddInt32("tokenizer.ggml.eot_token_id", static_cast<int32_t>(s.n_vocab - 1));
  w.AddBool("tokenizer.ggml.add_bos_token", true);
  if (with_template) w.AddString("tokenizer.chat_template", "{{ 'User: ' + messages[0]['content'] }}");
  w.AddUint32("general.quantization_version", 2);

  std::normal_distribution<float> nd(0.0f, 0.25f);
  // F32 embedding: the converter must produce F16.
  m.e.embd.resize(uint64_t{s.n_vocab} * s.n_embd);
  for (float& x : m.e.embd) x = nd(rng);
  w.AddTensor("token_embd.weight", {s.n_embd, s.n_vocab}, kGgmlTypeF32, F32Bytes(m.e.embd));
  auto norm = [&](const std::string& name, uint64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 1.0f + nd(rng);
    m.e.norms[name] = v;
    w.AddTensor(name, {n}, kGgmlTypeF32, F32Bytes(v));
  };
  norm("output_norm.weight", s.n_embd);
  std::uniform_int_distribution<int> code(-1, 1);
  std::uniform_real_distribution<float> sc(0.01f, 0.1f);
  for (uint32_t l = 0; l < s.n_layer; ++l) {
    for (const char* g : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_sub_norm", "attn_output", "ffn_norm", "ffn_gate",
                          "ffn_up", "ffn_sub_norm", "ffn_down"}) {
      const std::string name = fmt::format("blk.{}.{}.weight", l, g);
      const std::string gs = g;
      if (gs.find("norm") != std::string::npos) {
        norm(name, gs == "ffn_sub_norm" ? s.n_ff : s.n_embd);
        continue;
      }
      const auto [out, in] = LinearDims(s, gs);
      const uint64_t n = out * in;
      std::vector<int8_t> codes(n);
      for (int8_t& c : codes) c = static_cast<int8_t>(code(rng));
      const float d = Fp16ToFp32(Fp32ToFp16(sc(rng)));  // the f16 block scale
      std::vector<float> block_scales(n / 256, d);
      // Blocks 1 and 5 all zero with d = 0 (llama.cpp: d = max|x| = 0): irrelevant to the scale.
      for (uint64_t b : {1, 5}) {
        std::fill(codes.begin() + b * 256, codes.begin() + (b + 1) * 256, 0);
        block_scales[b] = 0.0f;
      }
      if (nonuniform && l == 1 && gs == "ffn_up") block_scales[7] = Fp16ToFp32(Fp32ToFp16(d * 1.5f));
      std::vector<uint8_t> data(n / 256 * (type_id == kGgmlTypeTQ2_0 ? quant::kTQ2_0BlockBytes : quant::kTQ1_0BlockBytes));
      if (type_id == kGgmlTypeTQ2_0) {
        quant::PackTQ2_0(codes.data(), n, block_scales.data(), data.data());
      } else {
        quant::PackTQ1_0(codes.data(), n, block_scales.data(), data.data());
      }
      w.AddTensor(name, {in, out}, type_id, std::move(data));
      float scale = d;
      if ((l == 0 && gs == "attn_q") || (l == 1 && gs == "ffn_down")) {
        const float extra = 1.25f;
        w.AddTensor(fmt::format("blk.{}.{}.scale", l, g), {1}, kGgmlTypeF32, F32Bytes({extra}));
        scale *= extra;
      }
      m.e.codes[name] = codes;
      m.e.scales[name] = scale;
    }
  }
  m.image = w.WriteMemory();
  return m;
}

void CheckTqConversion(uint32_t type_id) {
  TempDir tmp;
  TqModel m = MakeTqModel(type_id);
  const fs::path in = tmp.path / "in.gguf";
  WriteBytes(in, m.image);
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertGgufToI2S(in.string(), out, {});
  const auto f = gguf::File::Open(out);
  std::vector<std::string> keys;
  for (const gguf::KeyValue& kv : f->metadata()) keys.push_back(kv.key);
  std::vector<std::string> want = ExpectedKeyOrder(true);
  // The source's extra tokenizer key follows padding... which the source lacks.
  want.erase(std::find(want.begin(), want.end(), "tokenizer.ggml.padding_token_id"));
  want.insert(std::find(want.begin(), want.end(), "tokenizer.chat_template"), "tokenizer.ggml.eot_token_id");
  EXPECT_EQ(keys, want);
  EXPECT_EQ(f->GetString("general.architecture"), "bitnet-b1.58");
  EXPECT_EQ(f->GetString("general.name"), "tq-model");
  EXPECT_EQ(f->GetUint("bitnet-b1.58.vocab_size"), m.s.n_vocab);
  EXPECT_EQ(f->GetUint("bitnet-b1.58.rope.dimension_count"), 64u);
  EXPECT_EQ(f->Find("tokenizer.ggml.bos_token_id")->type, gguf::ValueType::kUint32);
  EXPECT_EQ(f->GetUint("tokenizer.ggml.bos_token_id"), m.s.n_vocab - 3);
  // llama.cpp computes SiLU for `bitnet`: the result says so.
  EXPECT_EQ(f->GetString("trinity.ffn_activation"), "silu");
  EXPECT_EQ(f->GetString("tokenizer.chat_template"), "{{ 'User: ' + messages[0]['content'] }}");
  const std::vector<double>& scores = f->GetFloatArray("tokenizer.ggml.scores");
  EXPECT_EQ(scores[0], 0.0);
  EXPECT_EQ(scores[m.s.n_vocab - 1], -1000.0);
  // Embedding F32 -> F16 (bit exact to round-to-nearest-even), norms and ternary tensors exact.
  std::vector<std::string> names;
  for (const gguf::TensorInfo& t : f->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, ExpectedTensorOrder(m.s, true));
  CheckTensors(*f, m.s, m.e, true);

  // The activation can be overridden (a llama.cpp file that really is 2B-4T).
  ConvertOptions opt;
  opt.ffn_activation = "relu2";
  opt.force = true;
  ConvertGgufToI2S(in.string(), out, opt);
  EXPECT_EQ(gguf::File::Open(out)->Find("trinity.ffn_activation"), nullptr);
}

TEST(ConvertGguf, Tq2_0ToI2S) { CheckTqConversion(kGgmlTypeTQ2_0); }
TEST(ConvertGguf, Tq1_0ToI2S) { CheckTqConversion(kGgmlTypeTQ1_0); }

TEST(ConvertGguf, NonUniformBlockScalesAreAnError) {
  TempDir tmp;
  const fs::path in = tmp.path / "in.gguf";
  WriteBytes(in, MakeTqModel(kGgmlTypeTQ2_0, /*nonuniform=*/true).image);
  const std::string msg = ErrorOf([&] { ConvertGgufToI2S(in.string(), (tmp.path / "out.gguf").string(), {}); });
  EXPECT_NE(msg.find("blk.1.ffn_up.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block 7"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp.path / "out.gguf"));
}

TEST(ConvertGguf, MicrosoftTemplateWhenSourceHasNone) {
  TempDir tmp;
  const fs::path in = tmp.path / "in.gguf";
  WriteBytes(in, MakeTqModel(kGgmlTypeTQ1_0, false, /*with_template=*/false).image);
  const std::string out = (tmp.path / "out.gguf").string();
  ConvertGgufToI2S(in.string(), out, {});
  EXPECT_EQ(gguf::File::Open(out)->GetString("tokenizer.chat_template"), kMicrosoftChatTemplate);
}

TEST(ConvertGguf, I2SInputIsCopiedThrough) {
  TempDir tmp;
  const fs::path in = tmp.path / "in.gguf";
  WriteBytes(in, MakeTqModel(kGgmlTypeTQ2_0).image);
  const std::string first = (tmp.path / "first.gguf").string();
  ConvertGgufToI2S(in.string(), first, {});
  const std::string second = (tmp.path / "second.gguf").string();
  ConvertGgufToI2S(first, second, {});
  std::ifstream a(first, std::ios::binary), b(second, std::ios::binary);
  const std::vector<char> da(std::istreambuf_iterator<char>(a), {}), db(std::istreambuf_iterator<char>(b), {});
  EXPECT_TRUE(da == db) << "an I2_S file must come through byte for byte";
  // Converting onto itself is refused.
  ConvertOptions opt;
  opt.force = true;
  EXPECT_NE(ErrorOf([&] { ConvertGgufToI2S(first, first, opt); }).find("overwrite the input"), std::string::npos);
}

TEST(ConvertGguf, RejectsOtherArchitectures) {
  TempDir tmp;
  gguf::Writer w;
  w.AddString("general.architecture", "llama");
  const fs::path in = tmp.path / "in.gguf";
  w.WriteFile(in.string());
  const std::string msg = ErrorOf([&] { ConvertGgufToI2S(in.string(), (tmp.path / "out.gguf").string(), {}); });
  EXPECT_NE(msg.find("llama"), std::string::npos) << msg;
}

}  // namespace
}  // namespace trinity::convert
