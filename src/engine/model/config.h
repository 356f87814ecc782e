// Model hyper-parameters, read from GGUF metadata and checked against tensor shapes.
#pragma once

#include <cstdint>
#include <string>

namespace trinity {

enum class FfnActivation { kRelu2, kSilu };
const char* FfnActivationName(FfnActivation activation);

struct ModelConfig {
  std::string architecture;  // bitnet-b1.58 | bitnet-25 | bitnet
  std::string name;          // general.name
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;   // context_length
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;      // n_embd / n_head
  int64_t n_rot = 0;         // rope.dimension_count (== head_dim)
  float rms_eps = 1e-5f;
  float rope_theta = 500000.0f;
  FfnActivation activation = FfnActivation::kRelu2;
  bool tied_embeddings = true;  // no output.weight: the LM head is token_embd

  int64_t n_embd_kv() const { return n_head_kv * head_dim; }
};

}  // namespace trinity
