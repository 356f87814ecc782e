// The HTTP server: OpenAI-compatible routes, the node's task route, tokenize/detokenize, health
// and metrics, over cpp-httplib. Handlers parse and validate on the HTTP thread, then hand the
// work to the Scheduler (which owns all shared state) and wait for it; /health and /metrics never
// queue. Shapes follow docs/serving.md.
//
// Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, POST /v1/tasks (and
// GET /v1/tasks to list them), POST /tokenize, POST /detokenize, GET /health, GET /metrics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/sampler/sampler.h"
#include "node/node.h"

namespace trinity::server {

// Continuous batching of the slots. kAuto batches when a token reads at least
// kAutoBatchingMinBytes of weights: batched steps share that read among the sequences, while for a
// model that fits in cache the hand-offs between threads cost more than they save (the 5 MB
// built-in model serves 1.7-3x more tokens/s unbatched).
enum class Batching { kAuto, kOn, kOff };
inline constexpr uint64_t kAutoBatchingMinBytes = uint64_t{32} << 20;

struct ServerOptions {
  std::string model_path;
  std::string model_id;              // the id /v1/models lists; "" -> the file name without .gguf
  std::string host = "127.0.0.1";    // loopback unless told otherwise
  int port = 8080;                   // 0: any free port (Start() returns it)
  int n_parallel = 1;                // slots
  int64_t n_ctx = 0;                 // per slot; 0: the model's, at most 4096
  int n_threads = 0;                 // forward-pass threads; 0: all cores (divided among the slots without batching)
  Batching batching = Batching::kAuto;  // continuous batching of the slots (when n_parallel > 1)
  Device device = Device::kCpu;      // each slot's forward pass (the CLI passes --device, default auto)
  LmHeadFormat lm_head = LmHeadFormat::kFile;  // kQ8: the 8-bit LM head copy (CPU; changes logits slightly)
  KvCacheType kv_cache = KvCacheType::kF32;    // kF16: half the memory per slot (CPU; changes logits slightly)
  size_t max_queue = 16;             // waiting requests beyond the slots; more get 429
  size_t max_body_bytes = 1 << 20;   // larger bodies get 413
  double timeout_s = 600.0;          // per request, queueing included
  std::string api_key;               // "" -> no authentication
  std::string tasks_config;          // extra task declarations (JSON), optional
  node::PromptMode prompt_mode = node::PromptMode::kAuto;
  SamplingParams sampling;           // defaults for requests that do not set them
  bool log_requests = false;         // one line per request to stderr (never bodies or prompts)
  double step_delay_ms = 0.0;        // tests: a pause per generated piece, to hold slots busy
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Stop()

  // Binds, starts answering (/health says 503 "loading"), loads the model, opens the slots and
  // returns the bound port. Throws trinity::Error when it cannot bind or load.
  int Start();
  // Graceful drain: /health turns 503, new work gets 503, in-flight requests finish; then the
  // listener stops.
  void Drain();
  // Stops listening at once (in-flight streams are cut at their next token).
  void Stop();
  int port() const;
  const std::string& model_id() const;
  bool batching() const;  // whether the slots share batched steps (after Start)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trinity::server
