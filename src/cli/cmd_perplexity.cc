// trinity perplexity -m MODEL FILE: perplexity over a text file (windowing: engine/model/perplexity.h).
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/common/error.h"
#include "engine/model/perplexity.h"

namespace trinity::cli {

void RegisterPerplexity(CLI::App& app) {
  struct Flags {
    std::string model, file;
    int64_t n_ctx = 0;
    int threads = 0;
    bool json = false;
    std::string device = "auto";
    std::string lm_head = "file";
    std::string kv_cache = "f32";
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("perplexity", "Perplexity of a model over a text file");
  cmd->add_option("-m,--model", f->model, "GGUF model file (default: $TRINITY_MODEL or the built-in model)");
  cmd->add_option("file", f->file, "UTF-8 text file")->required();
  cmd->add_option("-c,--ctx", f->n_ctx, "window size in tokens (0 = the model's context, at most 4096)");
  cmd->add_option("-t,--threads", f->threads, "threads (0 = all cores)");
  cmd->add_flag("--json", f->json, "print JSON");
  AddDeviceFlag(*cmd, f->device);
  AddKvCacheFlag(*cmd, f->kv_cache);
  cmd->add_option("--lm-head", f->lm_head, "LM head weights: file (the model's own, default) or q8 (8-bit copy made at load: faster, changes logits slightly)");
  cmd->callback([f] {
    std::ifstream in(f->file, std::ios::binary);
    if (!in) Fail("cannot open {}", f->file);
    std::stringstream buffer;
    buffer << in.rdbuf();
    const auto model = LoadModel(f->model);
    ContextOptions options;
    options.n_threads = f->threads;
    options.device = ParseDevice(f->device);
    options.lm_head = ParseLmHeadFormat(f->lm_head);
    options.kv_cache = ParseKvCacheType(f->kv_cache);
    const PerplexityResult r = Perplexity(*model, buffer.str(), f->n_ctx, options, [&](int64_t done, int64_t total) {
      if (!f->json) std::fprintf(stderr, "\rchunk %lld/%lld", static_cast<long long>(done), static_cast<long long>(total));
    });
    if (f->json) {
      const nlohmann::json j = {{"tokens", r.n_tokens}, {"nll", r.nll}, {"ppl", r.ppl},
                                {"chunks", r.n_chunks}, {"n_ctx", r.n_ctx}, {"seconds", r.seconds}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::fprintf(stderr, "\n");
    std::printf("%s: %lld tokens in %lld windows of %lld: nll %.6f, perplexity %.4f (%.1f s, %.0f tok/s)\n",
                f->file.c_str(), static_cast<long long>(r.n_tokens), static_cast<long long>(r.n_chunks),
                static_cast<long long>(r.n_ctx), r.nll, r.ppl, r.seconds, r.n_tokens / r.seconds);
  });
}

}  // namespace trinity::cli
