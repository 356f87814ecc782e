// Decode speed of several configurations of one model, tokens alternated between them in one
// process: one context per configuration, and step i decodes one token in context i mod n, so
// every configuration sees the same moments of a shared machine whose bandwidth varies 2x between
// runs (bench/RESULTS.md). Separate runs cannot show a few percent there; per-token medians
// alternated this way can.
//
//   build/bench/decode_pairs_bench MODEL THREADS TOKENS CONFIG [CONFIG...]
//
// CONFIG: a CPU path (ref, generic, avx2, avx512, neon), optionally followed by "+q8" (the
// 8-bit LM head), "+f16kv" (the f16 KV cache) and/or "+prefetch=on|off|auto" (the GEMVs' row
// stream prefetch, kernels/cpu.h; set before each of the configuration's tokens, default auto),
// e.g. avx512 avx2 avx512+q8 avx512+prefetch=off. Each context
// decodes TOKENS greedy tokens from position 0; the first four of each are not counted. Prints
// each configuration's median and first-quartile tok/s, its GB/s (weight bytes per token at the
// median) and its speed against the first configuration's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/kernels/cpu.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  std::string name;
  trinity::ContextOptions options;
  trinity::kernels::StreamPrefetch prefetch = trinity::kernels::StreamPrefetch::kAuto;
};

Config ParseConfig(const std::string& text, int threads, int n_ctx) {
  Config config{text, trinity::ContextOptions{n_ctx, threads}};
  std::string rest = text;
  const size_t plus = rest.find('+');
  config.options.cpu_path = trinity::kernels::ParseCpuPath(rest.substr(0, plus));
  rest = plus == std::string::npos ? "" : rest.substr(plus);
  while (!rest.empty()) {
    const size_t next = rest.find('+', 1);
    const std::string flag = rest.substr(0, next);
    if (flag == "+q8") {
      config.options.lm_head = trinity::LmHeadFormat::kQ8;
    } else if (flag.rfind("+prefetch=", 0) == 0) {
      config.prefetch = trinity::kernels::ParseStreamPrefetch(flag.substr(10));
    } else if (flag == "+f16kv") {
      config.options.kv_cache = trinity::KvCacheType::kF16;
    } else {
      trinity::Fail("unknown configuration flag \"{}\" in \"{}\": expected +q8, +f16kv or +prefetch=MODE", flag, text);
    }
    rest = next == std::string::npos ? "" : rest.substr(next);
  }
  if (!trinity::kernels::CpuPathSupported(*config.options.cpu_path)) {
    trinity::Fail("CPU path of \"{}\" is not supported on this machine", text);
  }
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trinity;
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODEL THREADS TOKENS CONFIG [CONFIG...]\n", argv[0]);
    return 2;
  }
  try {
    const auto model = Model::Load(argv[1]);
    const int threads = std::stoi(argv[2]), tokens = std::stoi(argv[3]);
    if (tokens < 8) Fail("TOKENS must be at least 8");
    std::vector<Config> configs;
    std::vector<std::unique_ptr<Context>> contexts;
    for (int i = 4; i < argc; ++i) {
      configs.push_back(ParseConfig(argv[i], threads, tokens + 1));
      contexts.push_back(std::make_unique<Context>(*model, configs.back().options));
    }
    const size_t n = configs.size();
    std::vector<int32_t> next(n, static_cast<int32_t>(std::min<int64_t>(1000, model->config().n_vocab - 1)));
    std::vector<std::vector<double>> seconds(n);
    for (int step = 0; step < tokens * static_cast<int>(n); ++step) {
      const size_t i = static_cast<size_t>(step) % n;
      trinity::kernels::SetStreamPrefetch(configs[i].prefetch);
      const auto start = Clock::now();
      const auto logits = contexts[i]->Eval(std::span<const int32_t>(&next[i], 1));
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      next[i] = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (step >= 4 * static_cast<int>(n)) seconds[i].push_back(s);
    }
    double first_median = 0.0;
    std::printf("%-22s %10s %10s %9s %8s\n", "config", "tok/s med", "tok/s p25", "GB/s med", "vs first");
    for (size_t i = 0; i < n; ++i) {
      std::vector<double>& s = seconds[i];
      std::sort(s.begin(), s.end());
      const double median = s[s.size() / 2], quartile = s[s.size() / 4];
      if (i == 0) first_median = median;
      const bool q8 = configs[i].options.lm_head == LmHeadFormat::kQ8;
      const double bytes = static_cast<double>(model->WeightBytesPerToken(q8));
      std::printf("%-22s %10.2f %10.2f %9.1f %7.3fx\n", configs[i].name.c_str(), 1.0 / median, 1.0 / quartile,
                  bytes / median / 1e9, first_median / median);
    }
  } catch (const std::exception& e) {  // trinity::Error, std::stoi's
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
