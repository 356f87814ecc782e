#include "server/api.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace trinity::server {

namespace {

bool Has(const json& body, const char* key) { return body.contains(key) && !body.at(key).is_null(); }

[[noreturn]] void WrongType(const std::string& key, const char* expected) {
  ThrowBadRequest(fmt::format("'{}' must be {}", key, expected), key);
}

double GetNumber(const json& body, const char* key, double lo, double hi) {
  const json& v = body.at(key);
  if (!v.is_number()) WrongType(key, "a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    ThrowBadRequest(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, x), key);
  }
  return x;
}

int64_t GetInteger(const json& body, const char* key) {
  const json& v = body.at(key);
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::numeric_limits<int64_t>::max();
    }
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {  // 16.0 is fine, 16.5 is not
    const double x = v.get<double>();
    if (std::isfinite(x) && x == std::floor(x) && std::abs(x) < 9e18) return static_cast<int64_t>(x);
  }
  WrongType(key, "an integer");
}

bool GetBool(const json& body, const char* key) {
  const json& v = body.at(key);
  if (!v.is_boolean()) WrongType(key, "a boolean");
  return v.get<bool>();
}

[[noreturn]] void Unsupported(const std::string& key, const std::string& what) {
  ThrowBadRequest(fmt::format("'{}': {} is not supported by this server", key, what), key, "unsupported_parameter");
}

std::string MessageContent(const json& content, size_t index) {
  const std::string param = fmt::format("messages[{}].content", index);
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) WrongType(param, "a string or an array of content parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      WrongType(param, "an array of content parts ({\"type\": \"text\", \"text\": ...})");
    }
    if (part["type"] != "text") Unsupported(param, fmt::format("content part type \"{}\"", part["type"].get<std::string>()));
    if (!part.contains("text") || !part["text"].is_string()) WrongType(param + ".text", "a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace

json ApiError::ToJson() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

void ThrowBadRequest(std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  throw e;
}

json ParseBody(const std::string& body) {
  json value;
  try {
    value = json::parse(body);
  } catch (const json::exception& e) {
    // parse_error for malformed text and invalid UTF-8 in strings, out_of_range for numbers that
    // overflow a double (1e999).
    // The parser's message quotes the offending bytes, which may be invalid UTF-8 themselves.
    std::string what = e.what();
    for (char& c : what) {
      if (static_cast<unsigned char>(c) >= 0x80 || static_cast<unsigned char>(c) < 0x20) c = '?';
    }
    ThrowBadRequest(fmt::format("the request body is not valid JSON (UTF-8): {}", what), "", "invalid_json");
  }
  if (!value.is_object()) ThrowBadRequest("the request body must be a JSON object", "", "invalid_json");
  return value;
}

SamplingParams ParseSampling(const json& body, SamplingParams p) {
  if (Has(body, "temperature")) p.temperature = static_cast<float>(GetNumber(body, "temperature", 0.0, 2.0));
  if (Has(body, "top_p")) {
    p.top_p = static_cast<float>(GetNumber(body, "top_p", 0.0, 1.0));
    if (p.top_p <= 0.0f) ThrowBadRequest("'top_p' must be greater than 0", "top_p");
  }
  if (Has(body, "top_k")) {
    const int64_t k = GetInteger(body, "top_k");
    if (k < 0 || k > std::numeric_limits<int32_t>::max()) ThrowBadRequest("'top_k' must be >= 0", "top_k");
    p.top_k = static_cast<int32_t>(k);
  }
  if (Has(body, "min_p")) p.min_p = static_cast<float>(GetNumber(body, "min_p", 0.0, 1.0));
  if (Has(body, "presence_penalty")) {
    p.presence_penalty = static_cast<float>(GetNumber(body, "presence_penalty", -2.0, 2.0));
  }
  if (Has(body, "frequency_penalty")) {
    p.frequency_penalty = static_cast<float>(GetNumber(body, "frequency_penalty", -2.0, 2.0));
  }
  if (Has(body, "repeat_penalty")) {
    p.repeat_penalty = static_cast<float>(GetNumber(body, "repeat_penalty", 0.0, 10.0));
    if (p.repeat_penalty <= 0.0f) ThrowBadRequest("'repeat_penalty' must be greater than 0", "repeat_penalty");
  }
  if (Has(body, "seed")) p.seed = static_cast<uint64_t>(GetInteger(body, "seed"));
  if (Has(body, "logit_bias")) {
    const json& bias = body["logit_bias"];
    if (!bias.is_object()) WrongType("logit_bias", "an object of token id -> bias");
    for (const auto& [key, value] : bias.items()) {
      int32_t id = -1;
      try {
        size_t used = 0;
        const long long parsed = std::stoll(key, &used);
        if (used == key.size() && parsed >= 0 && parsed <= std::numeric_limits<int32_t>::max()) {
          id = static_cast<int32_t>(parsed);
        }
      } catch (const std::exception&) {
      }
      if (id < 0) ThrowBadRequest(fmt::format("'logit_bias' key \"{}\" is not a token id", key), "logit_bias");
      if (!value.is_number() || !std::isfinite(value.get<double>()) || std::abs(value.get<double>()) > 100.0) {
        ThrowBadRequest("'logit_bias' values must be numbers between -100 and 100", "logit_bias");
      }
      p.logit_bias[id] = value.get<float>();
    }
  }
  return p;
}

CompletionRequest ParseCompletionRequest(const json& body, bool chat) {
  CompletionRequest r;
  r.chat = chat;
  if (Has(body, "model")) {
    if (!body["model"].is_string()) WrongType("model", "a string");
    r.model = body["model"].get<std::string>();
  }
  if (chat) {
    if (!Has(body, "messages")) ThrowBadRequest("'messages' is required", "messages");
    const json& messages = body["messages"];
    if (!messages.is_array() || messages.empty()) WrongType("messages", "a non-empty array");
    for (size_t i = 0; i < messages.size(); ++i) {
      const json& m = messages[i];
      if (!m.is_object()) WrongType(fmt::format("messages[{}]", i), "an object");
      if (!m.contains("role") || !m["role"].is_string()) WrongType(fmt::format("messages[{}].role", i), "a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant") {
        ThrowBadRequest(fmt::format("messages[{}].role \"{}\" is not supported (system, user, assistant)", i, role),
                        fmt::format("messages[{}].role", i));
      }
      r.messages.push_back({role, MessageContent(m.contains("content") ? m["content"] : json(nullptr), i)});
    }
  } else {
    if (!Has(body, "prompt")) ThrowBadRequest("'prompt' is required", "prompt");
    const json& prompt = body["prompt"];
    if (prompt.is_string()) {
      r.prompt = prompt.get<std::string>();
    } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
      r.prompt = prompt[0].get<std::string>();
    } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
      for (const json& t : prompt) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          WrongType("prompt", "a string or an array of token ids");
        }
        r.prompt_tokens.push_back(t.get<int32_t>());
      }
    } else if (prompt.is_array() && prompt.size() > 1) {
      Unsupported("prompt", "more than one prompt per request");
    } else {
      WrongType("prompt", "a string or an array of token ids");
    }
    if (r.prompt.empty() && r.prompt_tokens.empty()) ThrowBadRequest("'prompt' is empty", "prompt");
    if (Has(body, "echo") && GetBool(body, "echo")) Unsupported("echo", "echo");
    if (Has(body, "suffix")) Unsupported("suffix", "suffix");
    if (Has(body, "best_of") && GetInteger(body, "best_of") != 1) Unsupported("best_of", "best_of other than 1");
  }
  for (const char* key : {"max_tokens", "max_completion_tokens", "n_predict"}) {
    if (!Has(body, key)) continue;
    const int64_t n = GetInteger(body, key);
    if (n < 1) ThrowBadRequest(fmt::format("'{}' must be at least 1, got {}", key, n), key);
    r.max_tokens = static_cast<int32_t>(std::min<int64_t>(n, std::numeric_limits<int32_t>::max()));
  }
  if (Has(body, "stop")) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      r.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 16) {
      for (const json& s : stop) {
        if (!s.is_string()) WrongType("stop", "a string or an array of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      WrongType("stop", "a string or an array of up to 16 strings");
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) ThrowBadRequest("'stop' strings must not be empty", "stop");
    }
  }
  if (Has(body, "n") && GetInteger(body, "n") != 1) Unsupported("n", "n other than 1");
  if (Has(body, "logprobs")) {
    const json& lp = body["logprobs"];
    if (!(lp.is_boolean() && !lp.get<bool>()) && !(lp.is_number_integer() && lp.get<int64_t>() == 0)) {
      Unsupported("logprobs", "logprobs");
    }
  }
  if (Has(body, "top_logprobs") && GetInteger(body, "top_logprobs") != 0) Unsupported("top_logprobs", "top_logprobs");
  for (const char* key : {"tools", "functions"}) {
    if (Has(body, key) && !(body[key].is_array() && body[key].empty())) Unsupported(key, "tool calling");
  }
  if (Has(body, "response_format")) {
    const json& f = body["response_format"];
    if (!f.is_object() || !f.contains("type") || f["type"] != "text") Unsupported("response_format", "response_format other than text");
  }
  if (Has(body, "stream")) r.stream = GetBool(body, "stream");
  if (Has(body, "stream_options")) {
    const json& o = body["stream_options"];
    if (!o.is_object()) WrongType("stream_options", "an object");
    if (!r.stream) ThrowBadRequest("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (Has(o, "include_usage")) {
      if (!o["include_usage"].is_boolean()) WrongType("stream_options.include_usage", "a boolean");
      r.include_usage = o["include_usage"].get<bool>();
    }
  }
  if (Has(body, "ignore_eos")) r.ignore_eos = GetBool(body, "ignore_eos");
  return r;
}

json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json TimingsJson(const Usage& u) {
  const double prompt_per_second = u.prompt_ms > 0.0 ? 1000.0 * static_cast<double>(u.prompt_tokens) / u.prompt_ms : 0.0;
  const double per_token_ms = u.completion_tokens > 0 ? u.predicted_ms / static_cast<double>(u.completion_tokens) : 0.0;
  const double per_second =
      u.predicted_ms > 0.0 ? 1000.0 * static_cast<double>(u.completion_tokens) / u.predicted_ms : 0.0;
  return {{"prompt_n", u.prompt_tokens},           {"prompt_ms", u.prompt_ms},
          {"prompt_per_second", prompt_per_second}, {"predicted_n", u.completion_tokens},
          {"predicted_ms", u.predicted_ms},         {"predicted_per_token_ms", per_token_ms},
          {"predicted_per_second", per_second}};
}

json CompletionResponse(const CompletionRequest& request, const std::string& id, int64_t created,
                        const std::string& model, const std::string& text, const std::string& finish_reason,
                        const Usage& usage) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (request.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", request.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})},
          {"usage", UsageJson(usage)},
          {"timings", TimingsJson(usage)}};
}

json ChunkJson(const CompletionRequest& request, const std::string& id, int64_t created, const std::string& model,
               const json& delta_or_text, const std::string& finish_reason) {
  json choice = {{"index", 0},
                 {"logprobs", nullptr},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  choice[request.chat ? "delta" : "text"] = delta_or_text;
  json chunk = {{"id", id},
                {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})}};
  if (request.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::string SseEvent(const json& value) {
  // Invalid UTF-8 cannot reach here (the stream decoder emits whole characters or U+FFFD), but
  // replace rather than throw if it ever does.
  return "data: " + value.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace trinity::server
