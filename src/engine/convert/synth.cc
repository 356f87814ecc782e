#include "engine/convert/synth.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/convert/convert_internal.h"
#include "engine/quant/quant.h"
#include "engine/tokenizer/tokenizer.h"

namespace trinity::convert {

namespace {

// SplitMix64: a portable generator (std:: distributions differ between standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double Normal() {  // Box-Muller
    const double u1 = 1.0 - Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

internal::Hparams ShapeHparams(const std::string& shape, uint32_t n_vocab) {
  internal::Hparams hp;
  hp.n_vocab = n_vocab;
  hp.n_ctx = 4096;
  hp.rms_eps = 1e-5f;
  hp.rope_theta = 500000.0f;
  if (shape == "tiny") {
    hp.name = "trinity-synth-tiny";
    hp.n_embd = 256, hp.n_layer = 4, hp.n_ff = 768, hp.n_head = 4, hp.n_head_kv = 2;
  } else if (shape == "2b-4t") {
    hp.name = "trinity-synth-2b-4t";
    hp.n_embd = 2560, hp.n_layer = 30, hp.n_ff = 6912, hp.n_head = 20, hp.n_head_kv = 5;
  } else {
    Fail("unknown shape \"{}\": expected tiny or 2b-4t", shape);
  }
  hp.n_rot = hp.n_embd / hp.n_head;
  return hp;
}

internal::TokenizerMeta MetaFromTokenizer(const TokenizerData& data) {
  internal::TokenizerMeta meta;
  meta.add_bos = true;
  meta.tokens = data.tokens;
  meta.token_types = data.token_types;
  meta.merges = data.merges;
  meta.scores.resize(data.tokens.size());
  for (size_t i = 0; i < data.tokens.size(); ++i) {
    meta.scores[i] = data.token_types[i] == static_cast<int32_t>(TokenType::kControl) ? -1000.0f : 0.0f;
  }
  if (data.bos_id >= 0) meta.bos_id = static_cast<uint32_t>(data.bos_id);
  if (data.eos_id >= 0) meta.eos_id = meta.pad_id = static_cast<uint32_t>(data.eos_id);
  meta.chat_template = kMicrosoftChatTemplate;
  return meta;
}

}  // namespace

void WriteSyntheticModel(const std::string& out_path, const SynthOptions& options) {
  const std::string tokenizer_path =
      options.tokenizer_json.empty() ? std::string(TRINITY_DATA_DIR) + "/llama3/tokenizer.json" : options.tokenizer_json;
  const TokenizerData vocab = Tokenizer::DataFromHFJson(tokenizer_path);
  const internal::Hparams hp = ShapeHparams(options.shape, static_cast<uint32_t>(vocab.tokens.size()));
  internal::CheckOutputPath(out_path, "", options.force);

  gguf::Writer writer;
  internal::WriteMetadata(writer, hp, MetaFromTokenizer(vocab));
  writer.AddString("trinity.synthetic", fmt::format("random weights, shape {}, seed {}", options.shape, options.seed));
  Rng rng(options.seed);

  // Embedding ~ N(0, 0.5^2): with the tied LM head this gives logits with a spread of a few units,
  // so greedy decoding has clear margins.
  {
    const uint64_t n = static_cast<uint64_t>(hp.n_embd) * hp.n_vocab;
    std::vector<float> values(n);
    for (float& v : values) v = static_cast<float>(0.5 * rng.Normal());
    writer.AddTensor("token_embd.weight", {hp.n_embd, hp.n_vocab}, kGgmlTypeF16, quant::ToF16(values.data(), n));
  }
  auto norm = [&](uint64_t n) {
    std::vector<float> w(n);
    for (float& v : w) v = static_cast<float>(1.0 + 0.1 * rng.Normal());
    std::vector<uint8_t> bytes(n * 4);
    std::memcpy(bytes.data(), w.data(), bytes.size());
    return bytes;
  };
  writer.AddTensor("output_norm.weight", {hp.n_embd}, kGgmlTypeF32, norm(hp.n_embd));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    for (const internal::BlockTensor& t : internal::kBlockTensors) {
      const std::vector<uint64_t> ne = internal::BlockTensorShape(t.gguf, hp);
      const std::string name = fmt::format("blk.{}.{}.weight", il, t.gguf);
      if (!t.ternary) {
        writer.AddTensor(name, ne, kGgmlTypeF32, norm(ne[0]));
        continue;
      }
      // Codes uniform over {-1, 0, +1}; scale ~ mean|W| of a trained layer (0.01 .. 0.05).
      const uint64_t n = ne[0] * ne[1];
      std::vector<int8_t> codes(n);
      for (int8_t& c : codes) c = static_cast<int8_t>(static_cast<int>(rng.Next() % 3) - 1);
      const float scale = static_cast<float>(0.01 + 0.04 * rng.Uniform());
      writer.AddTensor(name, ne, kBitnetTypeI2_S, quant::PackI2S(codes.data(), n, scale));
    }
  }
  writer.WriteFile(out_path);
}

}  // namespace trinity::convert
