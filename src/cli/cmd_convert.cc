// trinity convert: Hugging Face checkpoints and llama.cpp ternary GGUFs -> Microsoft I2_S GGUF.
// trinity synth: random-weight models in Microsoft's format with the real Llama 3 tokenizer.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "engine/convert/convert.h"
#include "engine/convert/synth.h"

namespace trinity::cli {

void RegisterConvert(CLI::App& app) {
  struct Flags {
    std::string input, output;
    convert::ConvertOptions options;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "convert", "Convert a Hugging Face BitNet checkpoint directory or a TQ1_0/TQ2_0 GGUF to Microsoft's I2_S GGUF");
  cmd->add_option("input", f->input, "checkpoint directory (config.json, *.safetensors, tokenizer.json) or .gguf file")
      ->required();
  cmd->add_option("-o,--output", f->output, "output .gguf")->required();
  cmd->add_option("--name", f->options.name, "general.name of the result");
  cmd->add_option("--embedding-type", f->options.embedding_type, "f16 | f32 | q8_0 | q6_k | keep")->capture_default_str();
  cmd->add_option("--ffn-activation", f->options.ffn_activation, "override the FFN activation: relu2 | silu");
  cmd->add_flag("-f,--force", f->options.force, "overwrite the output file");
  cmd->callback([f] {
    f->options.log = [](std::string_view line) { std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data()); };
    if (std::filesystem::is_directory(f->input)) {
      convert::ConvertHfToGguf(f->input, f->output, f->options);
    } else {
      convert::ConvertGgufToI2S(f->input, f->output, f->options);
    }
    std::fprintf(stderr, "wrote %s\n", f->output.c_str());
  });
}

void RegisterSynth(CLI::App& app) {
  struct Flags {
    std::string output;
    convert::SynthOptions options;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("synth", "Write a random-weight model in Microsoft's I2_S format");
  cmd->add_option("--shape", f->options.shape, "tiny | 2b-4t")->capture_default_str();
  cmd->add_option("--seed", f->options.seed, "random seed")->capture_default_str();
  cmd->add_option("--tokenizer", f->options.tokenizer_json, "tokenizer.json (default: the Llama 3 tokenizer)");
  cmd->add_option("-o,--output", f->output, "output .gguf")->required();
  cmd->add_flag("-f,--force", f->options.force, "overwrite the output file");
  cmd->callback([f] {
    convert::WriteSyntheticModel(f->output, f->options);
    std::fprintf(stderr, "wrote %s\n", f->output.c_str());
  });
}

}  // namespace trinity::cli
