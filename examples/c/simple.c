/* The smallest Trinity program: load a model, generate from a prompt through the C API.
 *
 *   simple MODEL.gguf "prompt" [max_tokens [temperature]]   prints the continuation and statistics
 *                                               (temperature 0: greedy)
 *   simple MODEL.gguf --selftest                checks the API (used by the test suite)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trinity/trinity.h"

static int print_piece(const char* text, size_t length, void* user_data) {
  (void)user_data;
  fwrite(text, 1, length, stdout);
  fflush(stdout);
  return 0; /* keep going */
}

struct buffer {
  char data[4096];
  size_t length;
};

static int collect(const char* text, size_t length, void* user_data) {
  struct buffer* b = (struct buffer*)user_data;
  if (b->length + length < sizeof(b->data)) {
    memcpy(b->data + b->length, text, length);
    b->length += length;
    b->data[b->length] = '\0';
  }
  return 0;
}

#define CHECK(cond)                                              \
  do {                                                           \
    if (!(cond)) {                                               \
      fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                  \
    }                                                            \
  } while (0)

static int selftest(const char* path) {
  /* Errors are reported, not crashes. */
  CHECK(trinity_model_load("/nonexistent/model.gguf") == NULL);
  CHECK(strlen(trinity_last_error()) > 0);

  trinity_model* model = trinity_model_load(path);
  CHECK(model != NULL);
  CHECK(trinity_model_n_vocab(model) > 0);

  const char* text = "Hello, world! Ternary weights.";
  int32_t ids[64];
  const int32_t n = trinity_tokenize(model, text, 0, ids, 64);
  CHECK(n > 0 && n <= 64);
  char back[256];
  CHECK(trinity_detokenize(model, ids, n, back, sizeof(back)) == (int32_t)strlen(text));
  CHECK(strcmp(back, text) == 0);
  CHECK(trinity_tokenize(model, text, 0, ids, 1) == n); /* reports the size needed */

  trinity_context* ctx = trinity_context_new(model, 256, 1);
  CHECK(ctx != NULL);
  trinity_sampling greedy = trinity_sampling_default();
  greedy.temperature = 0.0f;
  struct buffer a = {{0}, 0}, b = {{0}, 0};
  trinity_generation_stats stats;
  CHECK(trinity_generate(ctx, "The quick brown fox", 0, 12, &greedy, collect, &a, &stats) == 0);
  CHECK(stats.generated_tokens > 0 && stats.prompt_tokens > 0);
  CHECK(trinity_generate(ctx, "The quick brown fox", 0, 12, &greedy, collect, &b, NULL) == 0);
  CHECK(a.length > 0 && strcmp(a.data, b.data) == 0); /* greedy is deterministic */
  CHECK(trinity_generate(ctx, "", 0, 4, &greedy, NULL, NULL, NULL) == 0 || strlen(trinity_last_error()) > 0);

  trinity_context_free(ctx);
  trinity_model_free(model);
  printf("c api selftest: ok (%d tokens, \"%s\")\n", stats.generated_tokens, a.data);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.gguf PROMPT [max_tokens [temperature]] | %s MODEL.gguf --selftest\n", argv[0],
            argv[0]);
    return 2;
  }
  if (strcmp(argv[2], "--selftest") == 0) return selftest(argv[1]);
  trinity_model* model = trinity_model_load(argv[1]);
  if (model == NULL) {
    fprintf(stderr, "error: %s\n", trinity_last_error());
    return 1;
  }
  trinity_context* ctx = trinity_context_new(model, 0, 0);
  trinity_generation_stats stats;
  const int32_t max_tokens = argc > 3 ? atoi(argv[3]) : 64;
  trinity_sampling sampling = trinity_sampling_default();
  if (argc > 4) sampling.temperature = (float)atof(argv[4]);
  if (ctx == NULL || trinity_generate(ctx, argv[2], 0, max_tokens, &sampling, print_piece, NULL, &stats) != 0) {
    fprintf(stderr, "error: %s\n", trinity_last_error());
    return 1;
  }
  fprintf(stderr, "\n[%d prompt tokens, %d generated, %.2f tok/s]\n", stats.prompt_tokens, stats.generated_tokens,
          stats.tokens_per_second);
  trinity_context_free(ctx);
  trinity_model_free(model);
  return 0;
}
