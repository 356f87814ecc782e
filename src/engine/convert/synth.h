// Random-weight BitNet b1.58 models in Microsoft's exact I2_S format with the real Llama 3
// tokenizer: what tests and benchmarks run on, and how users try their hardware before
// downloading 1.1 GB.
#pragma once

#include <cstdint>
#include <string>

namespace trinity::convert {

struct SynthOptions {
  std::string shape = "tiny";  // "tiny" (256 hidden, 4 layers, 4 heads, 2 KV heads, FFN 768) | "2b-4t"
  uint64_t seed = 1;
  std::string tokenizer_json;  // empty: the project's data/llama3/tokenizer.json
  bool force = false;          // overwrite an existing file
};

// Writes the model. Deterministic: the same options give the same bytes on every machine.
void WriteSyntheticModel(const std::string& out_path, const SynthOptions& options);

}  // namespace trinity::convert
