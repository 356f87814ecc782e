// trinity bench --load URL: a running OpenAI-compatible server measured from outside (src/loadgen).
//   --concurrency 1,4,8,16   one level per value: requests/s, output tokens/s, TTFT, TPOT, E2E
//   --soak                   thousands of mixed requests with random client disconnects; fails
//                            unless every other request succeeded and the server's memory is flat
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "engine/common/error.h"
#include "loadgen/loadgen.h"
#include "loadgen/soak.h"

namespace trinity::cli {

namespace {

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int value = 0;
    try {
      value = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || value < 1 || value > 1024) {
      Fail("--concurrency {}: expected a comma-separated list of integers in [1, 1024]", text);
    }
    out.push_back(value);
  }
  if (out.empty()) Fail("--concurrency is empty");
  return out;
}

std::string Dump(const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }

void RunLevels(const LoadFlags& flags, const LoadRunArgs& args, const loadgen::Endpoint& endpoint) {
  loadgen::LoadOptions options;
  if (flags.route == "chat") {
    options.route = loadgen::Route::kChat;
  } else if (flags.route == "completions") {
    options.route = loadgen::Route::kCompletion;
  } else {
    Fail("--route {}: expected chat or completions", flags.route);
  }
  options.max_tokens = args.max_tokens > 0 ? args.max_tokens : 64;
  options.n_requests = flags.requests;
  options.stream = !flags.no_stream;
  const std::string model = loadgen::ServedModel(endpoint);
  std::vector<loadgen::LoadSummary> levels;
  for (int c : ParseList(flags.concurrency.empty() ? "1,4,8,16" : flags.concurrency)) {
    options.concurrency = c;
    if (args.progress) std::fprintf(stderr, "concurrency %d ...\n", c);
    levels.push_back(loadgen::RunLoad(endpoint, options));
  }
  int64_t failed = 0;
  for (const auto& l : levels) failed += l.failed;
  const std::string title = fmt::format("trinity bench --load {} ({}): {} route, {} output tokens per request",
                                        endpoint.scheme_host_port, model, flags.route, options.max_tokens);
  if (!args.plot.empty()) {
    std::ofstream out(args.plot, std::ios::binary);
    out << loadgen::LoadChartSvg(levels, title);
    if (!out) Fail("cannot write {}", args.plot);
  }
  if (args.json) {
    nlohmann::json j = {{"url", endpoint.scheme_host_port},
                        {"model", model},
                        {"route", flags.route},
                        {"max_tokens", options.max_tokens},
                        {"stream", options.stream},
                        {"levels", nlohmann::json::array()}};
    for (const auto& l : levels) j["levels"].push_back(loadgen::ToJson(l));
    std::printf("%s\n", Dump(j).c_str());
  } else {
    std::printf("%s\n\n%s", title.c_str(), loadgen::LoadTable(levels).c_str());
    if (options.stream) {
      std::printf(
          "\nmeasured at the client over streamed requests (ignore_eos, so every answer has the same length): "
          "TTFT = request sent -> first text chunk; TPOT = (end-to-end - TTFT) / (output tokens - 1); output tokens "
          "from the server's usage chunk\n");
    } else {
      std::printf(
          "\nmeasured at the client over non-streamed requests (ignore_eos): end-to-end latency only (no TTFT or "
          "TPOT without chunks); output tokens from the answers' usage\n");
    }
    for (const auto& l : levels) {
      for (const std::string& e : l.errors) std::printf("concurrency %d failure: %s\n", l.concurrency, e.c_str());
    }
    if (!args.plot.empty()) std::printf("chart: %s\n", args.plot.c_str());
  }
  if (failed > 0) Fail("{} request(s) failed", failed);
}

void RunSoakCommand(const LoadFlags& flags, const LoadRunArgs& args, const loadgen::Endpoint& endpoint) {
  loadgen::SoakOptions o;
  if (flags.requests > 0) o.n_requests = flags.requests;
  if (!flags.concurrency.empty()) {
    const std::vector<int> c = ParseList(flags.concurrency);
    if (c.size() != 1) Fail("--soak takes one --concurrency value");
    o.concurrency = c[0];
  }
  if (args.max_tokens > 0) o.max_tokens = args.max_tokens;
  if (!(flags.cancel_fraction >= 0.0 && flags.cancel_fraction <= 1.0)) Fail("--cancel-fraction must be in [0, 1]");
  o.cancel_fraction = flags.cancel_fraction;
  o.seed = args.seed;
  o.server_pid = flags.server_pid;
  o.max_rss_growth_mib = flags.max_rss_growth_mib;
  o.progress = args.progress;
  loadgen::ServedModel(endpoint);  // reachable, and the key works
  const loadgen::SoakResult r = loadgen::RunSoak(endpoint, o);
  if (args.json) {
    std::printf("%s\n", Dump(loadgen::ToJson(r)).c_str());
  } else {
    std::printf("soak: %lld requests in %.1f s from %d clients (max_tokens %d, %.0f%% of streams cut by the client)\n",
                static_cast<long long>(r.requests), r.duration_s, o.concurrency, o.max_tokens, 100 * o.cancel_fraction);
    std::printf("  ok %lld, cancelled on purpose %lld, failed %lld; %lld output tokens\n",
                static_cast<long long>(r.ok), static_cast<long long>(r.cancelled), static_cast<long long>(r.failed),
                static_cast<long long>(r.output_tokens));
    std::string kinds;
    for (const auto& [kind, n] : r.ok_by_kind) kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", kind, n);
    std::printf("  ok by kind: %s\n", kinds.c_str());
    std::printf("  afterwards: /health %s, requests running %lld\n", r.healthy_after ? "200" : "NOT OK",
                static_cast<long long>(r.running_after));
    if (!r.rss.empty()) {
      std::printf("  server RSS (MiB): first %.1f, after 10%% of requests %.1f, last %.1f, max %.1f (%zu samples) -> %s\n",
                  r.rss_first_kib / 1024.0, r.rss_warm_kib / 1024.0, r.rss_last_kib / 1024.0, r.rss_max_kib / 1024.0,
                  r.rss.size(), r.rss_flat ? "flat" : "GROWING");
    }
    for (const std::string& e : r.errors) std::printf("  failure: %s\n", e.c_str());
    std::printf("soak: %s\n", r.passed ? "PASSED" : "FAILED");
  }
  if (!r.passed) Fail("the soak run failed");
}

}  // namespace

void AddLoadFlags(CLI::App& cmd, LoadFlags& f) {
  cmd.add_option("--load", f.url, "measure a running server instead (http://HOST:PORT, e.g. of `trinity serve`)");
  cmd.add_option("--concurrency", f.concurrency, "--load: concurrent clients, a list (default 1,4,8,16; soak: 8)");
  cmd.add_option("--requests", f.requests, "--load: requests per level (default max(32, 4 x concurrency)); "
                                           "--soak: in all (default 3000)");
  cmd.add_option("--api-key", f.api_key, "--load: the server's API key");
  cmd.add_option("--route", f.route, "--load: chat or completions")->capture_default_str();
  cmd.add_flag("--no-stream", f.no_stream, "--load: non-streamed requests (one JSON answer each; end-to-end latency only)");
  cmd.add_flag("--soak", f.soak, "--load: soak run (mixed requests, random disconnects, memory watched)");
  cmd.add_option("--cancel-fraction", f.cancel_fraction, "--soak: fraction of streams the client cuts")
      ->capture_default_str();
  cmd.add_option("--server-pid", f.server_pid, "--soak: the server's process id, to sample its RSS (same machine)");
  cmd.add_option("--max-rss-growth-mib", f.max_rss_growth_mib, "--soak: allowed RSS growth after the warm-up")
      ->capture_default_str();
}

bool RunLoadIfRequested(const LoadFlags& flags, const LoadRunArgs& args) {
  if (flags.url.empty()) {
    if (flags.soak) Fail("--soak needs --load URL");
    return false;
  }
  const loadgen::Endpoint endpoint = loadgen::ParseEndpoint(flags.url, flags.api_key);
  if (flags.soak) {
    RunSoakCommand(flags, args, endpoint);
  } else {
    RunLevels(flags, args, endpoint);
  }
  return true;
}

}  // namespace trinity::cli
