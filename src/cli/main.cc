// trinity: the command-line front end of the Trinity BitNet b1.58 engine.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "engine/common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Trinity: inference engine for BitNet b1.58 models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "trinity 0.1.0");
  trinity::cli::RegisterInfo(app);
  trinity::cli::RegisterTokenize(app);
  trinity::cli::RegisterRun(app);
  trinity::cli::RegisterChat(app);
  trinity::cli::RegisterLogits(app);
  trinity::cli::RegisterSynth(app);
  trinity::cli::RegisterConvert(app);
  trinity::cli::RegisterPerplexity(app);
  trinity::cli::RegisterPull(app);
  trinity::cli::RegisterModels(app);
  trinity::cli::RegisterBench(app);
  trinity::cli::RegisterServe(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const trinity::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
