// Tokenizer::DataFromHFJson: reads a Hugging Face tokenizer.json (BPE model only).
//
// A SAX pass that keeps only model.type, model.vocab, model.merges and added_tokens: building
// nlohmann's DOM for the 9 MB Llama 3 file (a std::map of 128k entries) took several times longer.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/common/error.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_internal.h"

namespace trinity {
namespace {

using nlohmann::json;

struct AddedToken {
  int64_t id = -1;
  std::string content;
  bool special = false;
};

// What tokenizer.json holds that we use.
struct HFTokenizer {
  std::optional<std::string> model_type;
  bool has_model = false, has_vocab = false, has_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::string> merges;
  std::vector<AddedToken> added;
};

class Reader : public nlohmann::json_sax<json> {
 public:
  Reader(const std::string& path, HFTokenizer* out) : path_(path), out_(out) {}

  bool null() override { return Scalar(json()); }
  bool boolean(bool value) override { return Scalar(json(value)); }
  bool number_integer(number_integer_t value) override { return Scalar(json(value)); }
  bool number_unsigned(number_unsigned_t value) override { return Scalar(json(value)); }
  bool number_float(number_float_t value, const string_t&) override { return Scalar(json(value)); }
  bool string(string_t& value) override {
    const Where where = Top();
    if (where == Where::kMerges) {
      out_->merges.push_back(std::move(value));
    } else if (where == Where::kMergePair) {
      pair_.push_back(std::move(value));
    } else if (where == Where::kAddedToken && key() == "content") {
      token_.content = std::move(value);
    } else if (where == Where::kModel && key() == "type") {
      out_->model_type = std::move(value);
    } else {
      return Scalar(json(std::move(value)));
    }
    return true;
  }
  bool binary(binary_t&) override { return true; }

  bool start_object(std::size_t) override {
    const Where parent = Top();
    Where where = Where::kSkip;
    if (stack_.empty()) {
      where = Where::kRoot;
    } else if (parent == Where::kRoot && key() == "model") {
      where = Where::kModel;
      out_->has_model = true;
    } else if (parent == Where::kModel && key() == "vocab") {
      where = Where::kVocab;
      out_->has_vocab = true;
    } else if (parent == Where::kAdded) {
      where = Where::kAddedToken;
      token_ = AddedToken();
    } else if (parent == Where::kMerges) {
      Fail("{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", path_, out_->merges.size());
    } else if (parent == Where::kVocab) {
      Fail("{}: model.vocab[\"{}\"] is not an id", path_, key());
    }
    stack_.push_back({where, {}});
    return true;
  }
  bool key(string_t& value) override {
    stack_.back().key = std::move(value);
    return true;
  }
  bool end_object() override {
    if (Top() == Where::kAddedToken) {
      if (token_.id < 0) Fail("{}: added_tokens[{}] has no valid id", path_, out_->added.size());
      out_->added.push_back(std::move(token_));
    }
    stack_.pop_back();
    return true;
  }

  bool start_array(std::size_t) override {
    const Where parent = Top();
    Where where = Where::kSkip;
    if (parent == Where::kModel && key() == "merges") {
      where = Where::kMerges;
      out_->has_merges = true;
    } else if (parent == Where::kRoot && key() == "added_tokens") {
      where = Where::kAdded;
    } else if (parent == Where::kMerges) {
      where = Where::kMergePair;
      pair_.clear();
    } else if (parent == Where::kMergePair) {
      Fail("{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", path_, out_->merges.size());
    } else if (parent == Where::kVocab) {
      Fail("{}: model.vocab[\"{}\"] is not an id", path_, key());
    }
    stack_.push_back({where, {}});
    return true;
  }
  bool end_array() override {
    if (Top() == Where::kMergePair) {
      const size_t index = out_->merges.size();
      if (pair_.size() != 2) Fail("{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", path_, index);
      if (pair_[0].find(' ') != std::string::npos || pair_[1].find(' ') != std::string::npos) {
        Fail("{}: model.merges[{}] contains a space, which byte-level BPE tokens never do", path_, index);
      }
      out_->merges.push_back(pair_[0] + " " + pair_[1]);
    }
    stack_.pop_back();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    Fail("{}: not valid JSON: {}", path_, e.what());
  }

 private:
  enum class Where { kRoot, kModel, kVocab, kMerges, kMergePair, kAdded, kAddedToken, kSkip };
  struct Frame {
    Where where;
    std::string key;  // the current key, in objects
  };

  Where Top() const { return stack_.empty() ? Where::kSkip : stack_.back().where; }
  const std::string& key() const { return stack_.back().key; }

  bool Scalar(const json& value) {
    switch (Top()) {
      case Where::kVocab:
        if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= INT32_MAX) {
          Fail("{}: model.vocab[\"{}\"] = {} is not a valid id", path_, key(), value.dump());
        }
        out_->vocab.emplace_back(key(), value.get<int64_t>());
        break;
      case Where::kAddedToken:
        if (key() == "id") {
          if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= INT32_MAX) {
            Fail("{}: added_tokens[{}].id = {} is not a valid id", path_, out_->added.size(), value.dump());
          }
          token_.id = value.get<int64_t>();
        } else if (key() == "special") {
          token_.special = value.is_boolean() && value.get<bool>();
        }
        break;
      case Where::kMerges:
      case Where::kMergePair:
        Fail("{}: model.merges[{}] = {} is neither \"a b\" nor [\"a\", \"b\"]", path_, out_->merges.size(),
             value.dump());
      case Where::kModel:
        if (key() == "type") Fail("{}: model.type = {} is not supported: only BPE is", path_, value.dump());
        break;
      default:
        break;
    }
    return true;
  }

  const std::string& path_;
  HFTokenizer* out_;
  std::vector<Frame> stack_;
  std::vector<std::string> pair_;  // strings of the merge pair being read
  AddedToken token_;               // the added token being read
};

}  // namespace

TokenizerData Tokenizer::DataFromHFJson(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) Fail("{}: cannot open tokenizer.json", path);
  const std::string text((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) Fail("{}: read error", path);

  HFTokenizer hf;
  Reader reader(path, &hf);
  json::sax_parse(text, &reader);
  if (!hf.has_model) Fail("{}: no \"model\" object: not a tokenizer.json", path);
  if (hf.model_type && *hf.model_type != "BPE") {
    Fail("{}: model.type = \"{}\" is not supported: only byte-level BPE is", path, *hf.model_type);
  }
  if (!hf.has_vocab) Fail("{}: model.vocab is missing", path);
  if (!hf.has_merges) Fail("{}: model.merges is missing (BPE needs merges)", path);

  // Ids may come from either list; size the vocabulary by the largest. Ids nobody names stay
  // empty and unused: they are never produced and decode to nothing.
  int64_t max_id = -1;
  for (const auto& [text, id] : hf.vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : hf.added) max_id = std::max(max_id, token.id);
  if (max_id < 0) Fail("{}: model.vocab is empty", path);

  TokenizerData data;
  data.model = "gpt2";
  data.pre = "llama-bpe";
  data.tokens.assign(max_id + 1, std::string());
  data.token_types.assign(max_id + 1, static_cast<int32_t>(TokenType::kUnused));
  for (auto& [text, id] : hf.vocab) {
    data.tokens[id] = std::move(text);
    data.token_types[id] = static_cast<int32_t>(TokenType::kNormal);
  }
  for (AddedToken& token : hf.added) {
    data.tokens[token.id] = std::move(token.content);
    data.token_types[token.id] = static_cast<int32_t>(token.special ? TokenType::kControl : TokenType::kUserDefined);
  }
  data.merges = std::move(hf.merges);

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
