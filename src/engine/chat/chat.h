// Chat templates: turn a list of messages into the prompt text a model was trained on.
//
// The text carries special tokens inline ("<|eot_id|>"); encode it with parse_special = true.
// Templates are built in (no Jinja): the GGUF's tokenizer.chat_template only selects one.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace trinity {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatFormat {
  kBitnet,  // BitNet b1.58 2B-4T model card: "User: {msg}<|eot_id|>Assistant: "
  kLlama3,  // "<|start_header_id|>user<|end_header_id|>\n\n{msg}<|eot_id|>"
  kRaw,     // contents joined with "\n", no special tokens
};

// End of turn in kBitnet and kLlama3; generation in chat mode stops at this token.
inline constexpr std::string_view kEndOfTurnText = "<|eot_id|>";

// Picks the format from GGUF's tokenizer.chat_template: the official 2B-4T file stores a
// non-Jinja string with the marker "BITNET" -> kBitnet; a Llama 3 template
// ("<|start_header_id|>") -> kLlama3; no template -> kRaw (a base model); any other template ->
// kBitnet when the vocabulary has <|eot_id|>, else kRaw.
ChatFormat DetectChatFormat(std::string_view gguf_chat_template, bool has_eot_token = true);

// The prompt for `messages`; with add_generation_prompt it ends where the assistant's reply begins.
// Throws trinity::Error on a role other than system, user or assistant.
std::string ApplyChatTemplate(ChatFormat format, std::span<const ChatMessage> messages,
                              bool add_generation_prompt);

// The same prompt with the byte ranges of the message contents: encode it with
// Tokenizer::EncodeWithPlain(text, contents) so special-token text inside a message stays text
// (a user cannot close a turn or forge one with "<|eot_id|>Assistant: ...").
struct ChatPrompt {
  std::string text;
  std::vector<Tokenizer::Range> contents;
};
ChatPrompt RenderChatTemplate(ChatFormat format, std::span<const ChatMessage> messages, bool add_generation_prompt);

// Text of the token that ends an assistant turn ("" for kRaw: stop on EOS only).
std::string_view ChatStopText(ChatFormat format);

// "bitnet", "llama3", "raw" (for flags and logs); ParseChatFormat throws trinity::Error on others.
std::string_view ChatFormatName(ChatFormat format);
ChatFormat ParseChatFormat(std::string_view name);

}  // namespace trinity
