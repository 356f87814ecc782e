#include "loadgen/loadgen.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "engine/common/error.h"

namespace trinity::loadgen {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double MsSince(Clock::time_point start, Clock::time_point now = Clock::now()) {
  return std::chrono::duration<double, std::milli>(now - start).count();
}

const char* Path(Route route) {
  switch (route) {
    case Route::kChat: return "/v1/chat/completions";
    case Route::kCompletion: return "/v1/completions";
    case Route::kTask: return "/v1/tasks";
  }
  return "";
}

json RequestBody(const RequestSpec& spec) {
  json body;
  switch (spec.route) {
    case Route::kChat: body["messages"] = json::array({{{"role", "user"}, {"content", spec.text}}}); break;
    case Route::kCompletion: body["prompt"] = spec.text; break;
    case Route::kTask:
      body["task"] = spec.task;
      body["input"] = spec.text;
      body["max_tokens"] = spec.max_tokens;
      return body;
  }
  body["max_tokens"] = spec.max_tokens;
  if (spec.ignore_eos) body["ignore_eos"] = true;
  if (spec.stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  return body;
}

// The text of a chat or completion chunk ("" for role-only, final and usage chunks).
std::string ChunkText(const json& chunk) {
  if (!chunk.contains("choices") || !chunk["choices"].is_array() || chunk["choices"].empty()) return "";
  const json& c = chunk["choices"][0];
  if (c.contains("delta") && c["delta"].is_object() && c["delta"].contains("content") &&
      c["delta"]["content"].is_string()) {
    return c["delta"]["content"].get<std::string>();
  }
  if (c.contains("text") && c["text"].is_string()) return c["text"].get<std::string>();
  return "";
}

std::string Shorten(std::string text, size_t n = 200) {
  if (text.size() > n) text = text.substr(0, n) + "...";
  return text;
}

}  // namespace

Endpoint ParseEndpoint(const std::string& url, const std::string& api_key) {
  std::string u = url;
  if (u.rfind("http://", 0) != 0) {
    if (u.find("://") != std::string::npos) Fail("load target {}: only http:// URLs are supported", url);
    u = "http://" + u;
  }
  while (!u.empty() && u.back() == '/') u.pop_back();
  if (u.size() >= 3 && u.compare(u.size() - 3, 3, "/v1") == 0) u.resize(u.size() - 3);
  const size_t host_start = std::string("http://").size();
  if (u.size() <= host_start || u.find('/', host_start) != std::string::npos) {
    Fail("load target {}: expected http://HOST:PORT (optionally ending in /v1)", url);
  }
  return {u, api_key};
}

std::string ServedModel(const Endpoint& endpoint) {
  httplib::Client cli(endpoint.scheme_host_port);
  cli.set_connection_timeout(10);
  cli.set_read_timeout(30);
  httplib::Headers headers;
  if (!endpoint.api_key.empty()) headers.emplace("Authorization", "Bearer " + endpoint.api_key);
  const httplib::Result r = cli.Get("/v1/models", headers);
  if (!r) Fail("{}: cannot reach the server ({})", endpoint.scheme_host_port, httplib::to_string(r.error()));
  if (r->status != 200) Fail("{}/v1/models: HTTP {}: {}", endpoint.scheme_host_port, r->status, Shorten(r->body));
  const json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
    Fail("{}/v1/models: not an OpenAI model list: {}", endpoint.scheme_host_port, Shorten(r->body));
  }
  return j["data"][0]["id"].get<std::string>();
}

std::vector<std::string> SseReader::Feed(std::string_view bytes) {
  buffer_.append(bytes);
  std::vector<std::string> events;
  size_t end;
  while ((end = buffer_.find("\n\n")) != std::string::npos) {
    std::string event = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    if (event.rfind("data: ", 0) != 0 || event.find('\n') != std::string::npos) framing_ok_ = false;
    events.push_back(event.size() >= 6 ? event.substr(6) : "");
  }
  return events;
}

const char* RouteName(Route route) {
  switch (route) {
    case Route::kChat: return "chat";
    case Route::kCompletion: return "completions";
    case Route::kTask: return "tasks";
  }
  return "";
}

double RequestResult::tpot_ms() const {
  if (ttft_ms < 0.0 || output_tokens < 2) return -1.0;
  return (e2e_ms - ttft_ms) / static_cast<double>(output_tokens - 1);
}

RequestResult SendRequest(const Endpoint& endpoint, const RequestSpec& spec) {
  RequestResult result;
  httplib::Client cli(endpoint.scheme_host_port);
  cli.set_connection_timeout(10);
  const auto timeout_s = static_cast<time_t>(std::max(1.0, spec.timeout_s));
  cli.set_read_timeout(timeout_s);
  cli.set_write_timeout(timeout_s);
  httplib::Request req;
  req.method = "POST";
  req.path = Path(spec.route);
  req.body = RequestBody(spec).dump();
  req.set_header("Content-Type", "application/json");
  if (!endpoint.api_key.empty()) req.set_header("Authorization", "Bearer " + endpoint.api_key);

  const bool stream = spec.stream && spec.route != Route::kTask;
  SseReader sse;
  std::string body;  // non-streamed responses and error bodies
  bool done = false, cancelled = false;
  std::string stream_error;
  int text_chunks = 0;
  Clock::time_point last_text;
  const auto start = Clock::now();
  req.response_handler = [&](const httplib::Response& r) {
    result.status = r.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (!stream || result.status != 200) {
      body.append(data, n);
      return true;
    }
    for (const std::string& event : sse.Feed(std::string_view(data, n))) {
      if (event == "[DONE]") {
        done = true;
        continue;
      }
      json chunk = json::parse(event, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_discarded()) {
        stream_error = "a chunk is not JSON: " + Shorten(event);
        continue;
      }
      if (chunk.contains("error")) {
        stream_error = "error event: " + Shorten(event);
        continue;
      }
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        result.prompt_tokens = chunk["usage"].value("prompt_tokens", int64_t{0});
        result.output_tokens = chunk["usage"].value("completion_tokens", int64_t{0});
      }
      if (ChunkText(chunk).empty()) continue;
      const auto now = Clock::now();
      if (text_chunks == 0) {
        result.ttft_ms = MsSince(start, now);
      } else {
        result.itl_ms.push_back(MsSince(last_text, now));
      }
      last_text = now;
      ++text_chunks;
      if (spec.cancel_after_chunks > 0 && text_chunks >= spec.cancel_after_chunks && !done) {
        cancelled = true;
        return false;  // disconnect
      }
    }
    return true;
  };
  const httplib::Result r = cli.send(req);
  result.e2e_ms = MsSince(start);

  if (cancelled) {
    result.outcome = Outcome::kCancelled;
    return result;
  }
  auto fail = [&](std::string why) {
    result.outcome = Outcome::kFailed;
    result.error = std::move(why);
    return result;
  };
  if (!r) return fail(fmt::format("{} {}: {}", req.method, req.path, httplib::to_string(r.error())));
  if (result.status != 200) return fail(fmt::format("HTTP {}: {}", result.status, Shorten(body)));
  if (!stream) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail("the response is not JSON: " + Shorten(body));
    if (j.contains("usage") && j["usage"].is_object()) {
      result.prompt_tokens = j["usage"].value("prompt_tokens", int64_t{0});
      result.output_tokens = j["usage"].value("completion_tokens", int64_t{0});
    }
    if (spec.route != Route::kTask && (!j.contains("choices") || j["choices"].empty())) {
      return fail("no choices: " + Shorten(body));
    }
    result.outcome = Outcome::kOk;
    return result;
  }
  if (!stream_error.empty()) return fail(stream_error);
  if (!sse.framing_ok() || !sse.empty()) return fail("SSE framing broken");
  if (!done) return fail("the stream ended without [DONE]");
  if (result.output_tokens == 0 && text_chunks > 0) return fail("no usage chunk");
  result.outcome = Outcome::kOk;
  return result;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

Distribution Distribute(const std::vector<double>& values) {
  Distribution d;
  d.n = static_cast<int64_t>(values.size());
  if (values.empty()) return d;
  double sum = 0.0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  d.max = *std::max_element(values.begin(), values.end());
  return d;
}

const std::vector<std::string>& DefaultPrompts() {
  static const std::vector<std::string> prompts = {
      "Tell me a story about a dragon who learns to read.",
      "Explain why the sky is blue to a ten-year-old.",
      "Write a short poem about the sea at night.",
      "What are three good habits for staying healthy?",
      "Describe a busy market in a small town on a Saturday morning.",
      "Summarize the plot of a mystery novel in a few sentences.",
      "Give advice to someone starting to learn the piano.",
      "Once upon a time, in a kingdom far away, there lived a curious princess who",
  };
  return prompts;
}

LoadSummary RunLoad(const Endpoint& endpoint, const LoadOptions& options) {
  const int concurrency = std::max(1, options.concurrency);
  const int n_requests = options.n_requests > 0 ? options.n_requests : std::max(32, 4 * concurrency);
  const std::vector<std::string>& prompts = options.prompts.empty() ? DefaultPrompts() : options.prompts;
  auto spec_for = [&](int i) {
    RequestSpec spec;
    spec.route = options.route;
    spec.text = prompts[static_cast<size_t>(i) % prompts.size()];
    spec.max_tokens = options.max_tokens;
    spec.stream = options.stream;
    return spec;
  };
  if (options.warmup) {  // one request per client, so connections and slots are warm
    std::vector<std::thread> warm;
    for (int c = 0; c < concurrency; ++c) {
      warm.emplace_back([&, c] {
        RequestSpec spec = spec_for(c);
        spec.max_tokens = std::min<int32_t>(spec.max_tokens, 4);
        SendRequest(endpoint, spec);
      });
    }
    for (auto& t : warm) t.join();
  }

  std::vector<RequestResult> results(static_cast<size_t>(n_requests));
  std::atomic<int> next{0};
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      for (int i = next.fetch_add(1); i < n_requests; i = next.fetch_add(1)) {
        results[static_cast<size_t>(i)] = SendRequest(endpoint, spec_for(i));
      }
    });
  }
  for (auto& t : clients) t.join();

  LoadSummary s;
  s.concurrency = concurrency;
  s.duration_s = MsSince(start) / 1000.0;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestResult& r : results) {
    if (r.outcome != Outcome::kOk) {
      ++s.failed;
      if (s.errors.size() < 5) s.errors.push_back(r.error);
      continue;
    }
    ++s.requests;
    s.output_tokens += r.output_tokens;
    s.prompt_tokens += r.prompt_tokens;
    if (r.ttft_ms >= 0.0) ttft.push_back(r.ttft_ms);
    if (r.tpot_ms() >= 0.0) tpot.push_back(r.tpot_ms());
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    e2e.push_back(r.e2e_ms);
  }
  if (s.duration_s > 0.0) {
    s.requests_per_s = static_cast<double>(s.requests) / s.duration_s;
    s.output_tok_per_s = static_cast<double>(s.output_tokens) / s.duration_s;
  }
  s.ttft_ms = Distribute(ttft);
  s.tpot_ms = Distribute(tpot);
  s.itl_ms = Distribute(itl);
  s.e2e_ms = Distribute(e2e);
  return s;
}

namespace {

json ToJson(const Distribution& d) {
  return {{"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90}, {"p99", d.p99}, {"max", d.max}, {"n", d.n}};
}

}  // namespace

json ToJson(const LoadSummary& s) {
  return {{"concurrency", s.concurrency},
          {"requests", s.requests},
          {"failed", s.failed},
          {"errors", s.errors},
          {"duration_s", s.duration_s},
          {"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"requests_per_s", s.requests_per_s},
          {"output_tok_per_s", s.output_tok_per_s},
          {"ttft_ms", ToJson(s.ttft_ms)},
          {"tpot_ms", ToJson(s.tpot_ms)},
          {"itl_ms", ToJson(s.itl_ms)},
          {"e2e_ms", ToJson(s.e2e_ms)}};
}

std::string LoadTable(const std::vector<LoadSummary>& levels) {
  std::string out =
      "| concurrency | requests | failed | req/s | output tok/s | TTFT p50 / p90 / p99 (ms) | TPOT p50 / p90 / p99 (ms) "
      "| E2E p50 / p90 / p99 (ms) |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  auto three = [](const Distribution& d) {
    return d.n == 0 ? std::string("-") : fmt::format("{:.1f} / {:.1f} / {:.1f}", d.p50, d.p90, d.p99);
  };
  for (const LoadSummary& s : levels) {
    out += fmt::format("| {} | {} | {} | {:.2f} | {:.1f} | {} | {} | {} |\n", s.concurrency, s.requests, s.failed,
                       s.requests_per_s, s.output_tok_per_s, three(s.ttft_ms), three(s.tpot_ms), three(s.e2e_ms));
  }
  return out;
}

}  // namespace trinity::loadgen
