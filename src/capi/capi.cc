// The C API over the engine: exceptions become status codes and a thread-local message.
#include "trinity/trinity.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/chat/chat.h"
#include "engine/common/error.h"
#include "engine/model/context.h"
#include "engine/model/generate.h"
#include "engine/model/model.h"

struct trinity_model {
  std::unique_ptr<trinity::Model> model;
};

struct trinity_context {
  const trinity::Model* model;
  std::unique_ptr<trinity::Context> context;
};

namespace {

thread_local std::string g_last_error;

template <typename F>
auto Guard(F&& f, decltype(f()) on_error) -> decltype(f()) {
  try {
    g_last_error.clear();
    return f();
  } catch (const std::exception& e) {
    g_last_error = e.what();
  } catch (...) {
    g_last_error = "unknown error";
  }
  return on_error;
}

std::string DefaultModelPath() {
  if (const char* env = std::getenv("TRINITY_MODEL"); env != nullptr && *env != '\0') return env;
  return std::string(TRINITY_DATA_DIR) + "/../models/trinity-tiny.gguf";
}

}  // namespace

extern "C" {

trinity_sampling trinity_sampling_default(void) {
  const trinity::SamplingParams p;
  return trinity_sampling{p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.seed};
}

const char* trinity_last_error(void) { return g_last_error.c_str(); }

trinity_model* trinity_model_load(const char* path) {
  return Guard(
      [&]() -> trinity_model* {
        auto handle = std::make_unique<trinity_model>();
        handle->model = trinity::Model::Load(path != nullptr ? std::string(path) : DefaultModelPath());
        return handle.release();
      },
      nullptr);
}

void trinity_model_free(trinity_model* model) { delete model; }

int32_t trinity_model_n_vocab(const trinity_model* model) {
  return model ? static_cast<int32_t>(model->model->config().n_vocab) : -1;
}

int32_t trinity_model_n_ctx_train(const trinity_model* model) {
  return model ? static_cast<int32_t>(model->model->config().n_ctx_train) : -1;
}

int32_t trinity_tokenize(const trinity_model* model, const char* text, int parse_special, int32_t* tokens,
                         int32_t capacity) {
  return Guard(
      [&]() -> int32_t {
        if (model == nullptr || text == nullptr) trinity::Fail("trinity_tokenize: model and text must not be NULL");
        const std::vector<int32_t> ids = model->model->tokenizer().Encode(text, parse_special != 0);
        if (tokens != nullptr) std::copy_n(ids.begin(), std::min<size_t>(ids.size(), std::max(capacity, 0)), tokens);
        return static_cast<int32_t>(ids.size());
      },
      -1);
}

int32_t trinity_detokenize(const trinity_model* model, const int32_t* tokens, int32_t n_tokens, char* buf,
                           int32_t capacity) {
  return Guard(
      [&]() -> int32_t {
        if (model == nullptr || (tokens == nullptr && n_tokens > 0) || n_tokens < 0) {
          trinity::Fail("trinity_detokenize: invalid arguments");
        }
        for (int32_t i = 0; i < n_tokens; ++i) {
          if (tokens[i] < 0 || tokens[i] >= model->model->tokenizer().n_vocab()) trinity::Fail("token id {} is out of range", tokens[i]);
        }
        const std::string text = model->model->tokenizer().Decode(std::span<const int32_t>(tokens, n_tokens));
        if (buf != nullptr && capacity > 0) {
          const size_t n = std::min<size_t>(text.size(), static_cast<size_t>(capacity - 1));
          std::memcpy(buf, text.data(), n);
          buf[n] = '\0';
        }
        return static_cast<int32_t>(text.size());
      },
      -1);
}

trinity_context* trinity_context_new(const trinity_model* model, int32_t n_ctx, int32_t n_threads) {
  return Guard(
      [&]() -> trinity_context* {
        if (model == nullptr) trinity::Fail("trinity_context_new: model is NULL");
        auto handle = std::make_unique<trinity_context>();
        handle->model = model->model.get();
        handle->context = std::make_unique<trinity::Context>(*model->model, trinity::ContextOptions{n_ctx, n_threads});
        return handle.release();
      },
      nullptr);
}

void trinity_context_free(trinity_context* context) { delete context; }

int trinity_generate(trinity_context* context, const char* prompt, int chat, int32_t max_tokens,
                     const trinity_sampling* sampling, trinity_token_callback callback, void* user_data,
                     trinity_generation_stats* stats) {
  return Guard(
      [&]() -> int {
        if (context == nullptr || prompt == nullptr) trinity::Fail("trinity_generate: context and prompt must not be NULL");
        const trinity::Model& model = *context->model;
        const trinity::Tokenizer& tokenizer = model.tokenizer();
        std::vector<int32_t> ids;
        if (chat != 0) {
          const trinity::ChatMessage message{"user", prompt};
          ids = tokenizer.Encode(trinity::ApplyChatTemplate(model.chat_format(), std::span(&message, 1), true), true);
        } else {
          if (tokenizer.data().add_bos && tokenizer.data().bos_id >= 0) ids.push_back(tokenizer.data().bos_id);
          const std::vector<int32_t> text = tokenizer.Encode(prompt, false);
          ids.insert(ids.end(), text.begin(), text.end());
        }
        trinity::SamplingParams params;
        if (sampling != nullptr) {
          params.temperature = sampling->temperature;
          params.top_k = sampling->top_k;
          params.top_p = sampling->top_p;
          params.min_p = sampling->min_p;
          params.repeat_penalty = sampling->repeat_penalty;
          params.seed = sampling->seed;
        }
        trinity::Sampler sampler(params);
        trinity::GenerateOptions options;
        options.max_tokens = max_tokens;
        if (callback != nullptr) {
          options.on_text = [&](std::string_view text) { return callback(text.data(), text.size(), user_data) == 0; };
        }
        context->context->Reset();
        const trinity::GenerateResult result = trinity::Generate(*context->context, sampler, ids, options);
        if (stats != nullptr) {
          stats->prompt_tokens = static_cast<int32_t>(result.n_prompt);
          stats->generated_tokens = static_cast<int32_t>(result.n_generated());
          stats->prompt_ms = result.prompt_ms;
          stats->generate_ms = result.generate_ms;
          stats->tokens_per_second = result.tokens_per_second();
          stats->finished_by_stop = result.finish_reason == trinity::FinishReason::kStop ? 1 : 0;
        }
        return 0;
      },
      1);
}

}  // extern "C"
