// The multi-task node: turns task requests into prompts, runs the engine and returns answers with
// their statistics. One Node serves one request at a time (it owns one Context); the scheduler
// that multiplexes requests over several nodes/slots lives above it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/chat/chat.h"
#include "engine/model/context.h"
#include "engine/model/model.h"
#include "engine/sampler/sampler.h"
#include "node/task.h"

namespace trinity::node {

struct TaskRequest {
  std::string task;                        // a TaskRegistry name
  std::string input;
  std::optional<int32_t> max_tokens;       // default: the task's
  std::optional<SamplingParams> sampling;  // default: NodeOptions::sampling
};

struct TaskResult {
  std::string task;
  std::string input;
  std::string output;  // the answer: generated text (trimmed), the label, or the word
  std::string label;   // label and first-word tasks: the answer; "" otherwise
  // Label tasks: softmax over the labels' log-likelihoods, in the task's label order.
  std::vector<std::pair<std::string, double>> probabilities;
  int64_t prompt_tokens = 0;
  // Tokens produced after the prompt: sampled tokens; for label tasks the tokens evaluated to
  // score the labels (every surface form of every label).
  int64_t generated_tokens = 0;
  double prompt_ms = 0.0;  // prefill
  double ttft_ms = 0.0;    // request start to first token (label tasks: to the answer)
  double total_ms = 0.0;   // request start to end, prompt building included
  double tok_per_s = 0.0;  // generated_tokens over the time after the prefill (llama.cpp's predicted/s)
  // Time spent outside the engine (templating, tokenizing, label arithmetic, result building):
  // the node's own cost, total_ms minus the time inside Generate()/Context::Eval().
  double node_ms = 0.0;
  std::string finish_reason;  // "stop" | "length"
};

enum class PromptMode {
  kAuto,  // chat template when the model has one (chat_format != raw and an <|eot_id|> token)
  kChat,
  kRaw,   // the task template as is, after BOS
};
PromptMode ParsePromptMode(std::string_view name);  // "auto" | "chat" | "raw"

struct NodeOptions {
  ContextOptions context;
  PromptMode prompt_mode = PromptMode::kAuto;
  // Label and first-word tasks generate free text like the seed's node (for comparison).
  bool free_text = false;
  SamplingParams sampling;  // for requests that carry none
};

class Node {
 public:
  Node(const Model& model, TaskRegistry tasks, NodeOptions options = {});

  // Throws trinity::Error for an unknown task, an empty input, bad max_tokens or sampling, or an
  // input whose prompt does not fit the context. `stopped`, when given, is asked after every
  // generated token: true ends the generation there (a server whose client went away).
  TaskResult Process(const TaskRequest& request, const std::function<bool()>& stopped = {});

  // The prompt for a task and input (chat template included), with the byte range of the
  // filled-in task template: special-token text there is the user's and stays plain text.
  ChatPrompt Prompt(const TaskSpec& spec, std::string_view input) const;
  // Its tokens (BOS included); text appended after the prompt (a label) is encoded normally.
  std::vector<int32_t> PromptTokens(const ChatPrompt& prompt) const;

  bool uses_chat() const { return chat_; }
  const TaskRegistry& tasks() const { return tasks_; }
  const NodeOptions& options() const { return options_; }
  const Model& model() const { return model_; }
  Context& context() { return context_; }

 private:
  // Sets every field but task, input, prompt_tokens, total_ms; `engine_ms` gets the time in Eval.
  TaskResult ScoreLabels(const TaskSpec& spec, const ChatPrompt& prompt_parts, const std::vector<int32_t>& prompt,
                         double& engine_ms);

  const Model& model_;
  TaskRegistry tasks_;
  NodeOptions options_;
  bool chat_ = false;
  Context context_;
  std::vector<float> logits_;      // scratch: (n_vocab) logits at the end of the shared prefix
  std::vector<float> all_logits_;  // scratch: (n_tokens, n_vocab) logits of a label's tokens
};

// Label scoring, exposed for tests: log P(label tokens | prefix) summed over tokens, from logits.
double LogSoftmaxAt(std::span<const float> logits, int32_t token);

}  // namespace trinity::node

namespace trinity::node {

// The first word of `text`: leading spaces, quotes and markup skipped, then letters, digits,
// '-', '\'' and non-ASCII characters up to the first other character. `complete` tells whether
// that other character was seen (more text could not extend the word).
std::string FirstWord(std::string_view text, bool* complete = nullptr);

}  // namespace trinity::node
