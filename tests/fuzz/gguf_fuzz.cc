// libFuzzer target for the GGUF reader: any input must parse or throw trinity::Error, never
// crash, hang, over-read or allocate without bound. To write a seed corpus of small valid files:
//   mkdir corpus && TRINITY_GGUF_FUZZ_SEEDS=corpus ./gguf_fuzz && ./gguf_fuzz corpus
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/common/error.h"
#include "engine/gguf/gguf.h"

namespace {

// Writes a few small valid files into `dir` to start the corpus from.
void WriteSeeds(const std::string& dir) {
  using trinity::gguf::Writer;
  Writer small;
  small.AddString("general.architecture", "llama");
  small.AddUint32("llama.block_count", 2);
  small.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  small.AddBool("tokenizer.ggml.add_bos_token", true);
  small.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  small.AddFloat32Array("tokenizer.ggml.scores", {0.0f, -1.0f, -1000.0f});
  small.AddInt32Array("tokenizer.ggml.token_type", {1, 1, 3});
  small.AddTensor("output_norm.weight", {4}, trinity::kGgmlTypeF32, std::vector<uint8_t>(16, 1));
  small.AddTensor("token_embd.weight", {32, 2}, trinity::kGgmlTypeQ8_0,
                  std::vector<uint8_t>(68, 2));
  small.WriteFile(dir + "/small.gguf");

  Writer bitnet;
  bitnet.SetAlignment(64);
  bitnet.AddString("general.architecture", "bitnet-b1.58");
  bitnet.AddUint64("general.file_type", 40);
  bitnet.AddTensor("blk.0.attn_q.weight", {128, 2}, trinity::kBitnetTypeI2_S,
                   std::vector<uint8_t>(96, 0x55));
  bitnet.AddTensor("blk.0.attn_norm.weight", {128}, trinity::kGgmlTypeF32,
                   std::vector<uint8_t>(512, 0));
  bitnet.AddTensor("blk.0.ffn_up.weight", {256}, trinity::kGgmlTypeTQ2_0,
                   std::vector<uint8_t>(66, 0));
  bitnet.WriteFile(dir + "/bitnet.gguf");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (const char* dir = std::getenv("TRINITY_GGUF_FUZZ_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = trinity::gguf::File::FromMemory(data, size, "fuzz.gguf");
    // Touch what a loader would: every tensor's bytes and the typed getters.
    uint64_t sum = 0;
    for (const auto& tensor : file->tensors()) {
      const uint8_t* p = file->TensorData(tensor);
      sum += p[0] + p[tensor.size_bytes - 1];
    }
    for (const auto& kv : file->metadata()) {
      try {
        sum += file->FindUint(kv.key).value_or(0);
      } catch (const trinity::Error&) {
      }
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const trinity::Error&) {
  }
  return 0;
}
