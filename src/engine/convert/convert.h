// Model conversion to Microsoft's I2_S GGUF (what `trinity convert` runs).
//
// The output is a file Microsoft's bitnet.cpp loads unchanged: architecture `bitnet-b1.58`, the
// metadata keys of Microsoft's ggml-model-i2_s.gguf in the same order and with the same value
// types, I2_S ternary tensors (type 36, 128-value blocks, one f32 scale per tensor), F32 norms and
// an F16 token embedding. Two keys are added, both harmless to bitnet.cpp:
//   - tokenizer.ggml.pre = "llama-bpe" right after tokenizer.ggml.model. Microsoft's file lacks it,
//     so llama.cpp-based loaders fall back to a default splitter that pre-tokenizes apostrophes,
//     hyphens and tabs differently from the Llama 3 tokenizer the model was trained with.
//   - trinity.ffn_activation, only when the FFN activation is not the architecture's squared ReLU
//     (e.g. "silu" for a llama.cpp `bitnet` file, since llama.cpp computes SiLU for it).
//     bitnet.cpp ignores this key and always computes relu^2.
//
// Tensor order: token_embd, output_norm, [output], then per block: attn_norm, attn_q, attn_k,
// attn_v, attn_sub_norm, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_sub_norm, ffn_down.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace trinity::convert {

struct ConvertOptions {
  std::string name;           // general.name; empty: the checkpoint directory's name / the source's name
  bool force = false;         // overwrite an existing output file
  // Type of token_embd.weight (and output.weight when untied): "f16" (default, as Microsoft),
  // "f32", "q8_0", "q6_k", or "keep" (GGUF input only: keep the source's F16/F32/Q8_0/Q6_K bytes).
  std::string embedding_type = "f16";
  // FFN activation of the result: "" takes it from the source (HF: config.json's hidden_act;
  // GGUF: trinity.ffn_activation, else SiLU for llama.cpp's `bitnet`, relu2 for Microsoft's
  // architectures). "relu2" or "silu" overrides (for a llama.cpp file that is really 2B-4T).
  std::string ffn_activation;
  std::function<void(std::string_view)> log;  // progress lines (may be empty)
};

// Hugging Face BitNet checkpoint directory (config.json, *.safetensors or a sharded
// model.safetensors.index.json, tokenizer.json, optional tokenizer_config.json) -> I2_S GGUF with
// the Llama 3 tokenizer.
//
// Linear weights: packed uint8 `weight` [out/4, in] with `weight_scale` (AutoBitLinear), or
// F32/F16/BF16 master weights [out, in] ternarised with s = mean|W|.
//
// Scale semantics. quantization_config.linear_class "autobitlinear" (microsoft/bitnet-b1.58-2B-4T)
// multiplies the output by weight_scale, so the I2_S scale is weight_scale. transformers' older
// BitLinear (linear_class "bitlinear", the default when quantization_config names none) divides by
// it, so the I2_S scale is 1 / weight_scale. A checkpoint without quantization_config is taken as
// AutoBitLinear (Microsoft's layout). The values themselves cannot tell the two apart, the config
// can: this is the only detection done. Master weights that are already ternary-valued (every
// non-zero |w| equal, e.g. a dequantised export) keep that value as the scale instead of
// mean|W|, so such exports convert exactly.
//
// Throws trinity::Error naming the file, the key or tensor and what was expected.
void ConvertHfToGguf(const std::string& hf_dir, const std::string& out_path, const ConvertOptions& options);

// A ternary GGUF -> I2_S GGUF. Inputs: llama.cpp's architecture `bitnet` with TQ2_0 / TQ1_0 (or
// F32/F16/BF16) linears and optional `blk.N.X.scale` tensors; Microsoft's `bitnet-b1.58` /
// `bitnet-25` (I2_S tensors are copied through; other ternary types are converted).
//
// TQ blocks carry one f16 scale each while I2_S has one per tensor: every block that holds a
// non-zero code must have the same scale (else an error names the tensor and the two scales);
// all-zero blocks are free. A `blk.N.X.scale` tensor multiplies into the I2_S scale.
// Hyper-parameters come from the source's metadata (bitnet.* -> bitnet-b1.58.*), tokenizer keys
// are copied (the source's chat template is kept; Microsoft's is written when there is none).
void ConvertGgufToI2S(const std::string& in_path, const std::string& out_path, const ConvertOptions& options);

// The tokenizer.chat_template Microsoft's converter writes for BitNet (utils/convert-ms-to-gguf-
// bitnet.py): not a usable template; runtimes recognise the "BITNET" marker and apply the model's
// own chat format.
extern const char* const kMicrosoftChatTemplate;

}  // namespace trinity::convert
