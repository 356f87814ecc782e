// Model loading (valid and malformed files), generation stop logic, context limits.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <functional>
#include <tuple>

#include "engine/common/error.h"
#include "engine/gguf/gguf.h"
#include "engine/model/context.h"
#include "engine/model/generate.h"
#include "engine/model/model.h"
#include "engine/quant/quant.h"

namespace trinity {
namespace {

std::string TestModel() {
  const char* path = std::getenv("TRINITY_TEST_MODEL");
  return path ? path : "";
}

#define REQUIRE_MODEL()                                                     \
  if (TestModel().empty()) GTEST_SKIP() << "TRINITY_TEST_MODEL is not set"

// Rewrites the test model with edits: `meta` may change or drop (return false) a key-value,
// `tensor` may change or drop a tensor (name, shape, type id, bytes).
struct Edit {
  std::function<bool(gguf::KeyValue&)> meta = [](gguf::KeyValue&) { return true; };
  std::function<bool(std::string&, std::vector<uint64_t>&, uint32_t&, std::vector<uint8_t>&)> tensor =
      [](std::string&, std::vector<uint64_t>&, uint32_t&, std::vector<uint8_t>&) { return true; };
};

std::string WriteEdited(const std::string& name, const Edit& edit) {
  const auto src = gguf::File::Open(TestModel());
  gguf::Writer writer;
  for (gguf::KeyValue kv : src->metadata()) {
    if (edit.meta(kv)) writer.AddValue(kv.key, kv.value);
  }
  for (const gguf::TensorInfo& t : src->tensors()) {
    std::string tname = t.name;
    std::vector<uint64_t> ne = t.ne;
    uint32_t type = t.type_id;
    const uint8_t* data = src->TensorData(t);
    std::vector<uint8_t> bytes(data, data + t.size_bytes);
    if (edit.tensor(tname, ne, type, bytes)) writer.AddTensor(tname, ne, type, std::move(bytes));
  }
  const std::string path = (std::filesystem::temp_directory_path() / ("trinity_model_test_" + name + ".gguf")).string();
  writer.WriteFile(path);
  return path;
}

void ExpectLoadError(const std::string& path, const std::string& needle) {
  try {
    Model::Load(path);
    FAIL() << "loading " << path << " should fail with \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the message names the file: " << e.what();
  }
  std::filesystem::remove(path);
}

TEST(ModelTest, LoadsSyntheticTiny) {
  REQUIRE_MODEL();
  const auto model = Model::Load(TestModel());
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.architecture, "bitnet-b1.58");
  EXPECT_EQ(c.n_embd, 256);
  EXPECT_EQ(c.n_layer, 4);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.n_head_kv, 2);
  EXPECT_EQ(c.n_ff, 768);
  EXPECT_EQ(c.n_vocab, 128256);
  EXPECT_EQ(c.activation, FfnActivation::kRelu2);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(model->tokenizer().n_vocab(), 128256);
  EXPECT_EQ(model->chat_format(), ChatFormat::kBitnet);
  EXPECT_EQ(model->layers()[0].wq.source_type, TensorType::kI2_S);
}

// Resident memory of this process, from /proc/self/statm.
uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// The KV cache is sized for the whole context, but only the positions a sequence reaches take
// memory: a 131072-position context (537 MB of cache for this model) that evaluated a few tokens
// holds a few pages of it.
TEST(ModelTest, KvCacheMemoryFollowsPositions) {
  REQUIRE_MODEL();
  const auto model = Model::Load(TestModel());
  const ModelConfig& c = model->config();
  const int64_t n_ctx = 131072;
  const uint64_t cache_bytes = 2 * static_cast<uint64_t>(c.n_layer * n_ctx * c.n_embd_kv()) * sizeof(float);
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  {
    Context warm(*model, ContextOptions(64, 1));  // the mapped weights become resident here
    warm.Eval(tokens);
  }
  const uint64_t before = ResidentBytes();
  Context context(*model, ContextOptions(n_ctx, 1));
  context.Eval(tokens);
  const uint64_t grown = ResidentBytes() - std::min(before, ResidentBytes());
  EXPECT_LT(grown, cache_bytes / 8) << "resident grew by " << grown << " bytes; the whole cache is " << cache_bytes;
}

TEST(ModelTest, RejectsWrongArchitecture) {
  REQUIRE_MODEL();
  Edit e;
  e.meta = [](gguf::KeyValue& kv) {
    if (kv.key == "general.architecture") kv.value.scalar = std::string("llama");
    return true;
  };
  e.tensor = [](std::string&, std::vector<uint64_t>& ne, uint32_t& type, std::vector<uint8_t>& bytes) {
    if (type == kBitnetTypeI2_S) {  // id 36 is I2_S only under Microsoft's architectures
      type = kGgmlTypeF32;
      bytes.assign(ne[0] * ne[1] * 4, 0);
    }
    return true;
  };
  ExpectLoadError(WriteEdited("arch", e), "general.architecture");
}

TEST(ModelTest, RejectsMissingTensor) {
  REQUIRE_MODEL();
  Edit e;
  e.tensor = [](std::string& name, auto&, auto&, auto&) { return name != "blk.1.ffn_up.weight"; };
  ExpectLoadError(WriteEdited("missing", e), "blk.1.ffn_up.weight");
}

TEST(ModelTest, RejectsShapeThatDisagreesWithConfig) {
  REQUIRE_MODEL();
  Edit e;
  e.meta = [](gguf::KeyValue& kv) {
    if (kv.key == "bitnet-b1.58.feed_forward_length") kv.value.scalar = uint64_t{1024};
    return true;
  };
  ExpectLoadError(WriteEdited("ffshape", e), "blk.0.ffn_gate.weight");
}

TEST(ModelTest, RejectsHeadCountThatDoesNotDivide) {
  REQUIRE_MODEL();
  Edit e;
  e.meta = [](gguf::KeyValue& kv) {
    if (kv.key == "bitnet-b1.58.attention.head_count") kv.value.scalar = uint64_t{3};
    return true;
  };
  ExpectLoadError(WriteEdited("heads", e), "head_count");
}

TEST(ModelTest, RejectsVocabSizeMismatch) {
  REQUIRE_MODEL();
  Edit e;
  e.meta = [](gguf::KeyValue& kv) {
    if (kv.key == "bitnet-b1.58.vocab_size") kv.value.scalar = uint64_t{1000};
    return true;
  };
  ExpectLoadError(WriteEdited("vocab", e), "vocab_size");
}

TEST(ModelTest, RejectsUnknownActivation) {
  REQUIRE_MODEL();
  Edit e;
  bool added = false;
  e.meta = [&added](gguf::KeyValue& kv) {
    if (kv.key == "general.name" && !added) {
      // Piggy-back: rename general.name into the activation key with a bad value.
      kv.key = "trinity.ffn_activation";
      kv.value.scalar = std::string("gelu");
      added = true;
    }
    return true;
  };
  ExpectLoadError(WriteEdited("act", e), "trinity.ffn_activation");
}

TEST(ModelTest, RejectsUnsupportedLinearType) {
  REQUIRE_MODEL();
  Edit e;
  e.tensor = [](std::string& name, std::vector<uint64_t>& ne, uint32_t& type, std::vector<uint8_t>& bytes) {
    if (name == "blk.2.attn_output.weight") {  // Q8_0 is not a ternary format
      std::vector<float> zeros(ne[0] * ne[1], 0.0f);
      bytes = quant::QuantizeQ8_0(zeros.data(), zeros.size());
      type = kGgmlTypeQ8_0;
    }
    return true;
  };
  ExpectLoadError(WriteEdited("q8lin", e), "blk.2.attn_output.weight");
}

TEST(ModelTest, RejectsMissingMergesWithKeyName) {
  REQUIRE_MODEL();
  Edit e;
  e.meta = [](gguf::KeyValue& kv) { return kv.key != "tokenizer.ggml.merges"; };
  ExpectLoadError(WriteEdited("merges", e), "tokenizer.ggml.merges");
}

TEST(ModelTest, TruncatedFileIsAnError) {
  REQUIRE_MODEL();
  const std::string path = (std::filesystem::temp_directory_path() / "trinity_model_test_trunc.gguf").string();
  std::filesystem::copy_file(TestModel(), path, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  ExpectLoadError(path, "");
}

// A TQ2_0 copy of blk.0.attn_q with doubled scale in every block equals an I2_S model whose scale
// is doubled (per-block scales that differ are covered against the Python reference in
// tests/e2e/forward_reference.sh).
TEST(ModelTest, Tq2BlockScalesMatchI2S) {
  REQUIRE_MODEL();
  const auto src = gguf::File::Open(TestModel());
  const gguf::TensorInfo* q = src->FindTensor("blk.0.attn_q.weight");
  const uint64_t n = q->n_elements();
  std::vector<int8_t> codes(n);
  quant::UnpackI2S(src->TensorData(*q), n, codes.data());
  const float scale = quant::I2SScale(src->TensorData(*q), n);
  Edit doubled_i2s, tq2;
  doubled_i2s.tensor = [&](std::string& name, auto&, uint32_t&, std::vector<uint8_t>& bytes) {
    if (name == "blk.0.attn_q.weight") bytes = quant::PackI2S(codes.data(), n, 2 * scale);
    return true;
  };
  tq2.tensor = [&](std::string& name, auto&, uint32_t& type, std::vector<uint8_t>& bytes) {
    if (name == "blk.0.attn_q.weight") {
      // Every block carries the same f16 scale: the loader collapses them to one tensor scale.
      std::vector<float> block_scales(n / quant::kTQBlock, 2 * scale);
      bytes.assign(n / quant::kTQBlock * quant::kTQ2_0BlockBytes, 0);
      quant::PackTQ2_0(codes.data(), n, block_scales.data(), bytes.data());
      type = kGgmlTypeTQ2_0;
    }
    return true;
  };
  const std::string a = WriteEdited("i2s2x", doubled_i2s), b = WriteEdited("tq2", tq2);
  const auto ma = Model::Load(a), mb = Model::Load(b);
  EXPECT_EQ(mb->layers()[0].wq.source_type, TensorType::kTQ2_0);
  Context ca(*ma, {32, 1}), cb(*mb, {32, 1});
  const std::vector<int32_t> tokens = {128000, 791, 4062, 14198};
  std::vector<float> la, lb;
  ca.Eval(tokens, &la);
  cb.Eval(tokens, &lb);
  // The TQ2_0 block scale is f16, I2_S's f32: equal only up to f16 rounding of the scale.
  double max_diff = 0;
  for (size_t i = 0; i < la.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(la[i] - lb[i])));
  EXPECT_LT(max_diff, 0.05);
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

// WeightPlacement: the private copy holds the file's bytes at other addresses, the mapped model
// uses the file's own, and both compute bit-identical logits (the F16 head too: StreamedLmHead).
TEST(ModelTest, CopiedAndMappedWeightsAgree) {
  REQUIRE_MODEL();
  const auto copied = Model::Load(TestModel(), {WeightPlacement::kCopy});
  const auto mapped = Model::Load(TestModel(), {WeightPlacement::kMapped});
  EXPECT_EQ(copied->weight_placement(), WeightPlacement::kCopy);
  EXPECT_EQ(mapped->weight_placement(), WeightPlacement::kMapped);
  const gguf::File& file = mapped->file();
  for (size_t il = 0; il < mapped->layers().size(); ++il) {
    const LayerWeights& a = copied->layers()[il];
    const LayerWeights& b = mapped->layers()[il];
    for (auto [wa, wb, name] : {std::tuple{&a.wq, &b.wq, "attn_q"}, std::tuple{&a.w_up, &b.w_up, "ffn_up"},
                                std::tuple{&a.w_down, &b.w_down, "ffn_down"}}) {
      const gguf::TensorInfo* t = file.FindTensor(fmt::format("blk.{}.{}.weight", il, name));
      ASSERT_NE(t, nullptr);
      const size_t bytes = static_cast<size_t>(wa->view.n_in * wa->view.n_out / 4);
      EXPECT_EQ(wb->view.codes, file.TensorData(*t)) << il << name;
      EXPECT_NE(wa->view.codes, wb->view.codes) << il << name;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(wa->view.codes) % 64, 0u);
      EXPECT_EQ(std::memcmp(wa->view.codes, file.TensorData(*t), bytes), 0) << il << name;
      EXPECT_EQ(wa->view.scale, wb->view.scale);
    }
  }
  EXPECT_NE(copied->layers()[0].attn_norm, mapped->layers()[0].attn_norm);  // norms copied too
  EXPECT_EQ(std::memcmp(copied->layers()[0].ffn_sub_norm, mapped->layers()[0].ffn_sub_norm,
                        static_cast<size_t>(copied->config().n_ff) * sizeof(float)), 0);
  const kernels::DenseView& head = copied->StreamedLmHead();
  EXPECT_NE(head.data, copied->lm_head().data);
  EXPECT_EQ(std::memcmp(head.data, copied->lm_head().data, head.row_bytes * head.n_rows), 0);
  EXPECT_EQ(mapped->StreamedLmHead().data, mapped->lm_head().data);
  const std::vector<int32_t> tokens = {128000, 791, 4062, 14198, 35308, 927};
  for (const LmHeadFormat head_format : {LmHeadFormat::kFile, LmHeadFormat::kQ8}) {
    ContextOptions options(64, 2);
    options.lm_head = head_format;
    Context ca(*copied, options), cb(*mapped, options);
    std::vector<float> la, lb;
    ca.Eval(tokens, &la);
    cb.Eval(tokens, &lb);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0) << LmHeadFormatName(head_format);
  }
}

// A repacked format (TQ2_0) goes into the copy as well, and reads the same as when mapped.
TEST(ModelTest, RepackedWeightsAreCopiedToo) {
  REQUIRE_MODEL();
  const auto src = gguf::File::Open(TestModel());
  Edit tq2;
  tq2.tensor = [&](std::string& name, auto&, uint32_t& type, std::vector<uint8_t>& bytes) {
    if (name == "blk.1.ffn_gate.weight") {
      const gguf::TensorInfo* t = src->FindTensor(name);
      const uint64_t n = t->n_elements();
      std::vector<int8_t> codes(n);
      quant::UnpackI2S(src->TensorData(*t), n, codes.data());
      std::vector<float> block_scales(n / quant::kTQBlock, quant::I2SScale(src->TensorData(*t), n));
      bytes.assign(n / quant::kTQBlock * quant::kTQ2_0BlockBytes, 0);
      quant::PackTQ2_0(codes.data(), n, block_scales.data(), bytes.data());
      type = kGgmlTypeTQ2_0;
    }
    return true;
  };
  const std::string path = WriteEdited("tq2copy", tq2);
  const auto copied = Model::Load(path, {WeightPlacement::kCopy});
  const auto mapped = Model::Load(path, {WeightPlacement::kMapped});
  const TernaryWeight& a = copied->layers()[1].w_gate;
  const TernaryWeight& b = mapped->layers()[1].w_gate;
  EXPECT_EQ(a.source_type, TensorType::kTQ2_0);
  EXPECT_TRUE(a.owned_codes.empty());  // moved into the arena
  EXPECT_FALSE(b.owned_codes.empty());
  EXPECT_EQ(std::memcmp(a.view.codes, b.view.codes, static_cast<size_t>(a.view.n_in * a.view.n_out / 4)), 0);
  std::filesystem::remove(path);
}

// $TRINITY_WEIGHTS chooses the placement of a kAuto load; another value is a clear error.
TEST(ModelTest, WeightPlacementFromTheEnvironment) {
  REQUIRE_MODEL();
  const char* old = std::getenv("TRINITY_WEIGHTS");
  const std::string saved = old != nullptr ? old : "";
  setenv("TRINITY_WEIGHTS", "mmap", 1);
  EXPECT_EQ(Model::Load(TestModel())->weight_placement(), WeightPlacement::kMapped);
  setenv("TRINITY_WEIGHTS", "copy", 1);
  EXPECT_EQ(Model::Load(TestModel())->weight_placement(), WeightPlacement::kCopy);
  EXPECT_EQ(Model::Load(TestModel(), {WeightPlacement::kMapped})->weight_placement(), WeightPlacement::kMapped);
  setenv("TRINITY_WEIGHTS", "ram", 1);
  try {
    Model::Load(TestModel());
    ADD_FAILURE() << "TRINITY_WEIGHTS=ram was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("TRINITY_WEIGHTS"), std::string::npos) << e.what();
  }
  if (old != nullptr) {
    setenv("TRINITY_WEIGHTS", saved.c_str(), 1);
  } else {
    unsetenv("TRINITY_WEIGHTS");
  }
}

TEST(GenerateTest, StopPrefixHold) {
  EXPECT_EQ(StopPrefixHold("hello wor", {"world"}), 3u);
  EXPECT_EQ(StopPrefixHold("hello", {"world"}), 0u);
  EXPECT_EQ(StopPrefixHold("abc\n", {"\n\n", "c\nx"}), 2u);
  EXPECT_EQ(StopPrefixHold("", {"x"}), 0u);
}

TEST(GenerateTest, LimitsStopsAndErrors) {
  REQUIRE_MODEL();
  const auto model = Model::Load(TestModel());
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<int32_t> prompt = {128000, 791, 4062, 14198};

  Context context(*model, {64, 1});
  Sampler sampler(greedy);
  GenerateOptions options;
  options.max_tokens = 8;
  options.stop_at_eog = false;
  std::string streamed;
  options.on_text = [&](std::string_view t) {
    streamed += t;
    return true;
  };
  const GenerateResult full = Generate(context, sampler, prompt, options);
  EXPECT_EQ(full.n_generated(), 8);
  EXPECT_EQ(full.finish_reason, FinishReason::kLength);
  EXPECT_EQ(streamed, full.text);
  EXPECT_EQ(full.text, model->tokenizer().Decode(full.tokens));
  ASSERT_GT(full.text.size(), 4u);

  // A stop string taken from the middle of the greedy output cuts the text right before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  context.Reset();
  streamed.clear();
  options.stop = {stop};
  const GenerateResult cut = Generate(context, sampler, prompt, options);
  EXPECT_EQ(cut.finish_reason, FinishReason::kStop);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(streamed, cut.text);

  // Cancelling from the callback stops generation.
  context.Reset();
  options.stop.clear();
  int calls = 0;
  options.on_text = [&](std::string_view) { return ++calls < 2; };
  const GenerateResult cancelled = Generate(context, sampler, prompt, options);
  EXPECT_TRUE(cancelled.cancelled);
  EXPECT_LT(cancelled.n_generated(), 8);

  // A prompt longer than the context is a clear error; a full context ends with "length".
  Context small(*model, {6, 1});
  const std::vector<int32_t> long_prompt(7, 791);
  EXPECT_THROW(Generate(small, sampler, long_prompt, options), Error);
  options.on_text = nullptr;
  options.max_tokens = 100;
  const GenerateResult filled = Generate(small, sampler, prompt, options);
  EXPECT_EQ(filled.finish_reason, FinishReason::kLength);
  EXPECT_EQ(filled.n_generated(), 3);  // 4 prompt positions + 2 evaluated + 1 last sampled

  // Out-of-range token ids are rejected, not read out of bounds.
  Context c2(*model, {8, 1});
  const std::vector<int32_t> bad = {128000, 999999};
  EXPECT_THROW(c2.Eval(bad), Error);
  EXPECT_THROW(Generate(c2, sampler, std::vector<int32_t>{}, options), Error);
}

}  // namespace
}  // namespace trinity
