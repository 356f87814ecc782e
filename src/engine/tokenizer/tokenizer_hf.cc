// Tokenizer::DataFromHFJson: reads a Hugging Face tokenizer.json (BPE model only).
#include <cstdint>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/common/error.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_internal.h"

namespace trinity {

TokenizerData Tokenizer::DataFromHFJson(const std::string& path) {
  using nlohmann::json;
  std::ifstream stream(path, std::ios::binary);
  if (!stream) Fail("{}: cannot open tokenizer.json", path);
  // Parsing from memory is several times faster than from the stream.
  const std::string text((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) Fail("{}: read error", path);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    Fail("{}: not valid JSON: {}", path, e.what());
  }

  TokenizerData data;
  data.model = "gpt2";
  data.pre = "llama-bpe";
  try {
    const json& model = root.at("model");
    if (const auto type = model.find("type"); type != model.end() && *type != "BPE") {
      Fail("{}: model.type = {} is not supported: only byte-level BPE is", path, type->dump());
    }
    const json& vocab = model.at("vocab");
    const json empty = json::array();
    const auto added_it = root.find("added_tokens");
    const json& added = added_it != root.end() && !added_it->is_null() ? *added_it : empty;

    // Ids may come from either list; size the vocabulary by the largest.
    int64_t max_id = -1;
    for (const auto& [text, id] : vocab.items()) {
      const int64_t value = id.get<int64_t>();
      if (value < 0 || value >= INT32_MAX) Fail("{}: model.vocab[\"{}\"] = {} is not a valid id", path, text, value);
      max_id = std::max(max_id, value);
    }
    for (size_t i = 0; i < added.size(); ++i) {
      const int64_t value = added[i].at("id").get<int64_t>();
      if (value < 0 || value >= INT32_MAX) Fail("{}: added_tokens[{}].id = {} is not a valid id", path, i, value);
      max_id = std::max(max_id, value);
    }
    if (max_id < 0) Fail("{}: model.vocab is empty", path);
    // Ids nobody names stay empty and unused: they are never produced and decode to nothing.
    data.tokens.assign(max_id + 1, std::string());
    data.token_types.assign(max_id + 1, static_cast<int32_t>(TokenType::kUnused));
    for (const auto& [text, id] : vocab.items()) {
      data.tokens[id.get<int64_t>()] = text;
      data.token_types[id.get<int64_t>()] = static_cast<int32_t>(TokenType::kNormal);
    }
    for (const json& token : added) {
      const int64_t id = token.at("id").get<int64_t>();
      data.tokens[id] = token.at("content").get<std::string>();
      const bool special = token.value("special", false);
      data.token_types[id] = static_cast<int32_t>(special ? TokenType::kControl : TokenType::kUserDefined);
    }

    const json& merges = model.at("merges");
    data.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& merge = merges[i];
      if (merge.is_string()) {
        data.merges.push_back(merge.get<std::string>());
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        const std::string left = merge[0].get<std::string>(), right = merge[1].get<std::string>();
        if (left.find(' ') != std::string::npos || right.find(' ') != std::string::npos) {
          Fail("{}: model.merges[{}] contains a space, which byte-level BPE tokens never do", path, i);
        }
        data.merges.push_back(left + " " + right);
      } else {
        Fail("{}: model.merges[{}] = {} is neither \"a b\" nor [\"a\", \"b\"]", path, i, merge.dump());
      }
    }
  } catch (const json::exception& e) {
    Fail("{}: unexpected tokenizer.json structure: {}", path, e.what());
  }

  for (size_t i = 0; i < data.tokens.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (data.tokens[i] == "<|begin_of_text|>") data.bos_id = id;
    if (data.tokens[i] == "<|end_of_text|>") data.eos_id = id;
    if (data.tokens[i] == "<|eot_id|>") data.eot_id = id;
  }
  try {
    ValidateTokenizerData(data);
  } catch (const Error& e) {
    Fail("{}: {}", path, e.what());
  }
  return data;
}

}  // namespace trinity
