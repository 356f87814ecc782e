#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "engine/common/error.h"

namespace trinity::cli {

std::string ResolveModelPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("TRINITY_MODEL"); env != nullptr && *env != '\0') return env;
  const std::string builtin = std::string(TRINITY_DATA_DIR) + "/../models/trinity-tiny.gguf";
  if (std::filesystem::exists(builtin)) return std::filesystem::weakly_canonical(builtin).string();
  Fail("no model given: pass -m MODEL, set TRINITY_MODEL, or build the built-in model ({})", builtin);
}

std::unique_ptr<Model> LoadModel(const std::string& flag) { return Model::Load(ResolveModelPath(flag)); }

void AddDeviceFlag(CLI::App& cmd, std::string& device) {
  cmd.add_option("--device", device, "where the model runs: cpu, cuda or auto (cuda when a GPU is present)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "gpu", "auto"}));
}

void AddKvCacheFlag(CLI::App& cmd, std::string& kv_cache) {
  cmd.add_option("--kv-cache", kv_cache,
                 "KV cache type: f32, or f16 (half the memory per cached token and faster decode at depth; "
                 "changes logits slightly; CPU only)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}));
}

void AddSamplingFlags(CLI::App& cmd, SamplingParams& p) {
  cmd.add_option("--temp", p.temperature, "temperature (0 = greedy)")->capture_default_str();
  cmd.add_option("--top-k", p.top_k, "top-k (0 = off)")->capture_default_str();
  cmd.add_option("--top-p", p.top_p, "top-p (1 = off)")->capture_default_str();
  cmd.add_option("--min-p", p.min_p, "min-p (0 = off)")->capture_default_str();
  cmd.add_option("--repeat-penalty", p.repeat_penalty, "repetition penalty (1 = off)")->capture_default_str();
  cmd.add_option("--presence-penalty", p.presence_penalty, "presence penalty")->capture_default_str();
  cmd.add_option("--frequency-penalty", p.frequency_penalty, "frequency penalty")->capture_default_str();
  cmd.add_option("--repeat-last-n", p.penalty_last_n, "tokens the penalties look back at (-1 = all)")->capture_default_str();
  cmd.add_option("--seed", p.seed, "random seed")->capture_default_str();
}

}  // namespace trinity::cli
