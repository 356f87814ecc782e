// trinity tokenize -m MODEL [--special] (TEXT | --jsonl FILE): prints {"tokens":[...]} per text.
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/common/error.h"

namespace trinity::cli {

void RegisterTokenize(CLI::App& app) {
  struct Flags {
    std::string model, text, jsonl;
    bool special = false;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (no BOS is added)");
  cmd->add_option("-m,--model", f->model, "GGUF model file");
  cmd->add_flag("--special", f->special, "parse special-token text such as <|eot_id|>");
  cmd->add_option("--jsonl", f->jsonl, "read lines of {\"text\": ...} and print one result per line");
  cmd->add_option("text", f->text, "text to tokenize");
  cmd->callback([f] {
    const auto model = LoadModel(f->model);
    const Tokenizer& tokenizer = model->tokenizer();
    auto print = [&](const std::string& text) {
      const nlohmann::json j = {{"tokens", tokenizer.Encode(text, f->special)}};
      std::printf("%s\n", j.dump().c_str());
    };
    if (f->jsonl.empty()) {
      print(f->text);
      return;
    }
    std::ifstream in(f->jsonl);
    if (!in) Fail("cannot open {}", f->jsonl);
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
      if (line.empty()) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        Fail("{}:{}: expected a JSON object with a string \"text\"", f->jsonl, line_no);
      }
      print(j["text"].get<std::string>());
    }
  });
}

}  // namespace trinity::cli
