/* Trinity C API: load a BitNet b1.58 model, tokenize, generate with a per-token callback.
 *
 * Every function that can fail returns a status (0 = success) or NULL, and the message of the
 * last error on this thread is available from trinity_last_error(). Objects are not thread-safe:
 * use one trinity_context per thread. */
#ifndef TRINITY_TRINITY_H_
#define TRINITY_TRINITY_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct trinity_model trinity_model;
typedef struct trinity_context trinity_context;

typedef struct trinity_sampling {
  float temperature; /* <= 0: greedy */
  int32_t top_k;     /* <= 0: off */
  float top_p;       /* 1: off */
  float min_p;       /* 0: off */
  float repeat_penalty;
  uint64_t seed;
} trinity_sampling;

/* Sensible defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalty). */
trinity_sampling trinity_sampling_default(void);

/* Message of the last error on this thread ("" if none). */
const char* trinity_last_error(void);

/* Loads a GGUF model (NULL path: $TRINITY_MODEL or the built-in model). NULL on error. */
trinity_model* trinity_model_load(const char* path);
void trinity_model_free(trinity_model* model);
int32_t trinity_model_n_vocab(const trinity_model* model);
int32_t trinity_model_n_ctx_train(const trinity_model* model);

/* Tokenizes UTF-8 text (no BOS added). Writes at most `capacity` ids and returns the number of
 * tokens the text has (which may exceed capacity: call again with a larger buffer), or -1. */
int32_t trinity_tokenize(const trinity_model* model, const char* text, int parse_special, int32_t* tokens,
                         int32_t capacity);
/* Decodes ids to UTF-8 into buf (NUL-terminated when capacity > 0). Returns the byte length of
 * the full text (excluding NUL), or -1 on error. */
int32_t trinity_detokenize(const trinity_model* model, const int32_t* tokens, int32_t n_tokens, char* buf,
                           int32_t capacity);

/* A context holds one sequence's KV cache. n_ctx 0: the model's (<= 4096); n_threads 0: all cores. */
trinity_context* trinity_context_new(const trinity_model* model, int32_t n_ctx, int32_t n_threads);
void trinity_context_free(trinity_context* context);

/* Called with each piece of generated text (complete UTF-8); return non-zero to stop. */
typedef int (*trinity_token_callback)(const char* text, size_t length, void* user_data);

typedef struct trinity_generation_stats {
  int32_t prompt_tokens;
  int32_t generated_tokens;
  double prompt_ms;
  double generate_ms;
  double tokens_per_second;
  int finished_by_stop; /* 1: EOS / end of turn / callback stop; 0: token limit */
} trinity_generation_stats;

/* Generates up to max_tokens after `prompt` (UTF-8; BOS is added when the model wants it;
 * chat != 0 wraps the prompt as a user turn in the model's chat template). The context is reset
 * first. Returns 0 on success. stats may be NULL. */
int trinity_generate(trinity_context* context, const char* prompt, int chat, int32_t max_tokens,
                     const trinity_sampling* sampling, trinity_token_callback callback, void* user_data,
                     trinity_generation_stats* stats);

#ifdef __cplusplus
}
#endif

#endif /* TRINITY_TRINITY_H_ */
