#include "engine/chat/chat.h"

#include "engine/common/error.h"

namespace trinity {

namespace {

constexpr std::string_view kBeginOfText = "<|begin_of_text|>";
constexpr std::string_view kWhitespace = " \t\n\r\f\v";

std::string_view Trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(kWhitespace);
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(kWhitespace);
  return s.substr(begin, end - begin + 1);
}

// The role as the BitNet format writes it; throws on roles no format knows.
std::string_view CapitalisedRole(std::string_view role) {
  if (role == "system") return "System";
  if (role == "user") return "User";
  if (role == "assistant") return "Assistant";
  Fail("chat: unknown message role \"{}\" (expected system, user or assistant)", role);
}

}  // namespace

ChatFormat DetectChatFormat(std::string_view gguf_chat_template, bool has_eot_token) {
  if (gguf_chat_template.find("BITNET") != std::string_view::npos) return ChatFormat::kBitnet;
  if (gguf_chat_template.find("<|start_header_id|>") != std::string_view::npos) {
    return ChatFormat::kLlama3;
  }
  // No template: a base model (such as the built-in trinity-tiny), prompted with raw text.
  if (gguf_chat_template.empty()) return ChatFormat::kRaw;
  // A template we cannot read: the model-card format when the model has an end-of-turn token.
  return has_eot_token ? ChatFormat::kBitnet : ChatFormat::kRaw;
}

std::string ApplyChatTemplate(ChatFormat format, std::span<const ChatMessage> messages,
                              bool add_generation_prompt) {
  return RenderChatTemplate(format, messages, add_generation_prompt).text;
}

ChatPrompt RenderChatTemplate(ChatFormat format, std::span<const ChatMessage> messages, bool add_generation_prompt) {
  ChatPrompt p;
  std::string& out = p.text;
  auto content = [&](std::string_view text) {
    p.contents.push_back({out.size(), out.size() + text.size()});
    out += text;
  };
  switch (format) {
    case ChatFormat::kBitnet:
      // "<|begin_of_text|>System: {sys}<|eot_id|>User: {msg}<|eot_id|>Assistant: "
      out += kBeginOfText;
      for (const ChatMessage& m : messages) {
        out += CapitalisedRole(m.role);
        out += ": ";
        content(Trim(m.content));
        out += kEndOfTurnText;
      }
      if (add_generation_prompt) out += "Assistant: ";
      break;
    case ChatFormat::kLlama3:
      // <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
      out += kBeginOfText;
      for (const ChatMessage& m : messages) {
        CapitalisedRole(m.role);  // validates
        out += "<|start_header_id|>";
        out += m.role;
        out += "<|end_header_id|>\n\n";
        content(Trim(m.content));
        out += kEndOfTurnText;
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::kRaw:
      for (size_t i = 0; i < messages.size(); ++i) {
        CapitalisedRole(messages[i].role);  // validates
        if (i > 0) out += '\n';
        content(messages[i].content);
      }
      break;
  }
  return p;
}

std::string_view ChatStopText(ChatFormat format) {
  return format == ChatFormat::kRaw ? std::string_view() : kEndOfTurnText;
}

std::string_view ChatFormatName(ChatFormat format) {
  switch (format) {
    case ChatFormat::kBitnet:
      return "bitnet";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kRaw:
      return "raw";
  }
  return "unknown";
}

ChatFormat ParseChatFormat(std::string_view name) {
  for (ChatFormat f : {ChatFormat::kBitnet, ChatFormat::kLlama3, ChatFormat::kRaw}) {
    if (name == ChatFormatName(f)) return f;
  }
  Fail("chat: unknown chat format \"{}\" (expected bitnet, llama3 or raw)", name);
}

}  // namespace trinity
