// A loaded BitNet b1.58 model: configuration, tokenizer and weights.
//
// Reads Microsoft's GGUF (architecture bitnet-b1.58 / bitnet-25, I2_S ternary tensors), llama.cpp's
// (architecture bitnet, TQ2_0 / TQ1_0, optional per-tensor .scale tensors) and unquantised F16/F32/
// BF16 linears (ternarised at load with the training rule). Every ternary format ends up in one
// internal layout (I2_S blocks + scale) that the kernels read; Microsoft's tensors are used in place
// from the mapping, the others are repacked once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/chat/chat.h"
#include "engine/common/huge_pages.h"
#include "engine/gguf/gguf.h"
#include "engine/kernels/ref.h"
#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"

namespace trinity {

// A ternary linear layer in the kernels' layout; owns its bytes when repacked.
struct TernaryWeight {
  kernels::TernaryView view;
  TensorType source_type = TensorType::kUnknown;
  std::vector<uint8_t> owned_codes;
  std::vector<float> owned_group_scales;
};

struct LayerWeights {
  const float* attn_norm = nullptr;      // (n_embd)
  TernaryWeight wq, wk, wv, wo;          // (n_embd -> n_embd), (n_embd -> n_embd_kv) x2, (n_embd -> n_embd)
  const float* attn_sub_norm = nullptr;  // (n_embd)
  const float* ffn_norm = nullptr;       // (n_embd)
  TernaryWeight w_gate, w_up;            // (n_embd -> n_ff)
  const float* ffn_sub_norm = nullptr;   // (n_ff)
  TernaryWeight w_down;                  // (n_ff -> n_embd)
};

// Where the weights that decode streams every token (the ternary layers, the LM head) live.
enum class WeightPlacement {
  kAuto,    // $TRINITY_WEIGHTS ("copy" or "mmap") when set; else kCopy where the kernel has
            // transparent huge pages, kMapped where it has not
  kCopy,    // a private copy in 2 MiB pages (engine/common/huge_pages.h: decode reads it ~2x
            // faster than the mapping); the file's pages are released as they are copied
  kMapped,  // in place in the file's mapping: no copy, and the page cache is shared between
            // processes that load the same file (several nodes on one machine)
};
const char* WeightPlacementName(WeightPlacement placement);

struct LoadOptions {
  WeightPlacement weights = WeightPlacement::kAuto;
};

class Model {
 public:
  // Throws trinity::Error (naming the file and what is wrong) for anything it cannot load.
  static std::unique_ptr<Model> Load(const std::string& path, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const gguf::File& file() const { return *file_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const kernels::DenseView& token_embd() const { return token_embd_; }
  const kernels::DenseView& lm_head() const { return lm_head_; }  // == token_embd when tied
  // The LM head as the CPU's decode reads it: with WeightPlacement::kCopy a copy in 2 MiB pages,
  // made on the first call (~0.2 s for 2B-4T; thread-safe) and kept, the file's pages released;
  // else lm_head(). Not made at load: a process that only uses the 8-bit head (LmHeadQ8) or a
  // GPU never needs it. Same bytes as lm_head(), so the same logits.
  const kernels::DenseView& StreamedLmHead() const;
  // kCopy or kMapped: how this model's weights were placed (never kAuto).
  WeightPlacement weight_placement() const { return placement_; }
  const float* output_norm() const { return output_norm_; }
  // The LM head quantised to 8 bits, one scale per row (kernels::QuantizeRowQ8 of each dequantised
  // row): the optional --lm-head q8. Built on the first call (all cores, ~1 s for 2B-4T), then
  // kept; thread-safe. Half the bytes of an F16 head; the source rows' pages are released as they
  // are converted, so resident memory grows by the 8-bit copy only.
  const kernels::Q8View& LmHeadQ8() const;
  ChatFormat chat_format() const { return chat_format_; }

  // Bytes the weights occupy as read per generated token (ternary + norms + LM head; the embedding
  // row read is negligible unless untied).
  // With q8_lm_head: the 8-bit head of LmHeadQ8() (n_vocab x padded n_embd bytes + scales) instead.
  uint64_t WeightBytesPerToken(bool q8_lm_head = false) const;
  // Human-readable tensor-type histogram, e.g. "I2_S x210, F32 x121, F16 x1".
  std::string TensorTypeSummary() const;

 private:
  Model() = default;
  void LoadConfig();
  void LoadWeights();
  // With kCopy: n bytes of the weights copied into the arena (2 MiB pages), those of the file's
  // mapping released; the copy's address. With kMapped: data.
  const uint8_t* Place(const uint8_t* data, uint64_t n);
  TernaryWeight LoadTernary(const std::string& name, int64_t n_in, int64_t n_out);
  const float* LoadNorm(const std::string& name, int64_t n);
  kernels::DenseView LoadDense(const std::string& name, int64_t n_in, int64_t n_rows);

  std::unique_ptr<gguf::File> file_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<LayerWeights> layers_;
  kernels::DenseView token_embd_;
  kernels::DenseView lm_head_;
  const float* output_norm_ = nullptr;
  ChatFormat chat_format_ = ChatFormat::kRaw;
  std::vector<std::vector<float>> owned_floats_;  // norms converted from F16/BF16, or copied (kCopy)
  WeightPlacement placement_ = WeightPlacement::kMapped;
  HugePageArena arena_;  // the copied ternary weights (kCopy)
  mutable std::once_flag streamed_lm_head_once_;
  mutable HugePageBuffer streamed_lm_head_data_;
  mutable kernels::DenseView streamed_lm_head_;
  mutable std::once_flag lm_head_q8_once_;
  mutable HugePageBuffer lm_head_q8_data_;
  mutable std::vector<float> lm_head_q8_scales_;
  mutable kernels::Q8View lm_head_q8_;
};

}  // namespace trinity
