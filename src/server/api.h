// The OpenAI-compatible JSON layer: request parsing with validation (every bad input becomes an
// ApiError with OpenAI's error shape and the right status) and response / chunk building.
// No HTTP and no engine calls here, so it can be fuzzed and tested on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat/chat.h"
#include "engine/sampler/sampler.h"

namespace trinity::server {

using nlohmann::json;

// An error a client gets: {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
  json ToJson() const;
};
[[noreturn]] void ThrowBadRequest(std::string message, std::string param = "", std::string code = "");

// Parses a request body; malformed JSON, invalid UTF-8 or a non-object -> ApiError 400.
json ParseBody(const std::string& body);

struct CompletionRequest {
  bool chat = false;
  std::vector<ChatMessage> messages;     // chat
  std::string prompt;                    // completions: text ...
  std::vector<int32_t> prompt_tokens;    // ... or token ids
  std::string model;                     // "" when absent
  std::optional<int32_t> max_tokens;
  std::vector<std::string> stop;
  SamplingParams sampling;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;  // llama.cpp extension
};

// Validates types and ranges of every supported parameter; unsupported ones that change the
// answer (n > 1, logprobs, tools, ...) are refused rather than silently ignored.
CompletionRequest ParseCompletionRequest(const json& body, bool chat);

// Sampling parameters of `body` over `defaults` (shared with the task route).
SamplingParams ParseSampling(const json& body, SamplingParams defaults);

// What a finished generation reports.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double prompt_ms = 0.0;
  double predicted_ms = 0.0;
};
json UsageJson(const Usage& usage);
json TimingsJson(const Usage& usage);  // llama.cpp's timings object

// Non-streaming responses.
json CompletionResponse(const CompletionRequest& request, const std::string& id, int64_t created,
                        const std::string& model, const std::string& text, const std::string& finish_reason,
                        const Usage& usage);
// One streaming chunk: `delta` for chat ({role} or {content} or {}), text for completions;
// finish_reason "" -> null.
json ChunkJson(const CompletionRequest& request, const std::string& id, int64_t created, const std::string& model,
               const json& delta_or_text, const std::string& finish_reason);
// "data: <json>\n\n"
std::string SseEvent(const json& value);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace trinity::server
