// A load generator for OpenAI-compatible servers (`trinity serve`, or any llama.cpp / vLLM style
// server): closed-loop clients at a fixed concurrency, each sending streamed requests and timing
// them from the SSE chunks as they arrive, the way vLLM's `bench serve` measures (at the client):
//
//   time to first token (TTFT)   request sent -> first chunk with text
//   time per output token (TPOT) (end-to-end - TTFT) / (output tokens - 1)
//   inter-token latency (ITL)    gaps between text chunks
//   end-to-end latency           request sent -> [DONE]
//
// Output tokens are the server's own count (stream_options.include_usage), not chunks. An HTTP
// client only: no engine, no model; it links cpp-httplib and nlohmann_json.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace trinity::loadgen {

// "http://host:port" with an optional trailing "/" or "/v1" (what OpenAI clients take as base URL).
struct Endpoint {
  std::string scheme_host_port;  // "http://127.0.0.1:8080"
  std::string api_key;           // "" -> no Authorization header
};
Endpoint ParseEndpoint(const std::string& url, const std::string& api_key = "");

// The id of the model the server serves (GET /v1/models); throws trinity::Error saying why when
// the server cannot be reached or refuses the key.
std::string ServedModel(const Endpoint& endpoint);

// Incremental server-sent-events reader: feed bytes as they arrive, get each event's data.
class SseReader {
 public:
  // Appends `bytes`; returns the data payloads of the events completed by them ("data: X\n\n" -> "X").
  std::vector<std::string> Feed(std::string_view bytes);
  bool framing_ok() const { return framing_ok_; }   // every event was one "data: " line
  bool empty() const { return buffer_.empty(); }     // nothing after the last event

 private:
  std::string buffer_;
  bool framing_ok_ = true;
};

enum class Route { kChat, kCompletion, kTask };
const char* RouteName(Route route);

struct RequestSpec {
  Route route = Route::kChat;
  bool stream = true;                  // chat and completions only
  std::string text;                    // the user message, prompt or task input
  std::string task;                    // kTask: the task name
  int32_t max_tokens = 64;
  bool ignore_eos = true;              // fixed output lengths, as benchmarks use
  int cancel_after_chunks = 0;         // > 0: disconnect after this many text chunks (streams)
  double timeout_s = 600.0;
};

enum class Outcome { kOk, kCancelled, kFailed };

struct RequestResult {
  Outcome outcome = Outcome::kFailed;
  int status = 0;                      // HTTP status; 0: no response
  std::string error;                   // why it failed
  double ttft_ms = -1.0;               // -1: no text arrived (or not streamed)
  double e2e_ms = 0.0;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  std::vector<double> itl_ms;          // gaps between text chunks
  double tpot_ms() const;              // -1 when fewer than 2 output tokens or no TTFT
};

// Sends one request and times it. Never throws for what the server does: failures are results.
RequestResult SendRequest(const Endpoint& endpoint, const RequestSpec& spec);

// Summary statistics of a set of values.
struct Distribution {
  double mean = 0.0, p50 = 0.0, p90 = 0.0, p99 = 0.0, max = 0.0;
  int64_t n = 0;
};
// Linear interpolation between closest ranks (numpy's default), like node::Percentile.
double Percentile(std::vector<double> values, double p);
Distribution Distribute(const std::vector<double>& values);

struct LoadOptions {
  int concurrency = 1;
  int n_requests = 0;                  // total over all clients; 0 -> max(32, 4 * concurrency)
  int32_t max_tokens = 64;
  Route route = Route::kChat;
  bool stream = true;                  // false: plain JSON answers (no TTFT, TPOT or ITL; the client parses one body per request)
  std::vector<std::string> prompts;    // cycled; empty -> a built-in set
  bool warmup = true;                  // one unrecorded request per client first
};

struct LoadSummary {
  int concurrency = 0;
  int64_t requests = 0;                // completed (ok)
  int64_t failed = 0;
  std::vector<std::string> errors;     // the first few failures
  double duration_s = 0.0;             // first send -> last completion
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  double requests_per_s = 0.0;
  double output_tok_per_s = 0.0;
  Distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;
};

// Runs `n_requests` requests (streamed unless options.stream is false) from `concurrency` closed-loop clients.
LoadSummary RunLoad(const Endpoint& endpoint, const LoadOptions& options);
nlohmann::json ToJson(const LoadSummary& summary);
// The results table (markdown): one row per concurrency level.
std::string LoadTable(const std::vector<LoadSummary>& levels);
// An SVG chart: throughput (output tok/s, requests/s) and latency (TTFT, TPOT, end-to-end, p50
// and p99) against concurrency.
std::string LoadChartSvg(const std::vector<LoadSummary>& levels, std::string_view title);

// The prompts RunLoad cycles through by default.
const std::vector<std::string>& DefaultPrompts();

}  // namespace trinity::loadgen
