// trinity info MODEL: what a model file is, and what generating with it costs.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"

namespace trinity::cli {

void RegisterInfo(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a model's architecture, hyper-parameters, tensor types and sizes");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("model", *path, "GGUF model file")->required();
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([path, json] {
    const auto model = Model::Load(*path);
    const ModelConfig& c = model->config();
    const uint64_t bytes_per_token = model->WeightBytesPerToken();
    if (*json) {
      nlohmann::json j = {
          {"path", *path}, {"architecture", c.architecture}, {"name", c.name}, {"gguf_version", model->file().version()},
          {"n_vocab", c.n_vocab}, {"n_ctx_train", c.n_ctx_train}, {"n_embd", c.n_embd}, {"n_layer", c.n_layer},
          {"n_ff", c.n_ff}, {"n_head", c.n_head}, {"n_head_kv", c.n_head_kv}, {"head_dim", c.head_dim},
          {"n_rot", c.n_rot}, {"rms_eps", c.rms_eps}, {"rope_theta", c.rope_theta},
          {"ffn_activation", FfnActivationName(c.activation)}, {"tied_embeddings", c.tied_embeddings},
          {"tensor_count", model->file().tensors().size()}, {"tensor_types", model->TensorTypeSummary()},
          {"file_bytes", model->file().file_size()}, {"bytes_per_token", bytes_per_token},
          {"tokenizer_tokens", model->tokenizer().n_vocab()}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    fmt::print("file              {}\n", *path);
    fmt::print("architecture      {} ({}), GGUF v{}\n", c.architecture, c.name, model->file().version());
    fmt::print("vocabulary        {} ({} tokenizer tokens)\n", c.n_vocab, model->tokenizer().n_vocab());
    fmt::print("context           {}\n", c.n_ctx_train);
    fmt::print("embedding         {}\n", c.n_embd);
    fmt::print("layers            {}\n", c.n_layer);
    fmt::print("ffn               {} ({})\n", c.n_ff, FfnActivationName(c.activation));
    fmt::print("heads             {} (kv {}), head dim {}, rope dims {}\n", c.n_head, c.n_head_kv, c.head_dim, c.n_rot);
    fmt::print("rms eps           {:g}\n", c.rms_eps);
    fmt::print("rope theta        {:g}\n", c.rope_theta);
    fmt::print("lm head           {}\n", c.tied_embeddings ? "tied (token_embd)" : "output.weight");
    fmt::print("tensors           {}: {}\n", model->file().tensors().size(), model->TensorTypeSummary());
    fmt::print("file size         {} bytes ({:.2f} MiB)\n", model->file().file_size(), model->file().file_size() / 1048576.0);
    fmt::print("read per token    {} bytes ({:.2f} MiB)\n", bytes_per_token, bytes_per_token / 1048576.0);
  });
}

}  // namespace trinity::cli
