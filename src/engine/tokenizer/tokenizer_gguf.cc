// Tokenizer::DataFromGGUF: reads tokenizer.ggml.* (kept apart so that users of the tokenizer who
// never read GGUF do not pull in the reader).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_internal.h"

namespace trinity {
namespace {

// An optional token id; a negative value means "none". Out-of-range ids are left to validation.
int32_t FindId(const gguf::File& file, const char* key) {
  const std::optional<int64_t> value = file.FindInt(key);
  if (!value || *value < 0) return -1;
  if (*value > INT32_MAX) Fail("{}: {} = {} is outside the vocabulary", file.path(), key, *value);
  return static_cast<int32_t>(*value);
}

}  // namespace

TokenizerData Tokenizer::DataFromGGUF(const gguf::File& file) {
  TokenizerData data;
  const std::optional<std::string> model = file.FindString("tokenizer.ggml.model");
  if (!model) Fail("{}: tokenizer.ggml.model is missing", file.path());
  if (*model != "gpt2") {
    Fail("{}: tokenizer.ggml.model = \"{}\" is not supported: only byte-level BPE (\"gpt2\") is", file.path(),
         *model);
  }
  data.model = *model;
  data.pre = file.FindString("tokenizer.ggml.pre").value_or("");
  if (!file.Find("tokenizer.ggml.tokens")) Fail("{}: tokenizer.ggml.tokens is missing", file.path());
  data.tokens = file.GetStringArray("tokenizer.ggml.tokens");
  if (file.Find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t>& types = file.GetIntArray("tokenizer.ggml.token_type");
    data.token_types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > static_cast<int64_t>(TokenType::kByte)) {
        Fail("{}: tokenizer.ggml.token_type[{}] = {} is not a token type (0..6)", file.path(), i, types[i]);
      }
      data.token_types.push_back(static_cast<int32_t>(types[i]));
    }
  } else {
    data.token_types.assign(data.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  }
  if (file.Find("tokenizer.ggml.scores")) {
    const std::vector<double>& scores = file.GetFloatArray("tokenizer.ggml.scores");
    data.scores.assign(scores.begin(), scores.end());
  }
  if (!file.Find("tokenizer.ggml.merges")) Fail("{}: tokenizer.ggml.merges is missing (BPE needs merges)", file.path());
  data.merges = file.GetStringArray("tokenizer.ggml.merges");
  data.bos_id = FindId(file, "tokenizer.ggml.bos_token_id");
  data.eos_id = FindId(file, "tokenizer.ggml.eos_token_id");
  data.pad_id = FindId(file, "tokenizer.ggml.padding_token_id");
  data.eot_id = FindId(file, "tokenizer.ggml.eot_token_id");
  if (data.eot_id < 0) {
    for (size_t i = 0; i < data.tokens.size(); ++i) {
      if (data.tokens[i] == "<|eot_id|>") {
        data.eot_id = static_cast<int32_t>(i);
        break;
      }
    }
  }
  data.add_bos = file.FindBool("tokenizer.ggml.add_bos_token").value_or(true);
  try {
    ValidateTokenizerData(data);
  } catch (const Error& e) {
    Fail("{}: {}", file.path(), e.what());
  }
  return data;
}

}  // namespace trinity
