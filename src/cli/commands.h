// `trinity` subcommands. Each Register* adds one subcommand to the app; the callback it installs
// does the work. The CLI stays thin: it parses flags and calls the engine.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>

#include "engine/model/context.h"
#include "engine/model/model.h"
#include "engine/sampler/sampler.h"

namespace trinity::cli {

void RegisterInfo(CLI::App& app);
void RegisterTokenize(CLI::App& app);
void RegisterRun(CLI::App& app);
void RegisterChat(CLI::App& app);
void RegisterLogits(CLI::App& app);
void RegisterSynth(CLI::App& app);
void RegisterConvert(CLI::App& app);
void RegisterPerplexity(CLI::App& app);
void RegisterPull(CLI::App& app);
void RegisterModels(CLI::App& app);
void RegisterBench(CLI::App& app);  // cmd_node.cc
void RegisterServe(CLI::App& app);  // cmd_serve.cc

// `trinity run --task TYPE INPUT` (cmd_node.cc): the run command's flags for task requests.
struct TaskRunFlags {
  std::string task, input, tasks_config, prompt_mode = "auto";
  bool free_text = false;
};
void AddTaskFlags(CLI::App& cmd, TaskRunFlags& flags);
struct TaskRunArgs {  // what `run` already parsed
  std::string model, prompt;
  int threads = 0;
  int64_t n_ctx = 0;
  std::optional<int32_t> max_tokens;  // -n when given, else the task's limit
  SamplingParams sampling;
  bool json = false;
  std::string device = "auto";
  std::string kv_cache = "f32";
};
// Answers the task request when --task was given and returns true; false for a plain run.
bool RunTaskIfRequested(const TaskRunFlags& flags, const TaskRunArgs& args);

// `trinity bench --load URL` (cmd_load.cc): load levels or a soak run against a running server.
struct LoadFlags {
  std::string url, concurrency, api_key, route = "chat";
  int requests = 0;                 // per level (load) or in all (soak); 0: the mode's default
  bool soak = false;
  bool no_stream = false;           // load: non-streamed requests
  double cancel_fraction = 0.2;
  int server_pid = 0;
  double max_rss_growth_mib = 16.0;
};
void AddLoadFlags(CLI::App& cmd, LoadFlags& flags);
struct LoadRunArgs {  // what `bench` already parsed
  bool json = false, progress = true;
  std::string plot;
  int32_t max_tokens = 0;
  uint64_t seed = 0;
};
// Runs the load benchmark or soak when --load was given and returns true.
bool RunLoadIfRequested(const LoadFlags& flags, const LoadRunArgs& args);

// The model path for -m: the flag, else $TRINITY_MODEL, else the built-in model.
std::string ResolveModelPath(const std::string& flag);
std::unique_ptr<Model> LoadModel(const std::string& flag);

// --device cpu|cuda|auto (default auto: the GPU when this build has CUDA and one is present).
void AddDeviceFlag(CLI::App& cmd, std::string& device);

// --kv-cache f32|f16 (default f32; f16 halves the cache's memory and the bytes a deep decode
// reads, changes the logits slightly; CPU only). Parse with ParseKvCacheType.
void AddKvCacheFlag(CLI::App& cmd, std::string& kv_cache);

// Sampling flags shared by run and chat.
void AddSamplingFlags(CLI::App& cmd, SamplingParams& params);

}  // namespace trinity::cli
