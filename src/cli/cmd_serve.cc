// trinity serve: the OpenAI-compatible HTTP server (src/server). Runs until SIGTERM or SIGINT,
// then drains: /health turns 503, new work is refused, in-flight requests finish, then it exits.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "node/node.h"
#include "server/server.h"

namespace trinity::cli {

namespace {

std::atomic<int> g_signal{0};  // lock-free: written from the signal handler

extern "C" void OnSignal(int sig) { g_signal.store(sig); }

}  // namespace

void RegisterServe(CLI::App& app) {
  auto o = std::make_shared<server::ServerOptions>();
  auto model_flag = std::make_shared<std::string>();
  auto prompt_mode = std::make_shared<std::string>("auto");
  auto device = std::make_shared<std::string>("auto");
  auto lm_head = std::make_shared<std::string>("file");
  auto kv_cache = std::make_shared<std::string>("f32");
  auto batching = std::make_shared<std::string>("auto");
  auto no_batching = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (chat, completions, tasks, metrics)");
  cmd->add_option("-m,--model", *model_flag, "GGUF model file (default: $TRINITY_MODEL or the built-in model)");
  cmd->add_option("--alias", o->model_id, "model id clients use (default: the file name without .gguf)");
  cmd->add_option("--host", o->host, "address to bind (loopback by default)")->capture_default_str();
  cmd->add_option("--port", o->port, "port (0 = any free port)")->capture_default_str();
  cmd->add_option("--parallel", o->n_parallel, "parallel slots (one KV cache each)")->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("-c,--ctx", o->n_ctx, "context size per slot (0 = the model's, at most 4096)");
  cmd->add_option("-t,--threads", o->n_threads,
                  "forward-pass threads (0 = all cores; without batching, divided among the slots)");
  cmd->add_option("--cont-batching", *batching,
                  "auto (on when a token reads >= 32 MiB of weights), on or off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_flag("--no-cont-batching", *no_batching,
                "same as --cont-batching off: each slot computes alone");
  cmd->add_option("--queue", o->max_queue, "requests that may wait for a slot; more get 429")->capture_default_str();
  cmd->add_option("--max-body", o->max_body_bytes, "largest request body in bytes; larger get 413")
      ->capture_default_str();
  cmd->add_option("--timeout", o->timeout_s, "per-request timeout in seconds, queueing included")
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "require Authorization: Bearer KEY (all routes but /health)");
  cmd->add_option("--tasks", o->tasks_config, "JSON file of extra task declarations");
  cmd->add_option("--prompt-mode", *prompt_mode, "task prompts: auto, chat or raw")->capture_default_str();
  cmd->add_flag("--log-requests", o->log_requests, "log one line per request (method, path, status; never bodies)");
  AddSamplingFlags(*cmd, o->sampling);
  AddDeviceFlag(*cmd, *device);
  cmd->add_option("--lm-head", *lm_head,
                  "LM head weights: file (the model's own, default) or q8 (8-bit copy made at load: faster, changes logits slightly)")
      ->capture_default_str();
  AddKvCacheFlag(*cmd, *kv_cache);
  cmd->callback([o, model_flag, prompt_mode, device, lm_head, kv_cache, batching, no_batching] {
    o->device = ParseDevice(*device);
    o->batching = *no_batching || *batching == "off" ? server::Batching::kOff
                  : *batching == "on"                ? server::Batching::kOn
                                                     : server::Batching::kAuto;
    o->lm_head = ParseLmHeadFormat(*lm_head);
    o->kv_cache = ParseKvCacheType(*kv_cache);
    o->model_path = ResolveModelPath(*model_flag);
    o->prompt_mode = node::ParsePromptMode(*prompt_mode);
    std::signal(SIGTERM, OnSignal);
    std::signal(SIGINT, OnSignal);
    server::Server srv(*o);
    const int port = srv.Start();
    std::fprintf(stderr, "trinity serve: %s on http://%s:%d (%d slot%s%s)\n", srv.model_id().c_str(),
                 o->host.c_str(), port, o->n_parallel, o->n_parallel == 1 ? "" : "s",
                 srv.batching() ? ", continuous batching" : "");
    while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::fprintf(stderr, "trinity serve: signal %d, draining\n", g_signal.load());
    srv.Drain();
    std::fprintf(stderr, "trinity serve: stopped\n");
  });
}

}  // namespace trinity::cli
