#include "node/node.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "engine/chat/chat.h"
#include "engine/common/error.h"
#include "engine/model/generate.h"

namespace trinity::node {

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool IsWordByte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '\'' ||
         c >= 0x80;
}

std::string Capitalised(std::string_view s) {
  std::string out(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

double LogSumExp(const std::vector<double>& xs) {
  double top = -std::numeric_limits<double>::infinity();
  for (double x : xs) top = std::max(top, x);
  if (!std::isfinite(top)) return top;
  double sum = 0.0;
  for (double x : xs) sum += std::exp(x - top);
  return top + std::log(sum);
}

}  // namespace

PromptMode ParsePromptMode(std::string_view name) {
  if (name == "auto") return PromptMode::kAuto;
  if (name == "chat") return PromptMode::kChat;
  if (name == "raw") return PromptMode::kRaw;
  Fail("unknown prompt mode \"{}\" (expected auto, chat or raw)", name);
}

std::string FirstWord(std::string_view text, bool* complete) {
  size_t begin = 0;
  // A leading '-' or '\'' is markup ("- Bitcoin", "'Paris'"), not part of the word.
  while (begin < text.size() && (!IsWordByte(static_cast<unsigned char>(text[begin])) || text[begin] == '-' ||
                                 text[begin] == '\'')) {
    ++begin;
  }
  size_t end = begin;
  while (end < text.size() && IsWordByte(static_cast<unsigned char>(text[end]))) ++end;
  if (complete != nullptr) *complete = end > begin && end < text.size();
  while (end > begin && (text[end - 1] == '-' || text[end - 1] == '\'')) --end;
  return std::string(text.substr(begin, end - begin));
}

double LogSoftmaxAt(std::span<const float> logits, int32_t token) {
  float top = -std::numeric_limits<float>::infinity();
  for (float x : logits) top = std::max(top, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - top);
  return static_cast<double>(logits[static_cast<size_t>(token)]) - top - std::log(sum);
}

Node::Node(const Model& model, TaskRegistry tasks, NodeOptions options)
    : model_(model), tasks_(std::move(tasks)), options_(std::move(options)), context_(model, options_.context) {
  const bool model_chat = model.chat_format() != ChatFormat::kRaw && model.tokenizer().data().eot_id >= 0;
  switch (options_.prompt_mode) {
    case PromptMode::kAuto:
      chat_ = model_chat;
      break;
    case PromptMode::kChat:
      if (model.chat_format() == ChatFormat::kRaw) Fail("the model has no chat template (use the raw prompt mode)");
      chat_ = true;
      break;
    case PromptMode::kRaw:
      chat_ = false;
      break;
  }
}

ChatPrompt Node::Prompt(const TaskSpec& spec, std::string_view input) const {
  std::string task_prompt = FillTemplate(spec, input);
  if (chat_) {
    const ChatMessage messages[] = {{"user", std::move(task_prompt)}};
    return RenderChatTemplate(model_.chat_format(), messages, /*add_generation_prompt=*/true);
  }
  ChatPrompt p;
  p.contents.push_back({0, task_prompt.size()});
  p.text = std::move(task_prompt);
  return p;
}

std::vector<int32_t> Node::PromptTokens(const ChatPrompt& prompt) const {
  const Tokenizer& tokenizer = model_.tokenizer();
  if (chat_) return tokenizer.EncodeWithPlain(prompt.text, prompt.contents);  // the template has BOS
  std::vector<int32_t> tokens;
  const TokenizerData& data = tokenizer.data();
  if (data.add_bos && data.bos_id >= 0) tokens.push_back(data.bos_id);
  const std::vector<int32_t> text = tokenizer.Encode(prompt.text, /*parse_special=*/false);
  tokens.insert(tokens.end(), text.begin(), text.end());
  return tokens;
}

TaskResult Node::Process(const TaskRequest& request, const std::function<bool()>& stopped) {
  const auto start = Clock::now();
  const TaskSpec& spec = tasks_.Get(request.task);
  if (TrimView(request.input).empty()) Fail("the input of the {} request is empty", spec.name);
  const int32_t max_tokens = request.max_tokens.value_or(spec.default_max_tokens);
  if (max_tokens < 1) Fail("max_tokens must be at least 1, got {}", max_tokens);
  const SamplingParams& sampling = request.sampling ? *request.sampling : options_.sampling;
  Validate(sampling);

  const ChatPrompt prompt_parts = Prompt(spec, request.input);
  const std::vector<int32_t> prompt = PromptTokens(prompt_parts);
  if (static_cast<int64_t>(prompt.size()) >= context_.n_ctx()) {
    Fail("the input is too long: the {} prompt is {} tokens and the context holds {}", spec.name, prompt.size(),
         context_.n_ctx());
  }

  TaskResult result;
  double engine_ms = 0.0;
  if (spec.answer == AnswerKind::kLabel && !options_.free_text) {
    result = ScoreLabels(spec, prompt_parts, prompt, engine_ms);
  } else {
    const bool first_word = spec.answer == AnswerKind::kFirstWord && !options_.free_text;
    GenerateOptions generate;
    generate.max_tokens = max_tokens;
    generate.stop = spec.stop;
    generate.stop_at_eog = true;
    std::string seen;
    if (first_word) {
      // Constrained by stopping: generation ends as soon as the first word is complete, so a
      // one-word answer costs the tokens of one word.
      generate.on_text = [&seen, &stopped](std::string_view piece) {
        seen += piece;
        bool complete = false;
        FirstWord(seen, &complete);
        return !complete && !(stopped && stopped());
      };
    } else if (stopped) {
      generate.on_text = [&stopped](std::string_view) { return !stopped(); };
    }
    // Engine time: the sampler's whole life (its scratch is freed at the end; that alone takes
    // ~0.25 ms) and Generate().
    const double before_ms = MsSince(start);
    GenerateResult g;
    {
      Sampler sampler(sampling);
      context_.Reset();
      g = Generate(context_, sampler, prompt, generate);
    }
    engine_ms = MsSince(start) - before_ms;
    result.prompt_ms = g.prompt_ms;
    result.ttft_ms = before_ms + g.ttft_ms;
    result.generated_tokens = g.n_generated();
    result.tok_per_s = g.tokens_per_second();
    result.finish_reason = FinishReasonName(g.finish_reason);
    if (first_word) {
      result.output = FirstWord(g.text);
      result.label = result.output;
    } else {
      result.output = std::string(TrimView(g.text));
    }
  }
  result.task = spec.name;
  result.input = request.input;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.total_ms = MsSince(start);
  result.node_ms = std::max(0.0, result.total_ms - engine_ms);
  if (spec.answer == AnswerKind::kLabel && !options_.free_text) result.ttft_ms = result.total_ms;
  return result;
}

// Scores every label after one prefill. Each label is continued in two surface forms, as written
// and Capitalised ("positive", "Positive": instruction-tuned models answer "Negative."), after a
// space when the prompt ends in ':' (the templates do). The prompt and prompt+label are tokenized
// together, because BPE may merge across the boundary (the chat prompt ends "Assistant: " and
// " Positive" is one token); the shared token prefix is evaluated once, and each label continues
// from it: Truncate back to the prefix, evaluate the label's tokens. A label's log-likelihood is
// log sum over its forms of P(form | prefix); softmax over labels gives the probabilities.
TaskResult Node::ScoreLabels(const TaskSpec& spec, const ChatPrompt& prompt_parts,
                             const std::vector<int32_t>& prompt, double& engine_ms) {
  const std::string& prompt_text = prompt_parts.text;
  const std::string separator = !prompt_text.empty() && IsSpace(prompt_text.back()) ? "" : " ";
  struct Form {
    size_t label;
    std::vector<int32_t> tokens;  // prompt + form, tokenized together
  };
  std::vector<Form> forms;
  for (size_t i = 0; i < spec.labels.size(); ++i) {
    const std::string label(TrimView(spec.labels[i]));
    for (const std::string& text : {label, Capitalised(label)}) {
      ChatPrompt form = prompt_parts;
      form.text += separator;
      form.text += text;
      std::vector<int32_t> tokens = PromptTokens(form);
      bool duplicate = false;
      for (const Form& f : forms) duplicate |= f.label == i && f.tokens == tokens;
      if (!duplicate) forms.push_back({i, std::move(tokens)});
    }
  }
  // The shared prefix: what every form has in common with the prompt, leaving each form at least
  // one token to score.
  size_t prefix = prompt.size();
  for (const Form& f : forms) {
    size_t common = 0;
    while (common < prompt.size() && common < f.tokens.size() && prompt[common] == f.tokens[common]) ++common;
    prefix = std::min({prefix, common, f.tokens.size() - 1});
    if (static_cast<int64_t>(f.tokens.size()) > context_.n_ctx()) {
      Fail("the input is too long: the {} prompt and its labels are {} tokens and the context holds {}",
           spec.name, f.tokens.size(), context_.n_ctx());
    }
  }
  if (prefix == 0) Fail("cannot score the labels of task {}: the prompt shares no tokens with them", spec.name);

  TaskResult result;
  const auto start = Clock::now();
  context_.Reset();
  const std::span<const float> last = context_.Eval(std::span<const int32_t>(prompt.data(), prefix));
  logits_.assign(last.begin(), last.end());
  result.prompt_ms = MsSince(start);
  engine_ms = result.prompt_ms;

  const size_t n_vocab = logits_.size();
  std::vector<std::vector<double>> form_scores(spec.labels.size());
  int64_t scored = 0;
  for (const Form& f : forms) {
    context_.Truncate(static_cast<int64_t>(prefix));
    const std::span<const int32_t> tail(f.tokens.data() + prefix, f.tokens.size() - prefix);
    double log_likelihood = LogSoftmaxAt(logits_, tail[0]);
    if (tail.size() > 1) {
      const auto eval_start = Clock::now();
      context_.Eval(tail.first(tail.size() - 1), &all_logits_);
      engine_ms += MsSince(eval_start);
      for (size_t j = 1; j < tail.size(); ++j) {
        log_likelihood += LogSoftmaxAt(std::span<const float>(all_logits_.data() + (j - 1) * n_vocab, n_vocab), tail[j]);
      }
    }
    scored += static_cast<int64_t>(tail.size());
    form_scores[f.label].push_back(log_likelihood);
  }
  std::vector<double> scores;
  for (const auto& s : form_scores) scores.push_back(LogSumExp(s));
  const double norm = LogSumExp(scores);
  size_t best = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    result.probabilities.emplace_back(spec.labels[i], std::exp(scores[i] - norm));
    if (scores[i] > scores[best]) best = i;
  }
  result.label = spec.labels[best];
  result.output = result.label;
  result.generated_tokens = scored;
  const double scoring_ms = MsSince(start) - result.prompt_ms;
  result.tok_per_s = scoring_ms > 0.0 ? static_cast<double>(scored) * 1000.0 / scoring_ms : 0.0;
  result.finish_reason = "stop";
  return result;
}

}  // namespace trinity::node
