// Tokenizer micro-benchmarks (Google Benchmark): encode/decode throughput on English prose and
// the cost of building the tokenizer. Reports bytes/s of input text.
//
//   tokenizer_bench [--benchmark_filter=Encode]
// Data: data/llama3/tokenizer.json and tests/data/heldout.txt.
#include <benchmark/benchmark.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

#ifndef TRINITY_SOURCE_DIR
#define TRINITY_SOURCE_DIR "."
#endif

namespace trinity {
namespace {

const std::string kTokenizerJson = TRINITY_SOURCE_DIR "/data/llama3/tokenizer.json";

const TokenizerData& Data() {
  static const TokenizerData data = Tokenizer::DataFromHFJson(kTokenizerJson);
  return data;
}

const Tokenizer& Llama3() {
  static const Tokenizer tokenizer(Data());
  return tokenizer;
}

const std::string& Corpus() {
  static const std::string text = [] {
    // The repository's held-out English prose, repeated to ~4 MB.
    std::ifstream in(TRINITY_SOURCE_DIR "/tests/data/heldout.txt", std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string out;
    while (!buffer.str().empty() && out.size() < 4'000'000) out += buffer.str();
    return out;
  }();
  return text;
}

void BM_Encode(benchmark::State& state) {
  const Tokenizer& tok = Llama3();
  const std::string& text = Corpus();
  if (text.empty()) {
    state.SkipWithError("corpus not found");
    return;
  }
  size_t n_tokens = 0;
  for (auto _ : state) {
    const std::vector<int32_t> ids = tok.Encode(text, /*parse_special=*/false);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
}
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond);

void BM_EncodeParseSpecial(benchmark::State& state) {
  const Tokenizer& tok = Llama3();
  std::string text;
  while (text.size() < (1 << 20)) {
    text += "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>";
  }
  for (auto _ : state) benchmark::DoNotOptimize(tok.Encode(text, /*parse_special=*/true).data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeParseSpecial)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = Llama3();
  const std::string& text = Corpus();
  if (text.empty()) {
    state.SkipWithError("corpus not found");
    return;
  }
  const std::vector<int32_t> ids = tok.Encode(text, false);
  for (auto _ : state) benchmark::DoNotOptimize(tok.Decode(ids).data());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

void BM_StreamDecode(benchmark::State& state) {
  const Tokenizer& tok = Llama3();
  const std::vector<int32_t> ids = tok.Encode("Hello 世界 🦙👍🏽 naïve résumé, the quick brown fox.", false);
  for (auto _ : state) {
    StreamDecoder decoder(tok);
    for (int32_t id : ids) benchmark::DoNotOptimize(decoder.Push(id).data());
    benchmark::DoNotOptimize(decoder.Flush().data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_StreamDecode);

void BM_Build(benchmark::State& state) {
  const TokenizerData& data = Data();
  for (auto _ : state) {
    Tokenizer tok(data);
    benchmark::DoNotOptimize(tok.n_vocab());
  }
}
BENCHMARK(BM_Build)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace trinity

BENCHMARK_MAIN();
