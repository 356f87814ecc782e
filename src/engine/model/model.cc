#include "engine/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include <fmt/ranges.h>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/quant/quant.h"

namespace trinity {

const char* FfnActivationName(FfnActivation activation) {
  return activation == FfnActivation::kRelu2 ? "relu2" : "silu";
}

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;  // sanity bound for any hyper-parameter

bool IsTernaryType(TensorType type) {
  return type == TensorType::kI2_S || type == TensorType::kTQ2_0 || type == TensorType::kTQ1_0;
}

// Packs int8 codes {-1,0,1} of a row-major [n_out][n_in] matrix into I2_S blocks (no scale tail).
std::vector<uint8_t> PackCodes(const int8_t* codes, uint64_t n) {
  std::vector<uint8_t> packed = quant::PackI2S(codes, n, 1.0f);
  packed.resize(n / 4);
  return packed;
}

}  // namespace

const char* WeightPlacementName(WeightPlacement placement) {
  switch (placement) {
    case WeightPlacement::kCopy: return "copy";
    case WeightPlacement::kMapped: return "mmap";
    case WeightPlacement::kAuto: break;
  }
  return "auto";
}

namespace {

WeightPlacement ResolvePlacement(WeightPlacement placement) {
  if (placement != WeightPlacement::kAuto) return placement;
  if (const char* env = std::getenv("TRINITY_WEIGHTS"); env != nullptr && *env != '\0') {
    const std::string v = env;
    if (v == "copy") return WeightPlacement::kCopy;
    if (v == "mmap") return WeightPlacement::kMapped;
    Fail("TRINITY_WEIGHTS is \"{}\"; expected copy or mmap", v);
  }
  return TransparentHugePagesAvailable() ? WeightPlacement::kCopy : WeightPlacement::kMapped;
}

}  // namespace

std::unique_ptr<Model> Model::Load(const std::string& path, const LoadOptions& options) {
  const WeightPlacement placement = ResolvePlacement(options.weights);
  std::unique_ptr<Model> model(new Model());
  model->placement_ = placement;
  model->file_ = gguf::File::Open(path);
  model->LoadConfig();
  model->tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::DataFromGGUF(*model->file_));
  if (model->tokenizer_->n_vocab() > model->config_.n_vocab) {
    Fail("{}: the tokenizer has {} tokens but token_embd.weight has only {} rows", path,
         model->tokenizer_->n_vocab(), model->config_.n_vocab);
  }
  model->LoadWeights();
  const std::string chat_template = model->file_->FindString("tokenizer.chat_template").value_or("");
  model->chat_format_ = DetectChatFormat(chat_template, model->tokenizer_->data().eot_id >= 0);
  return model;
}

void Model::LoadConfig() {
  const gguf::File& f = *file_;
  ModelConfig& c = config_;
  c.architecture = f.GetString("general.architecture");
  const std::string& arch = c.architecture;
  if (arch != "bitnet-b1.58" && arch != "bitnet-25" && arch != "bitnet") {
    Fail("{}: general.architecture is \"{}\"; Trinity reads BitNet b1.58 models (bitnet-b1.58, bitnet-25, bitnet)",
         f.path(), arch);
  }
  c.name = f.FindString("general.name").value_or(arch);
  auto get = [&](const std::string& key) -> int64_t {
    const uint64_t v = f.GetUint(arch + "." + key);
    if (v == 0 || v > static_cast<uint64_t>(kMaxDim)) Fail("{}: {}.{} = {} is out of range", f.path(), arch, key, v);
    return static_cast<int64_t>(v);
  };
  c.n_embd = get("embedding_length");
  c.n_layer = get("block_count");
  c.n_ff = get("feed_forward_length");
  c.n_head = get("attention.head_count");
  c.n_head_kv = f.FindUint(arch + ".attention.head_count_kv") ? get("attention.head_count_kv") : c.n_head;
  c.n_ctx_train = get("context_length");
  c.rms_eps = static_cast<float>(f.FindFloat(arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = static_cast<float>(f.FindFloat(arch + ".rope.freq_base").value_or(10000.0));
  if (c.n_embd % c.n_head != 0) Fail("{}: embedding_length {} is not a multiple of head_count {}", f.path(), c.n_embd, c.n_head);
  if (c.n_head % c.n_head_kv != 0) Fail("{}: head_count {} is not a multiple of head_count_kv {}", f.path(), c.n_head, c.n_head_kv);
  c.head_dim = c.n_embd / c.n_head;
  c.n_rot = f.FindUint(arch + ".rope.dimension_count") ? get("rope.dimension_count") : c.head_dim;
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) Fail("{}: rope.dimension_count {} must be even and <= head dim {}", f.path(), c.n_rot, c.head_dim);
  if (!(c.rms_eps > 0.0f) || !std::isfinite(c.rope_theta) || c.rope_theta <= 0.0f) Fail("{}: invalid rms epsilon or rope.freq_base", f.path());

  // Activation: Microsoft's architectures use relu^2; llama.cpp computes SiLU for `bitnet`.
  // `trinity.ffn_activation` ("relu2" | "silu") overrides both.
  c.activation = arch == "bitnet" ? FfnActivation::kSilu : FfnActivation::kRelu2;
  if (auto act = f.FindString("trinity.ffn_activation")) {
    if (*act == "relu2") {
      c.activation = FfnActivation::kRelu2;
    } else if (*act == "silu") {
      c.activation = FfnActivation::kSilu;
    } else {
      Fail("{}: trinity.ffn_activation is \"{}\"; expected \"relu2\" or \"silu\"", f.path(), *act);
    }
  }
  const gguf::TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) Fail("{}: tensor token_embd.weight is missing", f.path());
  if (embd->ne.size() != 2 || static_cast<int64_t>(embd->ne[0]) != c.n_embd) {
    Fail("{}: token_embd.weight must be {{{}, n_vocab}}", f.path(), c.n_embd);
  }
  c.n_vocab = static_cast<int64_t>(embd->ne[1]);
  if (auto vocab = f.FindUint(arch + ".vocab_size"); vocab && static_cast<int64_t>(*vocab) != c.n_vocab) {
    Fail("{}: {}.vocab_size = {} but token_embd.weight has {} rows", f.path(), arch, *vocab, c.n_vocab);
  }
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;
}

TernaryWeight Model::LoadTernary(const std::string& name, int64_t n_in, int64_t n_out) {
  const gguf::TensorInfo* t = file_->FindTensor(name);
  if (t == nullptr) Fail("{}: tensor {} is missing", file_->path(), name);
  if (t->ne.size() != 2 || static_cast<int64_t>(t->ne[0]) != n_in || static_cast<int64_t>(t->ne[1]) != n_out) {
    Fail("{}: tensor {} has shape {{{}}}, expected {{{}, {}}} from the model's hyper-parameters", file_->path(), name,
         fmt::join(t->ne, ", "), n_in, n_out);
  }
  if (n_in % quant::kI2SBlock != 0) Fail("{}: tensor {} input size {} is not a multiple of 128", file_->path(), name, n_in);
  const uint64_t n = static_cast<uint64_t>(n_in) * static_cast<uint64_t>(n_out);
  const uint8_t* data = file_->TensorData(*t);
  TernaryWeight w;
  w.source_type = t->type;
  w.view.n_in = n_in;
  w.view.n_out = n_out;
  switch (t->type) {
    case TensorType::kI2_S:
      w.view.scale = quant::I2SScale(data, n);  // read before Place releases the pages
      w.view.codes = Place(data, n / 4);
      break;
    case TensorType::kTQ2_0:
    case TensorType::kTQ1_0: {
      std::vector<int8_t> codes(n);
      std::vector<float> block_scales(n / quant::kTQBlock);
      if (t->type == TensorType::kTQ2_0) {
        quant::UnpackTQ2_0(data, n, codes.data(), block_scales.data());
      } else {
        quant::UnpackTQ1_0(data, n, codes.data(), block_scales.data());
      }
      w.owned_codes = PackCodes(codes.data(), n);
      // One scale when every block that holds a non-zero code has the same d (the usual case:
      // llama.cpp's converter writes mean|W| into every block); else one scale per 128 values.
      std::optional<float> uniform;
      bool is_uniform = true;
      for (size_t b = 0; b < block_scales.size() && is_uniform; ++b) {
        const bool any = std::any_of(codes.begin() + b * quant::kTQBlock, codes.begin() + (b + 1) * quant::kTQBlock,
                                     [](int8_t v) { return v != 0; });
        if (!any) continue;
        if (!uniform) uniform = block_scales[b];
        is_uniform = *uniform == block_scales[b];
      }
      if (is_uniform) {
        w.view.scale = uniform.value_or(0.0f);
      } else {
        w.owned_group_scales.resize(n / quant::kI2SBlock);
        for (size_t g = 0; g < w.owned_group_scales.size(); ++g) w.owned_group_scales[g] = block_scales[g / 2];
      }
      break;
    }
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16: {
      // Dense linears: already-ternary values keep their scale; master weights are ternarised
      // with the training rule s = mean|W|.
      std::vector<float> values(n);
      quant::DequantizeRow(t->type, data, n, values.data());
      std::vector<int8_t> codes(n);
      w.view.scale = quant::TernarizeDense(values.data(), n, codes.data());
      w.owned_codes = PackCodes(codes.data(), n);
      break;
    }
    default:
      Fail("{}: tensor {} has type {}; ternary layers must be I2_S, TQ2_0, TQ1_0, F16, BF16 or F32", file_->path(), name,
           Traits(t->type).name);
  }
  // llama.cpp's optional per-tensor scale: blk.N.attn_q.scale multiplies the layer's output.
  const std::string scale_name = name.substr(0, name.size() - std::string(".weight").size()) + ".scale";
  if (const gguf::TensorInfo* s = file_->FindTensor(scale_name)) {
    if (s->type != TensorType::kF32 || s->n_elements() != 1) Fail("{}: tensor {} must be a single F32 value", file_->path(), scale_name);
    float extra;
    std::memcpy(&extra, file_->TensorData(*s), 4);
    w.view.scale *= extra;
    for (float& g : w.owned_group_scales) g *= extra;
  }
  if (!std::isfinite(w.view.scale)) Fail("{}: tensor {} has a non-finite scale", file_->path(), name);
  if (!w.owned_codes.empty()) {
    w.view.codes = w.owned_codes.data();
    if (placement_ == WeightPlacement::kCopy) {  // repacked codes: into the arena, the vector freed
      uint8_t* copy = arena_.Allocate(w.owned_codes.size());
      std::memcpy(copy, w.owned_codes.data(), w.owned_codes.size());
      w.view.codes = copy;
      w.owned_codes = std::vector<uint8_t>();
    }
  }
  if (!w.owned_group_scales.empty()) w.view.group_scales = w.owned_group_scales.data();
  return w;
}

const uint8_t* Model::Place(const uint8_t* data, uint64_t n) {
  if (placement_ != WeightPlacement::kCopy) return data;
  uint8_t* copy = arena_.Allocate(n);
  std::memcpy(copy, data, n);
  file_->ReleasePages(data, n);
  return copy;
}

const kernels::DenseView& Model::StreamedLmHead() const {
  std::call_once(streamed_lm_head_once_, [this] {
    streamed_lm_head_ = lm_head_;
    if (placement_ != WeightPlacement::kCopy) return;
    const uint64_t bytes = lm_head_.row_bytes * static_cast<uint64_t>(lm_head_.n_rows);
    streamed_lm_head_data_ = HugePageBuffer(bytes);
    // In 16 MiB pieces, each piece's file pages released once copied, so that resident memory
    // grows by the copy only (a 657 MB head copied whole first held both: 1.63x the file at
    // peak for 2B-4T). Tied: token_embd() still points at the released pages; contexts read
    // their token rows from this copy instead (Context::token_embd_).
    constexpr uint64_t kPiece = uint64_t{16} << 20;
    for (uint64_t at = 0; at < bytes; at += kPiece) {
      const uint64_t n = std::min(kPiece, bytes - at);
      std::memcpy(streamed_lm_head_data_.data() + at, lm_head_.data + at, n);
      file_->ReleasePages(lm_head_.data + at, n);
    }
    streamed_lm_head_.data = streamed_lm_head_data_.data();
  });
  return streamed_lm_head_;
}

const float* Model::LoadNorm(const std::string& name, int64_t n) {
  const gguf::TensorInfo* t = file_->FindTensor(name);
  if (t == nullptr) Fail("{}: tensor {} is missing", file_->path(), name);
  if (t->n_elements() != static_cast<uint64_t>(n) || t->ne.size() != 1) {
    Fail("{}: tensor {} has shape {{{}}}, expected {{{}}}", file_->path(), name, fmt::join(t->ne, ", "), n);
  }
  if (t->type == TensorType::kF32) {
    const auto* data = reinterpret_cast<const float*>(file_->TensorData(*t));
    if (placement_ != WeightPlacement::kCopy) return data;
    // Copied too, so that decode reads nothing from the mapping: a norm read there maps the
    // page-cache folio around it, up to 2 MiB each where the file sits in large folios (up to
    // 190 MiB more resident memory measured at depth 3072 on 2B-4T).
    const float* copy = owned_floats_.emplace_back(data, data + n).data();
    file_->ReleasePages(reinterpret_cast<const uint8_t*>(data), static_cast<uint64_t>(n) * sizeof(float));
    return copy;
  }
  if (t->type != TensorType::kF16 && t->type != TensorType::kBF16) {
    Fail("{}: tensor {} has type {}; norms must be F32, F16 or BF16", file_->path(), name, Traits(t->type).name);
  }
  std::vector<float>& values = owned_floats_.emplace_back(n);
  quant::DequantizeRow(t->type, file_->TensorData(*t), n, values.data());
  return values.data();
}

kernels::DenseView Model::LoadDense(const std::string& name, int64_t n_in, int64_t n_rows) {
  const gguf::TensorInfo* t = file_->FindTensor(name);
  if (t == nullptr) Fail("{}: tensor {} is missing", file_->path(), name);
  if (t->ne.size() != 2 || static_cast<int64_t>(t->ne[0]) != n_in || static_cast<int64_t>(t->ne[1]) != n_rows) {
    Fail("{}: tensor {} has shape {{{}}}, expected {{{}, {}}}", file_->path(), name, fmt::join(t->ne, ", "), n_in, n_rows);
  }
  if (!quant::CanDequantize(t->type) || IsTernaryType(t->type)) {
    Fail("{}: tensor {} has type {}; embeddings must be F16, F32, BF16, Q8_0 or Q6_K", file_->path(), name,
         Traits(t->type).name);
  }
  const std::optional<uint64_t> row_bytes = TensorBytes(t->type, static_cast<uint64_t>(n_in));
  if (!row_bytes) Fail("{}: tensor {} rows of {} values are not whole {} blocks", file_->path(), name, n_in, Traits(t->type).name);
  return kernels::DenseView{t->type, file_->TensorData(*t), n_in, n_rows, *row_bytes};
}

void Model::LoadWeights() {
  const ModelConfig& c = config_;
  token_embd_ = LoadDense("token_embd.weight", c.n_embd, c.n_vocab);
  lm_head_ = c.tied_embeddings ? token_embd_ : LoadDense("output.weight", c.n_embd, c.n_vocab);
  output_norm_ = LoadNorm("output_norm.weight", c.n_embd);
  layers_.resize(static_cast<size_t>(c.n_layer));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LayerWeights& l = layers_[static_cast<size_t>(i)];
    l.attn_norm = LoadNorm(p + "attn_norm.weight", c.n_embd);
    l.wq = LoadTernary(p + "attn_q.weight", c.n_embd, c.n_embd);
    l.wk = LoadTernary(p + "attn_k.weight", c.n_embd, c.n_embd_kv());
    l.wv = LoadTernary(p + "attn_v.weight", c.n_embd, c.n_embd_kv());
    l.attn_sub_norm = LoadNorm(p + "attn_sub_norm.weight", c.n_embd);
    l.wo = LoadTernary(p + "attn_output.weight", c.n_embd, c.n_embd);
    l.ffn_norm = LoadNorm(p + "ffn_norm.weight", c.n_embd);
    l.w_gate = LoadTernary(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    l.w_up = LoadTernary(p + "ffn_up.weight", c.n_embd, c.n_ff);
    l.ffn_sub_norm = LoadNorm(p + "ffn_sub_norm.weight", c.n_ff);
    l.w_down = LoadTernary(p + "ffn_down.weight", c.n_ff, c.n_embd);
  }
}

const kernels::Q8View& Model::LmHeadQ8() const {
  std::call_once(lm_head_q8_once_, [this] {
    const kernels::DenseView& head = lm_head_;
    const int64_t n_in = head.n_in, n_rows = head.n_rows;
    // Rows padded to 64 bytes: every row starts on a cache line (the kernels' loads never split);
    // the padding holds 128, the stored zero. In 2 MiB pages where the kernel gives them (a
    // stream read every token, as the other weights).
    const uint64_t row_bytes = (static_cast<uint64_t>(n_in) + 63) / 64 * 64;
    lm_head_q8_data_ = HugePageBuffer(row_bytes * static_cast<uint64_t>(n_rows));
    lm_head_q8_scales_.resize(static_cast<size_t>(n_rows));
    uint8_t* base = lm_head_q8_data_.data();
    std::memset(base, 128, lm_head_q8_data_.size());
    // Chunks of rows over all cores; each chunk's source pages are released once converted.
    constexpr int64_t kChunk = 1024;
    const int64_t n_chunks = (n_rows + kChunk - 1) / kChunk;
    const int n_threads = static_cast<int>(std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, n_chunks));
    auto work = [&](int index) {
      std::vector<float> row(static_cast<size_t>(n_in));
      for (int64_t chunk = index; chunk < n_chunks; chunk += n_threads) {
        const int64_t begin = chunk * kChunk, end = std::min(n_rows, begin + kChunk);
        for (int64_t r = begin; r < end; ++r) {
          kernels::DenseRow(head, r, row.data());
          lm_head_q8_scales_[static_cast<size_t>(r)] = kernels::QuantizeRowQ8(row.data(), n_in, base + r * row_bytes);
        }
        file_->ReleasePages(head.data + begin * head.row_bytes, static_cast<uint64_t>(end - begin) * head.row_bytes);
      }
    };
    std::vector<std::thread> threads;
    for (int i = 1; i < n_threads; ++i) threads.emplace_back(work, i);
    work(0);
    for (std::thread& t : threads) t.join();
    lm_head_q8_ = kernels::Q8View{base, n_in, n_rows, row_bytes, lm_head_q8_scales_.data()};
  });
  return lm_head_q8_;
}

uint64_t Model::WeightBytesPerToken(bool q8_lm_head) const {
  const ModelConfig& c = config_;
  uint64_t bytes = 0;
  for (const LayerWeights& l : layers_) {
    for (const TernaryWeight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      bytes += static_cast<uint64_t>(w->view.n_in * w->view.n_out / 4);
    }
    bytes += static_cast<uint64_t>(4 * c.n_embd + c.n_ff) * sizeof(float);
  }
  const uint64_t head_row_bytes = q8_lm_head ? (static_cast<uint64_t>(c.n_embd) + 63) / 64 * 64 + sizeof(float) : lm_head_.row_bytes;
  bytes += head_row_bytes * static_cast<uint64_t>(lm_head_.n_rows) + c.n_embd * sizeof(float);
  bytes += token_embd_.row_bytes;  // one embedding row
  return bytes;
}

std::string Model::TensorTypeSummary() const {
  std::map<std::string, int> counts;
  for (const gguf::TensorInfo& t : file_->tensors()) ++counts[std::string(Traits(t.type).name)];
  std::string out;
  for (const auto& [name, count] : counts) out += fmt::format("{}{} x{}", out.empty() ? "" : ", ", name, count);
  return out;
}

}  // namespace trinity
