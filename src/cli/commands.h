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
};
// Answers the task request when --task was given and returns true; false for a plain run.
bool RunTaskIfRequested(const TaskRunFlags& flags, const TaskRunArgs& args);

// The model path for -m: the flag, else $TRINITY_MODEL, else the built-in model.
std::string ResolveModelPath(const std::string& flag);
std::unique_ptr<Model> LoadModel(const std::string& flag);

// --device cpu|cuda|auto (default auto: the GPU when this build has CUDA and one is present).
void AddDeviceFlag(CLI::App& cmd, std::string& device);

// Sampling flags shared by run and chat.
void AddSamplingFlags(CLI::App& cmd, SamplingParams& params);

}  // namespace trinity::cli
