// trinity run: generate from a prompt, streaming text to stdout and statistics to stderr.
// trinity chat: an interactive conversation using the model's chat template.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/chat/chat.h"
#include "engine/common/error.h"
#include "engine/model/context.h"
#include "engine/model/generate.h"

namespace trinity::cli {

namespace {

struct RunFlags {
  std::string model, prompt, system;
  int32_t n_predict = 128;
  int threads = 0;
  int64_t n_ctx = 0;
  std::vector<std::string> stop;
  std::vector<std::string> logit_bias;
  bool chat = false;
  bool ignore_eos = false;
  bool json = false;
  std::vector<int32_t> prompt_tokens;
  SamplingParams sampling;
  std::string device = "auto";
  std::string kv_cache = "f32";
};

ContextOptions MakeContextOptions(const RunFlags& f) {
  ContextOptions options(f.n_ctx, f.threads);
  options.device = ParseDevice(f.device);
  options.kv_cache = ParseKvCacheType(f.kv_cache);
  return options;
}

void AddCommonFlags(CLI::App& cmd, RunFlags& f) {
  cmd.add_option("-m,--model", f.model, "GGUF model file (default: $TRINITY_MODEL or the built-in model)");
  cmd.add_option("-n,--n-predict", f.n_predict, "tokens to generate")->capture_default_str();
  cmd.add_option("-t,--threads", f.threads, "threads (0 = all cores)");
  cmd.add_option("-c,--ctx", f.n_ctx, "context size (0 = the model's, at most 4096)");
  cmd.add_option("--stop", f.stop, "stop string (repeatable)");
  cmd.add_option("--logit-bias", f.logit_bias, "TOKEN=BIAS added to that token's logit (repeatable; -inf bans)");
  AddSamplingFlags(cmd, f.sampling);
  AddDeviceFlag(cmd, f.device);
  AddKvCacheFlag(cmd, f.kv_cache);
}

void ParseLogitBias(RunFlags& f) {
  for (const std::string& item : f.logit_bias) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) Fail("--logit-bias expects TOKEN=BIAS, got \"{}\"", item);
    try {
      f.sampling.logit_bias[std::stoi(item.substr(0, eq))] = std::stof(item.substr(eq + 1));
    } catch (const std::exception&) {
      Fail("--logit-bias expects TOKEN=BIAS, got \"{}\"", item);
    }
  }
}

void PrintStats(const GenerateResult& r) {
  std::fprintf(stderr,
               "\n[prompt: %lld tokens, %.1f ms (%.1f tok/s) | generated: %lld tokens, %.1f ms, %.2f tok/s | "
               "ttft %.1f ms | finish: %s]\n",
               static_cast<long long>(r.n_prompt), r.prompt_ms, r.prompt_tokens_per_second(),
               static_cast<long long>(r.n_generated()), r.generate_ms, r.tokens_per_second(), r.ttft_ms,
               FinishReasonName(r.finish_reason));
}

}  // namespace

void RegisterRun(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  AddCommonFlags(*cmd, *f);
  cmd->add_option("-p,--prompt", f->prompt, "prompt text");
  cmd->add_flag("--chat", f->chat, "send the prompt as a user turn with the model's chat template");
  cmd->add_option("--system", f->system, "system message (with --chat)");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "keep generating after end-of-text tokens");
  cmd->add_flag("--json", f->json, "print one JSON result (text, token ids, statistics) instead of streaming");
  cmd->add_option("--prompt-tokens", f->prompt_tokens, "prompt as token ids (comma separated) instead of -p")
      ->delimiter(',');
  auto task = std::make_shared<TaskRunFlags>();
  AddTaskFlags(*cmd, *task);
  cmd->callback([f, task, cmd] {
    ParseLogitBias(*f);
    Validate(f->sampling);
    const std::optional<int32_t> n = cmd->count("--n-predict") > 0 ? std::optional(f->n_predict) : std::nullopt;
    if (RunTaskIfRequested(*task, {f->model, f->prompt, f->threads, f->n_ctx, n, f->sampling, f->json, f->device, f->kv_cache})) return;
    const auto model = LoadModel(f->model);
    const Tokenizer& tokenizer = model->tokenizer();
    std::vector<int32_t> prompt;
    if (f->prompt.empty() && f->prompt_tokens.empty()) Fail("give a prompt with -p TEXT or --prompt-tokens IDS");
    if (!f->prompt_tokens.empty()) {
      if (f->chat || !f->prompt.empty()) Fail("--prompt-tokens replaces -p and --chat");
      prompt = f->prompt_tokens;
    } else if (f->chat) {
      std::vector<ChatMessage> messages;
      if (!f->system.empty()) messages.push_back({"system", f->system});
      messages.push_back({"user", f->prompt});
      prompt = tokenizer.Encode(ApplyChatTemplate(model->chat_format(), messages, true), true);
    } else {
      if (tokenizer.data().add_bos && tokenizer.data().bos_id >= 0) prompt.push_back(tokenizer.data().bos_id);
      const std::vector<int32_t> text = tokenizer.Encode(f->prompt, false);
      prompt.insert(prompt.end(), text.begin(), text.end());
    }
    Context context(*model, MakeContextOptions(*f));
    Sampler sampler(f->sampling);
    GenerateOptions options;
    options.max_tokens = f->n_predict;
    options.stop = f->stop;
    options.stop_at_eog = !f->ignore_eos;
    if (!f->json) {
      options.on_text = [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
        return true;
      };
    }
    const GenerateResult result = Generate(context, sampler, prompt, options);
    if (f->json) {
      const nlohmann::json j = {{"text", result.text},
                                {"tokens", result.tokens},
                                {"prompt_tokens", result.n_prompt},
                                {"generated_tokens", result.n_generated()},
                                {"prompt_ms", result.prompt_ms},
                                {"ttft_ms", result.ttft_ms},
                                {"generate_ms", result.generate_ms},
                                {"total_ms", result.total_ms},
                                {"tok_per_s", result.tokens_per_second()},
                                {"finish_reason", FinishReasonName(result.finish_reason)}};
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return;
    }
    std::fflush(stdout);
    PrintStats(result);
  });
}

void RegisterChat(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  f->n_predict = 512;
  auto* cmd = app.add_subcommand("chat", "Chat interactively with the model's chat template");
  AddCommonFlags(*cmd, *f);
  cmd->add_option("--system", f->system, "system message");
  cmd->callback([f] {
    ParseLogitBias(*f);
    Validate(f->sampling);
    const auto model = LoadModel(f->model);
    const Tokenizer& tokenizer = model->tokenizer();
    Context context(*model, MakeContextOptions(*f));
    Sampler sampler(f->sampling);
    std::vector<ChatMessage> messages;
    if (!f->system.empty()) messages.push_back({"system", f->system});
    std::vector<int32_t> cached;  // tokens the context holds
    std::fprintf(stderr, "Chatting with %s. Type /exit or end input (Ctrl-D) to quit.\n", model->config().name.c_str());
    std::string line;
    while (true) {
      std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line) || line == "/exit") break;
      if (line.empty()) continue;
      messages.push_back({"user", line});
      const std::vector<int32_t> all =
          tokenizer.Encode(ApplyChatTemplate(model->chat_format(), messages, true), true);
      // Reuse the cached prefix; evaluate only what is new.
      size_t common = 0;
      while (common < cached.size() && common < all.size() && cached[common] == all[common]) ++common;
      if (common == all.size()) --common;  // always evaluate at least one token
      context.Truncate(static_cast<int64_t>(common));
      const std::span<const int32_t> fresh(all.data() + common, all.size() - common);
      GenerateOptions options;
      options.max_tokens = f->n_predict;
      options.stop = f->stop;
      options.on_text = [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
        return true;
      };
      GenerateResult result;
      try {
        result = Generate(context, sampler, fresh, options);
      } catch (const Error& e) {
        std::fprintf(stderr, "\nerror: %s (conversation reset)\n", e.what());
        messages.clear();
        if (!f->system.empty()) messages.push_back({"system", f->system});
        context.Reset();
        cached.clear();
        continue;
      }
      std::printf("\n");
      cached = all;
      cached.insert(cached.end(), result.tokens.begin(), result.tokens.end());
      // The context holds every generated token except the last sampled one.
      context.Truncate(std::min<int64_t>(context.n_past(), static_cast<int64_t>(cached.size())));
      cached.resize(static_cast<size_t>(context.n_past()));
      messages.push_back({"assistant", result.text});
      PrintStats(result);
    }
  });
}

}  // namespace trinity::cli
