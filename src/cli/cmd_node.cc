// trinity run --task TYPE INPUT: one task request through the node.
// trinity bench: the seed report's multi-task benchmark (three tables, or JSON), the node's
// overhead against the bare engine (--overhead), and llama-bench-style engine figures (--engine);
// --load URL measures a running server instead (cmd_load.cc).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/common/huge_pages.h"
#include "engine/common/error.h"
#include "engine/kernels/cpu.h"
#include "engine/model/generate.h"
#include "node/engine_bench.h"
#include "node/node.h"
#include "node/plot.h"
#include "node/stats.h"
#include "node/suite.h"

namespace trinity::cli {

namespace {

using node::Node;
using node::NodeOptions;
using node::StatsSummary;
using node::TaskRegistry;
using node::TaskRequest;
using node::TaskResult;

std::string Dump(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

TaskRegistry LoadTasks(const std::string& config) {
  TaskRegistry tasks = TaskRegistry::Builtin();
  if (!config.empty()) tasks.LoadFile(config);
  return tasks;
}

// ---- table formatting ----------------------------------------------------------------------

// 58027.4 -> "58,027"
std::string Grouped(double value) {
  const long long n = std::llround(value);
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// Milliseconds for tables: one decimal below 100 ms (fast models answer in a few ms), else grouped.
std::string Ms(double ms) { return ms < 100.0 ? fmt::format("{:.1f}", ms) : Grouped(ms); }

// One line, at most `max_chars` characters (UTF-8 aware), '|' escaped for Markdown.
std::string Cell(std::string_view text, size_t max_chars) {
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (chars == max_chars) {
      out += "...";
      break;
    }
    if (c == '\n' || c == '\r' || c == '\t') {
      out += ' ';
    } else if (c == '|') {
      out += "\\|";
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
    ++chars;
  }
  return out;
}

// A Markdown table (the seed report's format): columns right-aligned where `right` says so.
std::string Table(const std::vector<std::string>& header, const std::vector<bool>& right,
                  const std::vector<std::vector<std::string>>& rows) {
  std::string out = "|";
  for (const std::string& h : header) out += " " + h + " |";
  out += "\n|";
  for (size_t i = 0; i < header.size(); ++i) out += right[i] ? "---:|" : "---|";
  out += "\n";
  for (const auto& row : rows) {
    out += "|";
    for (const std::string& cell : row) out += " " + cell + " |";
    out += "\n";
  }
  return out;
}

std::string DisplayName(const TaskRegistry& tasks, const std::string& name) {
  const node::TaskSpec* spec = tasks.Find(name);
  return spec != nullptr ? spec->display_name : name;
}

std::string AnswerCell(const TaskResult& r) {
  if (r.probabilities.empty()) return Cell(r.output, 40);
  double p = 0.0;
  for (const auto& [label, prob] : r.probabilities) {
    if (label == r.label) p = prob;
  }
  return fmt::format("{} ({:.2f})", Cell(r.label, 20), p);
}

std::string ResultsTable(const TaskRegistry& tasks, const std::vector<TaskResult>& results) {
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < results.size(); ++i) {
    const TaskResult& r = results[i];
    rows.push_back({std::to_string(i + 1), DisplayName(tasks, r.task), "\"" + Cell(r.input, 32) + "\"",
                    AnswerCell(r), std::to_string(r.prompt_tokens), std::to_string(r.generated_tokens),
                    Ms(r.ttft_ms), Ms(r.total_ms), fmt::format("{:.1f}", r.tok_per_s)});
  }
  return Table({"#", "Task Type", "Input (truncated)", "Output (truncated)", "Prompt", "Tokens", "TTFT (ms)",
                "Time (ms)", "tok/s"},
               {true, false, false, false, true, true, true, true, true}, rows);
}

std::string SummaryTable(const StatsSummary& s) {
  std::vector<std::vector<std::string>> rows = {
      {"Total Requests", std::to_string(s.requests)},
      {"Total Tokens", fmt::format("{} generated ({} prompt)", s.generated_tokens, s.prompt_tokens)},
      {"Total Time", Ms(s.total_ms) + " ms"},
      {"**Average Speed**", fmt::format("**{:.1f} tok/s**", s.avg_tok_per_s)},
      {"Min Speed", fmt::format("{:.1f} tok/s", s.min_tok_per_s)},
      {"Max Speed", fmt::format("{:.1f} tok/s", s.max_tok_per_s)},
      {"Throughput", fmt::format("{:.1f} tokens/minute ({:.1f} tok/s)", s.tokens_per_minute, s.throughput_tok_per_s)},
      {"TTFT p50 / p90 / p99", fmt::format("{} / {} / {} ms", Ms(s.ttft_p50_ms), Ms(s.ttft_p90_ms), Ms(s.ttft_p99_ms))},
  };
  return Table({"Metric", "Value"}, {false, false}, rows);
}

std::string ByTaskTable(const TaskRegistry& tasks, const std::vector<std::pair<std::string, StatsSummary>>& by_task) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& [task, s] : by_task) {
    rows.push_back({DisplayName(tasks, task), std::to_string(s.requests), std::to_string(s.generated_tokens),
                    fmt::format("{:.1f} tok/s", s.avg_tok_per_s), Ms(s.ttft_p50_ms), Ms(s.avg_total_ms)});
  }
  return Table({"Task Type", "Requests", "Tokens", "Avg Speed", "TTFT p50 (ms)", "Avg Time (ms)"},
               {false, true, true, true, true, true}, rows);
}

// ---- progress ------------------------------------------------------------------------------

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO) == 1) {}
  void Show(size_t done, size_t total, std::string_view what) {
    if (!enabled_) return;
    std::fprintf(stderr, "\r\033[K[%zu/%zu] %s", done, total, Cell(what, 60).c_str());
    std::fflush(stderr);
  }
  void Done() {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
};

// ---- bench ---------------------------------------------------------------------------------

struct BenchFlags {
  std::string model, suite, plot, tasks_config, prompt_mode = "auto";
  int threads = 0;
  int64_t n_ctx = 0;
  int repeat = 1;
  int32_t max_tokens = 0;
  bool json = false, free_text = false, no_progress = false, overhead = false, no_warmup = false;
  // --engine
  bool engine = false;
  int64_t n_prompt = 512, n_gen = 128, depth = 0;
  int repetitions = 1;
  int64_t bandwidth_mib = 512;
  bool no_alternate = false;
  std::vector<int> streams;  // aggregate decode of N concurrent streams (continuous batching)
  int n_seq = 0;  // --batch: batched decode of this many sequences (GPU)
  std::string lm_head = "file";
  SamplingParams sampling;
  std::string device = "auto";
  std::string kv_cache = "f32";
};

NodeOptions MakeNodeOptions(const BenchFlags& f) {
  NodeOptions options;
  options.context.n_ctx = f.n_ctx;
  options.context.n_threads = f.threads;
  options.context.device = ParseDevice(f.device);
  options.context.kv_cache = ParseKvCacheType(f.kv_cache);
  options.prompt_mode = node::ParsePromptMode(f.prompt_mode);
  options.free_text = f.free_text;
  options.sampling = f.sampling;
  return options;
}

node::Suite LoadBenchSuite(const BenchFlags& f, const TaskRegistry& tasks) {
  node::Suite suite = node::LoadSuite(f.suite.empty() ? node::DefaultSuitePath() : f.suite, &tasks);
  if (f.max_tokens > 0) {
    for (TaskRequest& r : suite.requests) r.max_tokens = f.max_tokens;
  }
  return suite;
}

std::string Header(const Model& model, Node& node, const BenchFlags& f, const node::Suite& suite) {
  return fmt::format("model: {} ({}) | threads: {} | context: {} | prompts: {} | answers: {} | suite: {} x{}\n",
                     model.config().name, ResolveModelPath(f.model), node.context().pool().n_threads(),
                     node.context().n_ctx(), node.uses_chat() ? "chat template" : "raw template",
                     f.free_text ? "free text (seed)" : "labels", suite.name.empty() ? f.suite : suite.name, f.repeat);
}

// One short request before measuring, like llama-bench's warm-up run: the first touches of the
// mapped weights and the KV cache would otherwise be charged to request 1.
void Warmup(Node& node, const node::Suite& suite) {
  TaskRequest request = suite.requests.front();
  request.max_tokens = 2;
  node.Process(request);
}

void RunSuiteBench(const BenchFlags& f) {
  const TaskRegistry tasks = LoadTasks(f.tasks_config);
  const node::Suite suite = LoadBenchSuite(f, tasks);
  const auto model = LoadModel(f.model);
  Node node(*model, tasks, MakeNodeOptions(f));
  if (!f.no_warmup) Warmup(node, suite);
  node::Stats stats;
  Progress progress(!f.no_progress);
  const size_t total = suite.requests.size() * static_cast<size_t>(f.repeat);
  for (int rep = 0; rep < f.repeat; ++rep) {
    for (const TaskRequest& request : suite.requests) {
      progress.Show(stats.results().size() + 1, total, request.task + ": " + request.input);
      stats.Add(node.Process(request));
    }
  }
  progress.Done();
  std::vector<std::pair<std::string, StatsSummary>> by_task = stats.ByTask();
  if (!f.plot.empty()) {
    std::vector<std::pair<std::string, StatsSummary>> named;
    for (const auto& [task, s] : by_task) named.emplace_back(DisplayName(tasks, task), s);
    std::ofstream out(f.plot, std::ios::binary);
    out << node::ByTaskChartSvg(named, fmt::format("trinity bench: {}, {} requests", model->config().name,
                                                   stats.results().size()));
    if (!out) Fail("cannot write {}", f.plot);
  }
  if (f.json) {
    nlohmann::json j = stats.ToJson();
    j["model"] = model->config().name;
    j["threads"] = node.context().pool().n_threads();
    j["prompt_mode"] = node.uses_chat() ? "chat" : "raw";
    j["free_text"] = f.free_text;
    std::printf("%s\n", Dump(j).c_str());
    return;
  }
  std::printf("%s\n", Header(*model, node, f, suite).c_str());
  std::printf("### Individual Results\n\n%s\n", ResultsTable(tasks, stats.results()).c_str());
  std::printf("### Summary Statistics\n\n%s\n", SummaryTable(stats.Summary()).c_str());
  std::printf("### By Task Type\n\n%s", ByTaskTable(tasks, by_task).c_str());
  std::printf(
      "\ntok/s: generated tokens over the time after the prefill (label answers: label tokens scored); "
      "throughput: generated tokens over total time.\n");
  if (!f.plot.empty()) std::printf("chart: %s\n", f.plot.c_str());
}

// The node against the engine alone, on the same prompts, the same context and the same sampler
// seed (so both generate the same tokens): wall time around Generate() with the prompt already
// tokenized, against wall time around Node::Process() from text (template, tokenization, result
// building included). Label and first-word answers are switched to free text so both sides do
// the same generation. Each request runs --repeat times on each side, alternating which goes
// first; the headline ratio uses each request's fastest run per side (interference from other
// processes only ever adds time, so the minimum is the stable estimate on a shared machine), the
// mean is reported beside it.
void RunOverheadBench(BenchFlags f) {
  f.free_text = true;
  const TaskRegistry tasks = LoadTasks(f.tasks_config);
  const node::Suite suite = LoadBenchSuite(f, tasks);
  const auto model = LoadModel(f.model);
  Node node(*model, tasks, MakeNodeOptions(f));
  if (!f.no_warmup) Warmup(node, suite);
  struct Side {
    int64_t generated = 0;      // one pass over the suite
    double best_ms = 0.0;       // sum over requests of the fastest run
    double mean_ms = 0.0;       // sum over requests of the mean run
    double decode_best_ms = 0.0;
  } engine_side, node_side;
  double node_own_ms = 0.0;
  Progress progress(!f.no_progress);
  const size_t total = suite.requests.size() * static_cast<size_t>(f.repeat);
  size_t done = 0;
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  for (size_t i = 0; i < suite.requests.size(); ++i) {
    const TaskRequest& request = suite.requests[i];
    const node::TaskSpec& spec = tasks.Get(request.task);
    const std::vector<int32_t> prompt = node.PromptTokens(node.Prompt(spec, request.input));
    GenerateOptions options;
    options.max_tokens = request.max_tokens.value_or(spec.default_max_tokens);
    options.stop = spec.stop;
    double engine_best = 0, engine_sum = 0, engine_decode = 0, node_best = 0, node_sum = 0, node_decode = 0;
    double node_own = 0;  // fastest node_ms: the node's own work, outside the engine
    int64_t engine_tokens = 0, node_tokens = 0;
    auto run_engine = [&](int rep) {
      // A caller of the engine builds (and frees) a sampler per request too.
      const auto start = Clock::now();
      GenerateResult g;
      {
        Context& context = node.context();
        context.Reset();
        Sampler sampler(f.sampling);
        g = Generate(context, sampler, prompt, options);
      }
      const double ms = ms_since(start);
      engine_sum += ms;
      if (rep == 0 || ms < engine_best) {
        engine_best = ms;
        engine_decode = g.generate_ms;
      }
      engine_tokens = g.n_generated();
    };
    auto run_node = [&](int rep) {
      const auto start = Clock::now();
      const TaskResult r = node.Process(request);
      const double ms = ms_since(start);
      node_sum += ms;
      if (rep == 0 || ms < node_best) {
        node_best = ms;
        node_decode = r.tok_per_s > 0 ? static_cast<double>(r.generated_tokens) * 1000.0 / r.tok_per_s : 0.0;
      }
      node_tokens = r.generated_tokens;
      if (rep == 0 || r.node_ms < node_own) node_own = r.node_ms;
    };
    for (int rep = 0; rep < f.repeat; ++rep) {
      progress.Show(++done, total, request.task + ": " + request.input);
      if ((rep + i) % 2 == 0) {
        run_engine(rep);
        run_node(rep);
      } else {
        run_node(rep);
        run_engine(rep);
      }
    }
    if (engine_tokens != node_tokens) {
      Fail("request {}: the engine generated {} tokens and the node {} (they must match)", i + 1, engine_tokens,
           node_tokens);
    }
    for (auto [side, best, sum, decode, tokens] :
         {std::tuple{&engine_side, engine_best, engine_sum, engine_decode, engine_tokens},
          std::tuple{&node_side, node_best, node_sum, node_decode, node_tokens}}) {
      side->generated += tokens;
      side->best_ms += best;
      side->mean_ms += sum / f.repeat;
      side->decode_best_ms += decode;
    }
    node_own_ms += node_own;
  }
  progress.Done();
  auto per_s = [](int64_t n, double ms) { return ms > 0.0 ? static_cast<double>(n) * 1000.0 / ms : 0.0; };
  const double ratio = node_side.best_ms > 0.0 ? engine_side.best_ms / node_side.best_ms : 0.0;
  const double ratio_mean = node_side.mean_ms > 0.0 ? engine_side.mean_ms / node_side.mean_ms : 0.0;
  const double own_pct = node_side.best_ms > 0.0 ? node_own_ms / node_side.best_ms * 100.0 : 0.0;
  auto side_json = [&](const Side& s) {
    return nlohmann::json{{"generated_tokens", s.generated},
                          {"wall_ms", s.best_ms},
                          {"tok_per_s", per_s(s.generated, s.best_ms)},
                          {"mean_wall_ms", s.mean_ms},
                          {"mean_tok_per_s", per_s(s.generated, s.mean_ms)},
                          {"decode_tok_per_s", per_s(s.generated, s.decode_best_ms)}};
  };
  if (f.json) {
    const nlohmann::json j = {{"engine", side_json(engine_side)},
                              {"node", side_json(node_side)},
                              {"ratio", ratio},
                              {"overhead_pct", (1.0 - ratio) * 100.0},
                              {"ratio_mean", ratio_mean},
                              {"node_own_ms", node_own_ms},
                              {"node_own_pct", own_pct},
                              {"requests", suite.requests.size()},
                              {"repeat", f.repeat},
                              {"threads", node.context().pool().n_threads()}};
    std::printf("%s\n", Dump(j).c_str());
    return;
  }
  std::printf("model: %s | threads: %d | %zu requests x %d runs per side, free-text generation on both sides\n\n",
              model->config().name.c_str(), node.context().pool().n_threads(), suite.requests.size(), f.repeat);
  std::vector<std::vector<std::string>> rows;
  for (const auto& [name, s] :
       {std::pair{"engine alone (Generate)", engine_side}, std::pair{"node (Process)", node_side}}) {
    rows.push_back({name, std::to_string(s.generated), Ms(s.best_ms), fmt::format("{:.2f}", per_s(s.generated, s.best_ms)),
                    fmt::format("{:.2f}", per_s(s.generated, s.mean_ms)),
                    fmt::format("{:.2f}", per_s(s.generated, s.decode_best_ms))});
  }
  std::printf("%s", Table({"Path", "Tokens", "Wall, best (ms)", "tok/s (best)", "tok/s (mean)", "tok/s (decode)"},
                          {false, true, true, true, true, true}, rows)
                        .c_str());
  std::printf("\nnode / engine tok/s: %.4f (overhead %.2f%%); from means: %.4f\n", ratio, (1.0 - ratio) * 100.0,
              ratio_mean);
  std::printf("node's own time (templating, tokenizing, results; outside the engine): %.3f ms of %s ms = %.3f%%\n",
              node_own_ms, Ms(node_side.best_ms).c_str(), own_pct);
}

void RunEngineBenchCommand(const BenchFlags& f) {
  const auto model = LoadModel(f.model);
  node::EngineBenchOptions options;
  options.n_prompt = f.n_prompt;
  options.n_gen = f.n_gen;
  options.depth = f.depth;
  options.threads = f.threads;
  options.repetitions = f.repetitions;
  options.bandwidth_bytes = f.bandwidth_mib << 20;
  options.alternate = !f.no_alternate;
  options.device = ParseDevice(f.device);
  options.n_seq = f.n_seq;
  options.lm_head = ParseLmHeadFormat(f.lm_head);
  options.kv_cache = ParseKvCacheType(f.kv_cache);
  const node::EngineBenchResult r = node::RunEngineBench(*model, options);
  std::vector<node::StreamsBenchResult> streams;
  for (int n : f.streams)
    streams.push_back(node::RunStreamsBench(*model, n, f.n_gen, f.threads, options.lm_head, options.kv_cache));
  const bool gpu = r.device == Device::kCuda;
  const int64_t huge_page_bytes = AnonHugePageBytes();  // the copied weights' pages, mostly
  if (f.json) {
    nlohmann::json j = {{"pp_tok_per_s", r.pp_tok_per_s}, {"tg_tok_per_s", r.tg_tok_per_s},
                        {"bytes_per_token", r.bytes_per_token}, {"kv_bytes_per_token", r.kv_bytes_per_token},
                        {"depth", f.depth}, {"read_gbps", r.read_gbps},
                        {"roofline_pct", r.roofline_pct}, {"threads", r.threads},
                        {"tg_alternated_tok_per_s", r.tg_alternated_tok_per_s},
                        {"read_alternated_gbps", r.read_alternated_gbps},
                        {"roofline_alternated_pct", r.roofline_alternated_pct},
                        {"prefetch", kernels::StreamPrefetchName(r.prefetch_mode)},
                        {"prefetch_on_calls", r.prefetch_on_calls}, {"prefetch_off_calls", r.prefetch_off_calls},
                        {"lm_head", LmHeadFormatName(options.lm_head)}, {"kv_cache", KvCacheTypeName(options.kv_cache)},
                        {"peak_rss_bytes", r.peak_rss_bytes},
                        {"model_file_bytes", r.model_file_bytes},
                        {"weights", WeightPlacementName(model->weight_placement())},
                        {"huge_page_bytes", huge_page_bytes}};
    if (!streams.empty()) {
      j["streams"] = nlohmann::json::array();
      for (const auto& s : streams) {
        j["streams"].push_back({{"streams", s.streams}, {"tok_per_s", s.tok_per_s}, {"mean_batch_rows", s.mean_batch_rows},
                                 {"ms_per_step", s.ms_per_step}, {"busy_fraction", s.busy_fraction}});
      }
    }
    if (gpu) {  // the CPU document keeps exactly its documented keys
      j["device"] = DeviceName(r.device);
      j["device_name"] = r.device_name;
      j["pp_ms"] = r.pp_tok_per_s > 0 ? static_cast<double>(f.n_prompt) * 1e3 / r.pp_tok_per_s : 0.0;
      j["tg_greedy_tok_per_s"] = r.tg_greedy_tok_per_s;
      j["n_seq"] = r.n_seq;
      j["tg_batch_tok_per_s"] = r.tg_batch_tok_per_s;
    }
    std::printf("%s\n", Dump(j).c_str());
    return;
  }
  const double mib = static_cast<double>(r.bytes_per_token) / (1 << 20);
  const double weight_mib = static_cast<double>(r.bytes_per_token - r.kv_bytes_per_token) / (1 << 20);
  std::vector<std::vector<std::string>> rows;
  const std::string name = model->config().name.empty() ? "model" : model->config().name;
  const std::string backend = gpu ? "CUDA" : "CPU";
  const std::string threads = gpu ? "-" : std::to_string(r.threads);
  const std::string at_depth = f.depth > 0 ? fmt::format(" @ d{}", f.depth) : "";
  if (f.n_prompt > 0) {
    rows.push_back({name, fmt::format("{:.2f} MiB", weight_mib), backend, threads,
                    fmt::format("pp{}{}", f.n_prompt, at_depth), fmt::format("{:.2f}", r.pp_tok_per_s)});
  }
  if (f.n_gen > 0) {
    rows.push_back({name, fmt::format("{:.2f} MiB", weight_mib), backend, threads,
                    fmt::format("tg{}{}", f.n_gen, at_depth), fmt::format("{:.2f}", r.tg_tok_per_s)});
    if (gpu) {
      rows.push_back({name, fmt::format("{:.2f} MiB", weight_mib), backend, threads,
                      fmt::format("tg{} greedy on GPU", f.n_gen), fmt::format("{:.2f}", r.tg_greedy_tok_per_s)});
    }
    if (gpu && r.n_seq > 0) {
      rows.push_back({name, fmt::format("{:.2f} MiB", weight_mib), backend, threads,
                      fmt::format("tg{} x{} seqs (aggregate)", f.n_gen, r.n_seq), fmt::format("{:.2f}", r.tg_batch_tok_per_s)});
    }
  }
  std::printf("%s", Table({"model", "weights/token", "backend", "threads", "test", "t/s"},
                          {false, true, false, true, false, true}, rows)
                        .c_str());
  const double ceiling = r.bytes_per_token > 0 ? r.read_gbps * 1e9 / static_cast<double>(r.bytes_per_token) : 0.0;
  std::printf("\nbytes read per token: %s (%.2f MiB)", Grouped(static_cast<double>(r.bytes_per_token)).c_str(), mib);
  if (r.kv_bytes_per_token > 0) {
    std::printf(", of which KV cache %s (tg's mean position)", Grouped(static_cast<double>(r.kv_bytes_per_token)).c_str());
  }
  std::printf("\n");
  if (gpu) {
    std::printf("device: %s\n", r.device_name.c_str());
    std::printf("device copy bandwidth: %.2f GB/s (read + write, %lld MiB buffer)\n", r.read_gbps,
                static_cast<long long>(f.bandwidth_mib));
    if (f.n_prompt > 0 && r.pp_tok_per_s > 0) std::printf("pp%lld: %.2f ms\n", static_cast<long long>(f.n_prompt), f.n_prompt * 1e3 / r.pp_tok_per_s);
    std::printf("roofline: %.1f tok/s; greedy tg reaches %.1f%% of it\n", ceiling, r.roofline_pct);
  } else {
    std::printf("memory read bandwidth: %.2f GB/s (%d threads, %lld MiB buffer)\n", r.read_gbps, r.threads,
                static_cast<long long>(f.bandwidth_mib));
    std::printf("roofline: %.1f tok/s; tg reaches %.1f%% of it\n", ceiling, r.roofline_pct);
    if (r.read_alternated_gbps > 0.0) {
      std::printf("alternated (a probe pass after each of %lld tg tokens): tg %.2f tok/s, read bandwidth %.2f GB/s; "
                  "tg reaches %.1f%% of the roofline\n",
                  static_cast<long long>(f.n_gen), r.tg_alternated_tok_per_s, r.read_alternated_gbps,
                  r.roofline_alternated_pct);
    }
    std::printf("row-stream prefetch: %s (tg's decode GEMV calls: %llu with, %llu without)\n",
                kernels::StreamPrefetchName(r.prefetch_mode), static_cast<unsigned long long>(r.prefetch_on_calls),
                static_cast<unsigned long long>(r.prefetch_off_calls));
  }
  std::printf("LM head: %s | KV cache: %s | peak resident memory: %.1f MiB = %.2f x the model file (%.1f MiB)\n",
              LmHeadFormatName(options.lm_head), KvCacheTypeName(options.kv_cache), r.peak_rss_bytes / 1048576.0,
              r.model_file_bytes ? static_cast<double>(r.peak_rss_bytes) / static_cast<double>(r.model_file_bytes) : 0.0,
              r.model_file_bytes / 1048576.0);
  std::printf("weights: %s", WeightPlacementName(model->weight_placement()));
  if (model->weight_placement() == WeightPlacement::kCopy) {
    std::printf(" (a private copy; anonymous memory in 2 MiB pages now: %s)",
                huge_page_bytes < 0 ? "unknown" : fmt::format("{:.1f} MiB", huge_page_bytes / 1048576.0).c_str());
  } else {
    std::printf(" (in place in the file's mapping)");
  }
  std::printf("\n");
  if (streams.empty()) return;
  // Ratios against the first row (normally --streams 1,...): measured in this run, side by side.
  std::vector<std::vector<std::string>> srows;
  for (const auto& s : streams) {
    srows.push_back({fmt::format("tg{} x{}", f.n_gen, s.streams), fmt::format("{:.2f}", s.tok_per_s),
                     fmt::format("{:.2f}", s.tok_per_s / s.streams),
                     fmt::format("{:.2f}x", s.tok_per_s / streams.front().tok_per_s),
                     fmt::format("{:.2f}", s.mean_batch_rows), fmt::format("{:.1f}", s.ms_per_step),
                     fmt::format("{:.0f}%", 100.0 * s.busy_fraction)});
  }
  std::printf("\nconcurrent streams (continuous batching above one stream):\n%s",
              Table({"test", "total t/s", "t/s per stream", fmt::format("vs x{}", streams.front().streams), "rows/step", "ms/step",
                     "in steps"},
                    {false, true, true, true, true, true, true}, srows)
                  .c_str());
}

}  // namespace

// ---- trinity run --task ----------------------------------------------------------------------

void AddTaskFlags(CLI::App& cmd, TaskRunFlags& flags) {
  cmd.add_option("--task", flags.task, "answer a task request (generation, qa, sentiment, topic, summarize, ...)");
  cmd.add_option("input", flags.input, "the task's input text (with --task)");
  cmd.add_option("--tasks-config", flags.tasks_config, "JSON file declaring more task types");
  cmd.add_flag("--free-text", flags.free_text, "label/one-word tasks generate free text like the seed's node");
  cmd.add_option("--prompt-mode", flags.prompt_mode, "auto (chat template when the model has one), chat or raw")
      ->capture_default_str();
}

bool RunTaskIfRequested(const TaskRunFlags& flags, const TaskRunArgs& args) {
  if (flags.task.empty()) {
    if (!flags.input.empty()) Fail("INPUT is read with --task only (use -p PROMPT for plain generation)");
    return false;
  }
  if (!flags.input.empty() && !args.prompt.empty()) Fail("give the input once: INPUT or -p");
  TaskRegistry tasks = LoadTasks(flags.tasks_config);
  tasks.Get(flags.task);  // unknown task: fail before loading the model
  TaskRequest request;
  request.task = flags.task;
  request.input = flags.input.empty() ? args.prompt : flags.input;
  request.max_tokens = args.max_tokens;
  request.sampling = args.sampling;
  const auto model = LoadModel(args.model);
  NodeOptions options;
  options.context.n_ctx = args.n_ctx;
  options.context.n_threads = args.threads;
  options.context.device = ParseDevice(args.device);
  options.context.kv_cache = ParseKvCacheType(args.kv_cache);
  options.prompt_mode = node::ParsePromptMode(flags.prompt_mode);
  options.free_text = flags.free_text;
  Node node(*model, std::move(tasks), options);
  const TaskResult r = node.Process(request);
  if (args.json) {
    std::printf("%s\n", node::ToJson(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return true;
  }
  std::printf("%s\n", r.output.c_str());
  if (!r.probabilities.empty()) {
    std::string line;
    for (const auto& [label, p] : r.probabilities) line += fmt::format("{}{} {:.3f}", line.empty() ? "" : " | ", label, p);
    std::fprintf(stderr, "[%s]\n", line.c_str());
  }
  std::fprintf(stderr, "[%s | prompt: %lld tokens (%s) | generated: %lld tokens, %.2f tok/s | ttft %.1f ms | total %.1f ms | finish: %s]\n",
               r.task.c_str(), static_cast<long long>(r.prompt_tokens), node.uses_chat() ? "chat" : "raw",
               static_cast<long long>(r.generated_tokens), r.tok_per_s, r.ttft_ms, r.total_ms, r.finish_reason.c_str());
  return true;
}

// ---- trinity bench -------------------------------------------------------------------------

void RegisterBench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  auto* cmd = app.add_subcommand(
      "bench", "Multi-task benchmark (the seed's 10 requests by default), node overhead, or engine figures");
  cmd->add_option("-m,--model", f->model, "GGUF model file (default: $TRINITY_MODEL or the built-in model)");
  cmd->add_option("-t,--threads", f->threads, "threads (0 = all cores)");
  cmd->add_option("-c,--ctx", f->n_ctx, "context size (0 = the model's, at most 4096)");
  cmd->add_flag("--json", f->json, "print one JSON document instead of tables");
  cmd->add_option("--suite", f->suite, "benchmark suite (JSON; default: data/bench/seed_suite.json)");
  cmd->add_option("--repeat", f->repeat, "run the suite N times")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-tokens", f->max_tokens, "override every request's token limit");
  cmd->add_option("--plot", f->plot, "write an SVG chart of tok/s and time to first token by task");
  cmd->add_option("--tasks-config", f->tasks_config, "JSON file declaring more task types");
  cmd->add_flag("--free-text", f->free_text, "label/one-word tasks generate free text like the seed's node");
  cmd->add_option("--prompt-mode", f->prompt_mode, "auto (chat template when the model has one), chat or raw")
      ->capture_default_str();
  cmd->add_flag("--no-progress", f->no_progress, "no progress display on stderr");
  cmd->add_flag("--no-warmup", f->no_warmup, "measure from the first request (no unrecorded warm-up request)");
  cmd->add_flag("--overhead", f->overhead, "compare the node against the engine alone on the suite's prompts");
  cmd->add_flag("--engine", f->engine, "llama-bench-style pp/tg tok/s, bytes per token, bandwidth, roofline");
  cmd->add_option("-p,--n-prompt", f->n_prompt, "--engine: prompt tokens (pp)")->capture_default_str();
  cmd->add_option("-n,--n-gen", f->n_gen, "--engine: generated tokens (tg)")->capture_default_str();
  cmd->add_option("-d,--depth", f->depth, "--engine: tokens already in the context before each pp and tg test")
      ->capture_default_str();
  cmd->add_option("--lm-head", f->lm_head, "--engine: " "LM head weights: file (the model's own, default) or q8 (8-bit copy made at load: faster, changes logits slightly)");
  cmd->add_option("-r,--repetitions", f->repetitions, "--engine: repetitions averaged")->capture_default_str();
  cmd->add_option("--bw-mib", f->bandwidth_mib, "--engine: bandwidth-benchmark buffer (MiB)")->capture_default_str();
  cmd->add_flag("--no-alternate", f->no_alternate,
                "--engine on the CPU: skip the alternated roofline (tg again, a bandwidth-probe pass after every token)");
  cmd->add_option("--streams", f->streams, "--engine: also decode N streams at once, e.g. 1,8 (continuous batching)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  cmd->add_option("--batch", f->n_seq, "--engine on a GPU: also decode this many sequences at once (aggregate tok/s)")
      ->capture_default_str();
  AddDeviceFlag(*cmd, f->device);
  AddKvCacheFlag(*cmd, f->kv_cache);
  AddSamplingFlags(*cmd, f->sampling);
  auto load = std::make_shared<LoadFlags>();
  AddLoadFlags(*cmd, *load);
  cmd->callback([f, load] {
    if (RunLoadIfRequested(*load, {f->json, !f->no_progress, f->plot, f->max_tokens, f->sampling.seed})) return;
    Validate(f->sampling);
    if (f->engine && f->overhead) Fail("--engine and --overhead are separate benchmarks: give one");
    if (f->engine) {
      RunEngineBenchCommand(*f);
    } else if (f->overhead) {
      RunOverheadBench(*f);
    } else {
      RunSuiteBench(*f);
    }
  });
}

}  // namespace trinity::cli
