// `trinity` subcommands. Each Register* adds one subcommand to the app; the callback it installs
// does the work. The CLI stays thin: it parses flags and calls the engine.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

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

// The model path for -m: the flag, else $TRINITY_MODEL, else the built-in model.
std::string ResolveModelPath(const std::string& flag);
std::unique_ptr<Model> LoadModel(const std::string& flag);

// Sampling flags shared by run and chat.
void AddSamplingFlags(CLI::App& cmd, SamplingParams& params);

}  // namespace trinity::cli
