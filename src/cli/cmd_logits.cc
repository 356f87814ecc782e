// trinity logits -m MODEL --tokens ID,ID,... -o FILE: teacher-forced logits of every position,
// little-endian float32 [n_tokens][n_vocab], for comparison with other implementations.
#include <cstdio>
#include <fstream>

#include "cli/commands.h"
#include "engine/common/error.h"
#include "engine/model/context.h"

namespace trinity::cli {

void RegisterLogits(CLI::App& app) {
  struct Flags {
    std::string model, out;
    std::vector<int32_t> tokens;
    bool reference = false;
    int threads = 0;
    std::string device = "auto";
    std::string lm_head = "file";
    std::string kv_cache = "f32";
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("logits", "Write teacher-forced logits as float32 [n_tokens][n_vocab]");
  cmd->add_option("-m,--model", f->model, "GGUF model file");
  cmd->add_option("--tokens", f->tokens, "token ids, comma separated")->delimiter(',')->required();
  cmd->add_option("-o,--output", f->out, "output file")->required();
  cmd->add_flag("--reference", f->reference,
                "use the plain reference forward pass (scalar kernels, one token at a time) instead of the fast path");
  cmd->add_option("-t,--threads", f->threads, "threads (0 = all cores)");
  cmd->add_option("--lm-head", f->lm_head, "LM head weights: file (the model's own, default) or q8 (8-bit copy made at load: faster, changes logits slightly)");
  AddDeviceFlag(*cmd, f->device);
  AddKvCacheFlag(*cmd, f->kv_cache);
  cmd->callback([f] {
    const auto model = LoadModel(f->model);
    ContextOptions options{static_cast<int64_t>(f->tokens.size()) + 1, f->threads, f->reference};
    options.device = ParseDevice(f->device);  // --reference always runs on the CPU
    options.lm_head = ParseLmHeadFormat(f->lm_head);
    options.kv_cache = ParseKvCacheType(f->kv_cache);
    Context context(*model, options);
    std::vector<float> logits;
    context.Eval(f->tokens, &logits);
    std::ofstream out(f->out, std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
    if (!out) Fail("cannot write {}", f->out);
    std::fprintf(stderr, "wrote %zu x %lld logits to %s\n", f->tokens.size(), static_cast<long long>(model->config().n_vocab),
                 f->out.c_str());
  });
}

}  // namespace trinity::cli
