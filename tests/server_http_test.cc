// The HTTP server end to end: a real trinity::server::Server on 127.0.0.1 (ephemeral port) with the
// synthetic tiny model ($TRINITY_TEST_MODEL), driven over HTTP with httplib::Client. Covers every
// route, SSE framing chunk by chunk, bad input of every class, the API key, overload (429),
// a client disconnecting mid-stream, and drain.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/server.h"

namespace {

using nlohmann::json;
using trinity::server::Server;
using trinity::server::ServerOptions;

std::string TestModel() {
  if (const char* env = std::getenv("TRINITY_TEST_MODEL"); env != nullptr && std::filesystem::exists(env)) return env;
  const std::string builtin = std::string(TRINITY_SOURCE_DIR) + "/models/trinity-tiny.gguf";
  return std::filesystem::exists(builtin) ? builtin : "";
}

ServerOptions SmallOptions() {
  ServerOptions o;
  o.model_path = TestModel();
  o.port = 0;
  o.n_ctx = 256;
  o.n_threads = 1;
  o.max_body_bytes = 64 * 1024;
  return o;
}

struct Running {
  std::unique_ptr<Server> server;
  int port = 0;
  explicit Running(ServerOptions o) : server(std::make_unique<Server>(std::move(o))) { port = server->Start(); }
  httplib::Client Client() const {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(30);
    return cli;
  }
};

json Body(const httplib::Result& r) { return json::parse(r->body); }

// Checks OpenAI's error shape and returns the error object.
json ExpectError(const httplib::Result& r, int status) {
  EXPECT_TRUE(r) << "no response";
  if (!r) return {};
  EXPECT_EQ(r->status, status) << r->body;
  const json body = json::parse(r->body);
  EXPECT_TRUE(body.contains("error")) << r->body;
  const json e = body["error"];
  for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(key)) << key << ": " << r->body;
  EXPECT_TRUE(e["message"].is_string());
  return e;
}

// A metric's value from /metrics text ("name{labels} value" lines); -1 when absent.
double Metric(httplib::Client& cli, const std::string& series) {
  auto r = cli.Get("/metrics");
  if (!r) return -1;
  size_t at = 0;
  while ((at = r->body.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || r->body[at - 1] == '\n') return std::stod(r->body.substr(at + series.size() + 1));
    ++at;
  }
  return -1;
}

// Reads `series` until `done(value)` holds or `timeout` passes; returns the last value read.
// Counters do not all move at once: the slot is free (trinity_requests_running drops) before the
// HTTP thread that waited on it wakes and counts the request's outcome, so a test that saw one
// metric change waits for the next instead of reading it at once.
double AwaitMetric(httplib::Client& cli, const std::string& series, const std::function<bool(double)>& done,
                   std::chrono::milliseconds timeout = std::chrono::seconds(6)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  double value = Metric(cli, series);
  while (!done(value) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    value = Metric(cli, series);
  }
  return value;
}

// SSE events of a streamed response, collected as they arrive (`stop_after` events: disconnect).
struct Stream {
  int status = 0;
  std::string content_type;
  std::vector<std::string> events;  // the payload after "data: "
  bool framing_ok = true;
};

Stream PostStream(httplib::Client& cli, const std::string& path, const json& body, size_t stop_after = 0) {
  Stream s;
  std::string buffer;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event.find('\n') != std::string::npos) s.framing_ok = false;
      s.events.push_back(event.substr(std::min<size_t>(6, event.size())));
      if (stop_after > 0 && s.events.size() >= stop_after) return false;
    }
    return true;
  };
  auto r = cli.send(req);
  if (r) {
    s.status = r->status;
    s.content_type = r->get_header_value("Content-Type");
  }
  if (!buffer.empty()) s.framing_ok = false;  // bytes after the last "\n\n"
  return s;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (TestModel().empty()) return;
    running_ = new Running(SmallOptions());
  }
  static void TearDownTestSuite() {
    delete running_;
    running_ = nullptr;
  }
  void SetUp() override {
    if (running_ == nullptr) GTEST_SKIP() << "no test model ($TRINITY_TEST_MODEL or models/trinity-tiny.gguf)";
  }
  httplib::Client Client() { return running_->Client(); }
  static Running* running_;
};
Running* ServerTest::running_ = nullptr;

TEST_F(ServerTest, HealthAndModels) {
  auto cli = Client();
  auto h = cli.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(Body(h), json({{"status", "ok"}}));
  auto m = cli.Get("/v1/models");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  const json models = Body(m);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["id"], running_->server->model_id());
  EXPECT_TRUE(models["data"][0]["created"].is_number_integer());
  EXPECT_TRUE(models["data"][0]["owned_by"].is_string());
}

TEST_F(ServerTest, ChatCompletion) {
  auto cli = Client();
  const json req = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
                    {"max_tokens", 4},
                    {"temperature", 0}};
  auto r = cli.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json j = Body(r);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], running_->server->model_id());
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_TRUE(c["message"]["content"].is_string());
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_TRUE(c["finish_reason"] == "stop" || c["finish_reason"] == "length");
  const json& u = j["usage"];
  EXPECT_GT(u["prompt_tokens"].get<int>(), 0);
  EXPECT_LE(u["completion_tokens"].get<int>(), 4);
  EXPECT_EQ(u["total_tokens"].get<int>(), u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
  for (const char* key : {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
                          "predicted_per_token_ms", "predicted_per_second"}) {
    EXPECT_TRUE(j["timings"].contains(key)) << key;
  }
  EXPECT_EQ(j["timings"]["prompt_n"], u["prompt_tokens"]);
}

TEST_F(ServerTest, TextCompletion) {
  auto cli = Client();
  const json req = {{"prompt", "The capital of France is"}, {"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true},
                    {"model", running_->server->model_id()}};
  auto r = cli.Post("/v1/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Body(r);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(j["choices"][0]["text"].is_string());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
}

// Streaming: every event is "data: {json}\n\n"; role first, then content, finish_reason null
// until the last chunk, the usage chunk, then [DONE]. Greedy, so the text equals the
// non-streamed answer.
TEST_F(ServerTest, ChatStreamFraming) {
  auto cli = Client();
  json req = {{"messages", {{{"role", "user"}, {"content", "Count to five"}}}},
              {"max_tokens", 6},
              {"temperature", 0},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}}};
  const Stream s = PostStream(cli, "/v1/chat/completions", req);
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(s.content_type, "text/event-stream");
  EXPECT_TRUE(s.framing_ok);
  ASSERT_GE(s.events.size(), 4u);  // role, last, usage, [DONE]
  EXPECT_EQ(s.events.back(), "[DONE]");
  std::string text;
  std::string id;
  for (size_t i = 0; i + 1 < s.events.size(); ++i) {
    const json chunk = json::parse(s.events[i]);
    if (id.empty()) id = chunk["id"];
    EXPECT_EQ(chunk["id"], id);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (i + 2 == s.events.size()) {  // the usage chunk
      EXPECT_TRUE(chunk["choices"].empty());
      EXPECT_GT(chunk["usage"]["prompt_tokens"].get<int>(), 0);
      continue;
    }
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());  // include_usage: null until the end
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const json& c = chunk["choices"][0];
    if (i == 0) {
      EXPECT_EQ(c["delta"]["role"], "assistant");
      EXPECT_TRUE(c["finish_reason"].is_null());
    } else if (i + 3 == s.events.size()) {
      EXPECT_TRUE(c["finish_reason"] == "stop" || c["finish_reason"] == "length");
      EXPECT_TRUE(chunk.contains("timings"));
    } else {
      EXPECT_TRUE(c["finish_reason"].is_null());
      EXPECT_FALSE(c["delta"].contains("role"));
      text += c["delta"]["content"].get<std::string>();
    }
  }
  req.erase("stream");
  req.erase("stream_options");
  auto r = cli.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(text, Body(r)["choices"][0]["message"]["content"]);
}

TEST_F(ServerTest, CompletionStream) {
  auto cli = Client();
  const json req = {{"prompt", "Once upon a time"}, {"max_tokens", 4}, {"stream", true}, {"ignore_eos", true}};
  const Stream s = PostStream(cli, "/v1/completions", req);
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.framing_ok);
  ASSERT_GE(s.events.size(), 2u);
  EXPECT_EQ(s.events.back(), "[DONE]");
  const json last = json::parse(s.events[s.events.size() - 2]);
  EXPECT_EQ(last["object"], "text_completion");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last.contains("usage"));  // no include_usage: no usage field on chunks
}

TEST_F(ServerTest, TokenizeDetokenize) {
  auto cli = Client();
  auto t = cli.Post("/tokenize", json({{"content", "Hello world"}}).dump(), "application/json");
  ASSERT_TRUE(t);
  ASSERT_EQ(t->status, 200) << t->body;
  const json tokens = Body(t)["tokens"];
  ASSERT_FALSE(tokens.empty());
  auto d = cli.Post("/detokenize", json({{"tokens", tokens}}).dump(), "application/json");
  ASSERT_TRUE(d);
  ASSERT_EQ(d->status, 200);
  EXPECT_EQ(Body(d)["content"], "Hello world");
  ExpectError(cli.Post("/detokenize", json({{"tokens", {-1}}}).dump(), "application/json"), 400);
  ExpectError(cli.Post("/tokenize", json({{"content", 5}}).dump(), "application/json"), 400);
}

TEST_F(ServerTest, Tasks) {
  auto cli = Client();
  auto list = cli.Get("/v1/tasks");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200);
  EXPECT_GE(Body(list)["data"].size(), 5u);
  auto r = cli.Post("/v1/tasks", json({{"task", "sentiment"}, {"input", "I loved it"}}).dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Body(r);
  EXPECT_EQ(j["task"], "sentiment");
  EXPECT_TRUE(j.contains("label"));
  EXPECT_TRUE(j.contains("probabilities"));
  EXPECT_GT(j["prompt_tokens"].get<int>(), 0);
  EXPECT_TRUE(j.contains("ttft_ms"));
  auto g = cli.Post("/v1/tasks", json({{"task", "qa"}, {"input", "What is 2+2?"}, {"max_tokens", 3}}).dump(),
                    "application/json");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status, 200) << g->body;
  EXPECT_EQ(ExpectError(cli.Post("/v1/tasks", json({{"task", "nope"}, {"input", "x"}}).dump(), "application/json"),
                        404)["code"],
            "task_not_found");
  ExpectError(cli.Post("/v1/tasks", json({{"task", "qa"}, {"input", "   "}}).dump(), "application/json"), 400);
  ExpectError(cli.Post("/v1/tasks", json({{"task", "qa"}}).dump(), "application/json"), 400);
}

TEST_F(ServerTest, BadInput) {
  auto cli = Client();
  const auto post = [&](const std::string& path, const std::string& body) {
    return cli.Post(path, body, "application/json");
  };
  const std::string chat = "/v1/chat/completions";
  const json ok = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}};
  // Malformed JSON, not an object, invalid UTF-8.
  EXPECT_EQ(ExpectError(post(chat, "{\"messages\": ["), 400)["code"], "invalid_json");
  ExpectError(post(chat, "[1,2]"), 400);
  ExpectError(post(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), 400);
  ExpectError(post("/v1/completions", "{\"prompt\":\"\xc3\x28\"}"), 400);
  ExpectError(post(chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":1e999}"), 400);
  // Wrong types and missing fields.
  auto bad = ok;
  bad["messages"] = "hello";
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["param"], "messages");
  bad = ok;
  bad["messages"][0]["role"] = "wizard";
  ExpectError(post(chat, bad.dump()), 400);
  bad = ok;
  bad["temperature"] = "hot";
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["param"], "temperature");
  bad = ok;
  bad["max_tokens"] = "3";
  ExpectError(post(chat, bad.dump()), 400);
  bad = ok;
  bad["stop"] = 5;
  ExpectError(post(chat, bad.dump()), 400);
  bad = ok;
  bad["logit_bias"] = {{"abc", 1}};
  ExpectError(post(chat, bad.dump()), 400);
  ExpectError(post(chat, json({{"max_tokens", 2}}).dump()), 400);
  ExpectError(post("/v1/completions", json({{"prompt", 42}}).dump()), 400);
  // Out of range.
  bad = ok;
  bad["max_tokens"] = -1;
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["param"], "max_tokens");
  bad["max_tokens"] = 0;
  ExpectError(post(chat, bad.dump()), 400);
  bad["max_tokens"] = 1e15;
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["code"], "context_length_exceeded");
  bad["max_tokens"] = 1000000;
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["code"], "context_length_exceeded");
  bad = ok;
  bad["temperature"] = -1;
  ExpectError(post(chat, bad.dump()), 400);
  bad = ok;
  bad["top_p"] = 0;
  ExpectError(post(chat, bad.dump()), 400);
  // A prompt longer than the context (256).
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "word ";
  const json e = ExpectError(post("/v1/completions", json({{"prompt", long_text}}).dump()), 400);
  EXPECT_EQ(e["code"], "context_length_exceeded");
  EXPECT_NE(e["message"].get<std::string>().find("maximum context length is 256"), std::string::npos);
  // Unsupported parameters.
  bad = ok;
  bad["n"] = 2;
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 400)["code"], "unsupported_parameter");
  bad = ok;
  bad["logprobs"] = true;
  ExpectError(post(chat, bad.dump()), 400);
  bad = ok;
  bad["stream_options"] = {{"include_usage", true}};
  ExpectError(post(chat, bad.dump()), 400);  // without stream
  // Unknown model, unknown route.
  bad = ok;
  bad["model"] = "gpt-9";
  EXPECT_EQ(ExpectError(post(chat, bad.dump()), 404)["code"], "model_not_found");
  ExpectError(cli.Get("/v1/nothing"), 404);
  // Body over the limit (64 KiB here).
  ExpectError(post("/v1/completions", json({{"prompt", std::string(100 * 1024, 'a')}}).dump()), 413);
  // Still healthy, and the well-formed request works.
  auto r = post(chat, ok.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(cli.Get("/health")->status, 200);
}

// The rest of the bad-input classes, route by route: each gets a 400/404 with OpenAI's
// error shape, never a 500 or a dropped connection.
TEST_F(ServerTest, BadInputOtherRoutes) {
  auto cli = Client();
  const auto post = [&](const std::string& path, const std::string& body) {
    return cli.Post(path, body, "application/json");
  };
  // Chat messages longer than the context (256), and an empty body.
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "word ";
  const json e = ExpectError(
      post("/v1/chat/completions", json({{"messages", {{{"role", "user"}, {"content", long_text}}}}}).dump()), 400);
  EXPECT_EQ(e["code"], "context_length_exceeded");
  EXPECT_EQ(e["param"], "messages");
  EXPECT_EQ(ExpectError(post("/v1/chat/completions", ""), 400)["code"], "invalid_json");
  // Token-id prompts out of the vocabulary, and negative ids.
  EXPECT_EQ(ExpectError(post("/v1/completions", json({{"prompt", {1, 2, 1 << 30}}}).dump()), 400)["param"], "prompt");
  ExpectError(post("/v1/completions", json({{"prompt", {1, -2}}}).dump()), 400);
  // Unsupported features are refused, not ignored.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}};
  json bad = chat;
  bad["tools"] = {{{"type", "function"}, {"function", {{"name", "f"}}}}};
  EXPECT_EQ(ExpectError(post("/v1/chat/completions", bad.dump()), 400)["code"], "unsupported_parameter");
  bad = chat;
  bad["response_format"] = {{"type", "json_object"}};
  EXPECT_EQ(ExpectError(post("/v1/chat/completions", bad.dump()), 400)["code"], "unsupported_parameter");
  bad = chat;
  bad["messages"][0]["content"] = {{{"type", "image_url"}, {"image_url", {{"url", "x"}}}}};
  EXPECT_EQ(ExpectError(post("/v1/chat/completions", bad.dump()), 400)["code"], "unsupported_parameter");
  EXPECT_EQ(ExpectError(post("/v1/completions", json({{"prompt", "a"}, {"echo", true}}).dump()), 400)["code"],
            "unsupported_parameter");
  // The task route: wrong types, negative and huge max_tokens, invalid UTF-8, wrong sampling.
  ExpectError(post("/v1/tasks", json({{"task", 5}, {"input", "x"}}).dump()), 400);
  ExpectError(post("/v1/tasks", json({{"task", "qa"}, {"input", {"x"}}}).dump()), 400);
  for (const json& n : {json(-1), json(0), json(1000000), json("5"), json(2.5)}) {
    EXPECT_EQ(ExpectError(post("/v1/tasks", json({{"task", "qa"}, {"input", "x"}, {"max_tokens", n}}).dump()), 400)
                  ["param"],
              "max_tokens")
        << n;
  }
  ExpectError(post("/v1/tasks", "{\"task\":\"qa\",\"input\":\"\xff\"}"), 400);
  ExpectError(post("/v1/tasks", json({{"task", "qa"}, {"input", "x"}, {"temperature", 5}}).dump()), 400);
  // tokenize / detokenize: malformed JSON and wrong types.
  ExpectError(post("/tokenize", "{"), 400);
  ExpectError(post("/detokenize", json({{"tokens", "1,2"}}).dump()), 400);
  // Wrong method on a known route: 404 with the error shape, like any unknown route.
  ExpectError(cli.Get("/v1/chat/completions"), 404);
  EXPECT_EQ(cli.Get("/health")->status, 200);
}

TEST_F(ServerTest, Metrics) {
  auto cli = Client();
  auto ok = cli.Post("/v1/completions", json({{"prompt", "Hi"}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}}).dump(), "application/json");
  ASSERT_TRUE(ok);
  auto r = cli.Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  EXPECT_GE(Metric(cli, "trinity_requests_total{outcome=\"ok\"}"), 1);
  EXPECT_GE(Metric(cli, "trinity_prompt_tokens_total"), 1);
  EXPECT_EQ(Metric(cli, "trinity_requests_running"), 0);
  EXPECT_EQ(Metric(cli, "trinity_requests_waiting"), 0);
  EXPECT_GE(Metric(cli, "trinity_time_to_first_token_seconds_count"), 0);
  EXPECT_GE(Metric(cli, "trinity_e2e_request_latency_seconds_count"), 1);
  EXPECT_NE(r->body.find("trinity_e2e_request_latency_seconds_bucket{le=\"+Inf\"}"), std::string::npos);
  EXPECT_GE(Metric(cli, "trinity_inter_token_latency_seconds_count"), 1);
  EXPECT_GE(Metric(cli, "trinity_queue_time_seconds_count"), 1);
}

// Servers of their own: API key, overload, disconnect, drain.
class ServerLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (TestModel().empty()) GTEST_SKIP() << "no test model";
  }
};

TEST_F(ServerLifecycleTest, ApiKey) {
  ServerOptions o = SmallOptions();
  o.api_key = "sekret";
  Running s(o);
  auto cli = s.Client();
  EXPECT_EQ(cli.Get("/health")->status, 200);
  EXPECT_EQ(ExpectError(cli.Get("/v1/models"), 401)["code"], "invalid_api_key");
  ExpectError(cli.Get("/v1/models", {{"Authorization", "Bearer wrong"}}), 401);
  ExpectError(cli.Get("/metrics"), 401);
  auto r = cli.Get("/v1/models", {{"Authorization", "Bearer sekret"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  // Inference routes too, before any parsing: a wrong key on a malformed body is still 401.
  const std::string chat = json({{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 1}}).dump();
  auto denied = cli.Post("/v1/chat/completions", {{"Authorization", "Bearer sekre"}}, chat, "application/json");
  EXPECT_EQ(ExpectError(denied, 401)["type"], "authentication_error");
  EXPECT_EQ(denied->get_header_value("WWW-Authenticate"), "Bearer");
  ExpectError(cli.Post("/v1/completions", {{"Authorization", "sekret"}}, "{", "application/json"), 401);
  ExpectError(cli.Post("/v1/tasks", "{}", "application/json"), 401);
  auto ok = cli.Post("/v1/chat/completions", {{"Authorization", "Bearer sekret"}}, chat, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(ServerLifecycleTest, QueueFullGets429) {
  ServerOptions o = SmallOptions();
  o.n_parallel = 1;
  o.max_queue = 0;
  o.step_delay_ms = 40;  // holds the one slot for ~1 s
  Running s(o);
  std::thread busy([&] {
    auto cli = s.Client();
    auto r = cli.Post("/v1/completions", json({{"prompt", "a"}, {"max_tokens", 25}, {"ignore_eos", true}}).dump(),
                      "application/json");
    EXPECT_TRUE(r && r->status == 200);
  });
  auto cli = s.Client();
  ASSERT_EQ(AwaitMetric(cli, "trinity_requests_running", [](double v) { return v >= 1; }), 1);
  auto r = cli.Post("/v1/completions", json({{"prompt", "b"}, {"max_tokens", 1}}).dump(), "application/json");
  const json e = ExpectError(r, 429);
  EXPECT_EQ(e["code"], "queue_full");
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  busy.join();
  EXPECT_EQ(Metric(cli, "trinity_requests_total{outcome=\"rejected\"}"), 1);
}

TEST_F(ServerLifecycleTest, DisconnectFreesSlot) {
  ServerOptions o = SmallOptions();
  o.step_delay_ms = 40;  // 200 tokens would hold the slot 8 s
  Running s(o);
  auto cli = s.Client();
  const json req = {{"messages", {{{"role", "user"}, {"content", "Tell a long story"}}}},
                    {"max_tokens", 200},
                    {"ignore_eos", true},
                    {"stream", true}};
  const auto start = std::chrono::steady_clock::now();
  const Stream st = PostStream(cli, "/v1/chat/completions", req, /*stop_after=*/3);  // role + 2 pieces
  EXPECT_EQ(st.events.size(), 3u);
  auto probe = s.Client();
  EXPECT_EQ(AwaitMetric(probe, "trinity_requests_running", [](double v) { return v == 0; }), 0);
  const double freed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(freed_s, 4.0);  // far less than the 8 s the whole answer takes (room for a loaded machine)
  EXPECT_EQ(AwaitMetric(probe, "trinity_requests_total{outcome=\"cancelled\"}", [](double v) { return v >= 1; }), 1);
  // The slot serves the next request.
  auto r = probe.Post("/v1/completions", json({{"prompt", "x"}, {"max_tokens", 1}}).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Sends `body` to `path` on a raw socket, waits `wait`, then closes the connection without reading
// the answer: a client that gave up on a non-streaming request.
void PostAndHangUp(int port, const std::string& path, const json& body, std::chrono::milliseconds wait) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  const std::string payload = body.dump();
  const std::string request = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                              "Content-Length: " + std::to_string(payload.size()) + "\r\n\r\n" + payload;
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  std::this_thread::sleep_for(wait);
  close(fd);
}

// Non-streaming requests (completions and tasks) whose client hangs up free their slot within a
// step or so, not when the whole answer would have been done.
TEST_F(ServerLifecycleTest, NonStreamingDisconnectFreesSlot) {
  ServerOptions o = SmallOptions();
  o.step_delay_ms = 40;  // 200 tokens would hold the slot 8 s
  Running s(o);
  auto probe = s.Client();
  const std::vector<std::pair<std::string, json>> requests = {
      {"/v1/completions", {{"prompt", "Tell a long story"}, {"max_tokens", 200}, {"ignore_eos", true}}},
      {"/v1/tasks", {{"task", "generation"}, {"input", "a long story"}, {"max_tokens", 200}}}};
  int cancelled = 0;
  for (const auto& [path, body] : requests) {
    SCOPED_TRACE(path);
    const auto start = std::chrono::steady_clock::now();
    PostAndHangUp(s.port, path, body, std::chrono::milliseconds(300));
    EXPECT_EQ(AwaitMetric(probe, "trinity_requests_running", [](double v) { return v == 0; }), 0);
    const double freed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Far less than the 8 s the whole answer takes (the bound leaves room for a loaded CI machine:
    // 2 s of a 4 s answer failed once under ctest -j2).
    EXPECT_LT(freed_s, 4.0);
    ++cancelled;
    const std::string counter = "trinity_requests_total{outcome=\"cancelled\"}";
    EXPECT_EQ(AwaitMetric(probe, counter, [&](double v) { return v >= cancelled; }), cancelled);
  }
  auto r = probe.Post("/v1/completions", json({{"prompt", "x"}, {"max_tokens", 1}}).dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// With one slot and no queue, a client that sends its requests one after another is never
// refused: the slot counts as free before the answer reaches the client.
TEST_F(ServerLifecycleTest, BackToBackRequestsNeedNoQueue) {
  ServerOptions o = SmallOptions();
  o.n_parallel = 1;
  o.max_queue = 0;
  Running s(o);
  auto cli = s.Client();
  for (int i = 0; i < 40; ++i) {
    auto r = cli.Post(i % 2 ? "/v1/completions" : "/v1/tasks",
                      i % 2 ? json({{"prompt", "hi"}, {"max_tokens", 2}}).dump()
                            : json({{"task", "topic"}, {"input", "the stock market fell"}}).dump(),
                      "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << "request " << i << ": " << r->body;
  }
}

// The per-request timeout: a generating request is cut (finish_reason "length"); a streamed one
// that waited past its deadline gets an error event mid-stream, then [DONE].
TEST_F(ServerLifecycleTest, Timeouts) {
  ServerOptions o = SmallOptions();
  o.timeout_s = 0.2;
  o.step_delay_ms = 1000;  // the running request notices its deadline after its first token (~1 s)
  Running s(o);
  json first;
  std::thread running([&] {
    auto cli = s.Client();
    auto r = cli.Post("/v1/completions", json({{"prompt", "a"}, {"max_tokens", 50}, {"ignore_eos", true}}).dump(),
                      "application/json");
    if (r && r->status == 200) first = json::parse(r->body);
  });
  auto cli = s.Client();
  AwaitMetric(cli, "trinity_requests_running", [](double v) { return v >= 1; });
  const json req = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}, {"stream", true}};
  const Stream st = PostStream(cli, "/v1/chat/completions", req);
  running.join();
  ASSERT_FALSE(first.is_null());
  EXPECT_EQ(first["choices"][0]["finish_reason"], "length");
  EXPECT_LT(first["usage"]["completion_tokens"].get<int>(), 50);
  EXPECT_EQ(st.status, 200);
  EXPECT_TRUE(st.framing_ok);
  ASSERT_EQ(st.events.size(), 3u);  // role, error, [DONE]
  const json error = json::parse(st.events[1]);
  ASSERT_TRUE(error.contains("error")) << st.events[1];
  EXPECT_EQ(error["error"]["code"], "timeout");
  EXPECT_EQ(st.events[2], "[DONE]");
  EXPECT_EQ(Metric(cli, "trinity_requests_total{outcome=\"timeout\"}"), 2);
}

// Continuous batching: concurrent greedy requests on a batching server give exactly the answers
// a one-slot server gives them one at a time (batched rows are computed bit-identically), and
// the batch counters show the work went through shared steps.
TEST_F(ServerLifecycleTest, ContinuousBatchingGivesTheLoneAnswers) {
  const std::vector<std::string> prompts = {"The river", "Once upon a time", "A", "In the morning the old man"};
  auto body = [](const std::string& prompt) {
    return json({{"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}}).dump();
  };
  std::vector<std::string> want;
  {
    ServerOptions o = SmallOptions();
    o.n_parallel = 1;
    Running alone(o);
    auto cli = alone.Client();
    for (const auto& p : prompts) {
      auto r = cli.Post("/v1/completions", body(p), "application/json");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      want.push_back(Body(r)["choices"][0]["text"]);
    }
  }
  ServerOptions o = SmallOptions();
  o.n_parallel = 4;
  o.n_threads = 2;
  o.batching = trinity::server::Batching::kOn;  // whatever the test model's size
  Running batched(o);
  ASSERT_TRUE(batched.server->batching());
  std::vector<std::string> got(prompts.size());
  std::vector<int> status(prompts.size(), 0);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      auto cli = batched.Client();
      auto r = cli.Post("/v1/completions", body(prompts[i]), "application/json");
      status[i] = r ? r->status : -1;
      if (r && r->status == 200) got[i] = Body(r)["choices"][0]["text"];
    });
  }
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(status[i], 200);
    EXPECT_EQ(got[i], want[i]) << "prompt " << i;
  }
  auto cli = batched.Client();
  const double steps = Metric(cli, "trinity_batch_steps_total");
  const double rows = Metric(cli, "trinity_batch_rows_total");
  const double decode_rows = Metric(cli, "trinity_batch_decode_rows_total");
  EXPECT_GT(steps, 0);
  // Every generated token but each request's first was a decode row (the first comes from the prompt).
  EXPECT_GE(decode_rows, static_cast<double>(prompts.size() * 23));
  EXPECT_GE(rows, decode_rows + static_cast<double>(prompts.size()));
}

TEST_F(ServerLifecycleTest, DrainFinishesInFlight) {
  ServerOptions o = SmallOptions();
  o.step_delay_ms = 30;
  Running s(o);
  std::atomic<int> status{0};
  std::thread inflight([&] {
    auto cli = s.Client();
    auto r = cli.Post("/v1/completions", json({{"prompt", "a"}, {"max_tokens", 20}, {"ignore_eos", true}}).dump(),
                      "application/json");
    status = r ? r->status : -1;
  });
  auto cli = s.Client();
  AwaitMetric(cli, "trinity_requests_running", [](double v) { return v >= 1; });
  std::thread drain([&] { s.server->Drain(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto h = cli.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  EXPECT_EQ(Body(h)["status"], "draining");
  ExpectError(cli.Post("/v1/completions", json({{"prompt", "b"}, {"max_tokens", 1}}).dump(), "application/json"),
              503);
  inflight.join();
  drain.join();
  EXPECT_EQ(status.load(), 200);
}

}  // namespace
