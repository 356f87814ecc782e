// The load generator (src/loadgen): its pure parts (URL, SSE reader, percentiles, chart) and its
// measurements against a real trinity::server::Server on loopback with the built-in model.
// Counts and shapes are checked, never timings.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

#include "engine/common/error.h"
#include "loadgen/loadgen.h"
#include "loadgen/soak.h"
#include "server/server.h"

namespace {

using namespace trinity::loadgen;

TEST(LoadgenTest, ParseEndpoint) {
  EXPECT_EQ(ParseEndpoint("http://127.0.0.1:8080").scheme_host_port, "http://127.0.0.1:8080");
  EXPECT_EQ(ParseEndpoint("http://127.0.0.1:8080/v1/").scheme_host_port, "http://127.0.0.1:8080");
  EXPECT_EQ(ParseEndpoint("localhost:9000", "k").scheme_host_port, "http://localhost:9000");
  EXPECT_EQ(ParseEndpoint("localhost:9000", "k").api_key, "k");
  EXPECT_THROW(ParseEndpoint("https://example.com"), trinity::Error);
  EXPECT_THROW(ParseEndpoint("http://host:1/other/path"), trinity::Error);
}

TEST(LoadgenTest, SseReaderSplitsAcrossReads) {
  SseReader sse;
  EXPECT_TRUE(sse.Feed("data: {\"a\"").empty());
  auto events = sse.Feed(":1}\n\ndata: [DO");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "{\"a\":1}");
  events = sse.Feed("NE]\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "[DONE]");
  EXPECT_TRUE(sse.framing_ok());
  EXPECT_TRUE(sse.empty());
  sse.Feed("event: x\ndata: y\n\n");
  EXPECT_FALSE(sse.framing_ok());
}

TEST(LoadgenTest, Distribution) {
  const Distribution d = Distribute({4, 1, 3, 2});
  EXPECT_EQ(d.n, 4);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.p50, 2.5);
  EXPECT_DOUBLE_EQ(d.max, 4);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5}, 90), 4.6);
  EXPECT_EQ(Distribute({}).n, 0);
  RequestResult r;
  r.ttft_ms = 10;
  r.e2e_ms = 40;
  r.output_tokens = 4;
  EXPECT_DOUBLE_EQ(r.tpot_ms(), 10.0);
  r.output_tokens = 1;
  EXPECT_LT(r.tpot_ms(), 0);
}

TEST(LoadgenTest, ChartHasEveryLevel) {
  LoadSummary a, b;
  a.concurrency = 1;
  a.output_tok_per_s = 100;
  b.concurrency = 16;
  b.output_tok_per_s = 900;
  const std::string svg = LoadChartSvg({a, b}, "title <&>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find(">16<"), std::string::npos);
  EXPECT_NE(svg.find("title &lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  const std::string table = LoadTable({a, b});
  EXPECT_NE(table.find("| 16 |"), std::string::npos);
}

std::string BuiltinModel() { return std::string(TRINITY_SOURCE_DIR) + "/models/trinity-tiny.gguf"; }

class LoadgenServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(BuiltinModel())) return;
    trinity::server::ServerOptions o;
    o.model_path = BuiltinModel();
    o.port = 0;
    o.n_parallel = 2;
    o.n_ctx = 256;
    o.n_threads = 1;
    o.api_key = "load-key";
    server_ = new trinity::server::Server(o);
    port_ = server_->Start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_SKIP() << "no built-in model";
  }
  static Endpoint Target() { return ParseEndpoint("http://127.0.0.1:" + std::to_string(port_), "load-key"); }
  static trinity::server::Server* server_;
  static int port_;
};
trinity::server::Server* LoadgenServerTest::server_ = nullptr;
int LoadgenServerTest::port_ = 0;

TEST_F(LoadgenServerTest, ServedModelAndKey) {
  EXPECT_EQ(ServedModel(Target()), server_->model_id());
  EXPECT_THROW(ServedModel(ParseEndpoint("http://127.0.0.1:" + std::to_string(port_), "wrong")), trinity::Error);
}

TEST_F(LoadgenServerTest, OneStreamedRequest) {
  for (Route route : {Route::kChat, Route::kCompletion}) {
    RequestSpec spec;
    spec.route = route;
    spec.text = "Once upon a time";
    spec.max_tokens = 5;
    const RequestResult r = SendRequest(Target(), spec);
    ASSERT_EQ(r.outcome, Outcome::kOk) << RouteName(route) << ": " << r.error;
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.output_tokens, 5);  // ignore_eos
    EXPECT_GT(r.prompt_tokens, 0);
    EXPECT_GE(r.ttft_ms, 0.0);
    EXPECT_GE(r.e2e_ms, r.ttft_ms);
    EXPECT_GE(r.tpot_ms(), 0.0);
    EXPECT_LE(r.itl_ms.size(), 4u);  // chunks can carry more than one token
  }
}

TEST_F(LoadgenServerTest, FailuresAreResults) {
  RequestSpec spec;
  spec.text = "hi";
  spec.max_tokens = 100000;  // past the context: 400
  RequestResult r = SendRequest(Target(), spec);
  EXPECT_EQ(r.outcome, Outcome::kFailed);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.error.find("context_length_exceeded"), std::string::npos) << r.error;
  spec.max_tokens = 2;
  r = SendRequest(ParseEndpoint("http://127.0.0.1:" + std::to_string(port_)), spec);  // no key
  EXPECT_EQ(r.status, 401);
  r = SendRequest(ParseEndpoint("http://127.0.0.1:1"), spec);  // nothing listens
  EXPECT_EQ(r.outcome, Outcome::kFailed);
  EXPECT_EQ(r.status, 0);
}

TEST_F(LoadgenServerTest, CancelledStream) {
  RequestSpec spec;
  spec.text = "Tell a long story";
  spec.max_tokens = 200;
  spec.cancel_after_chunks = 2;
  const RequestResult r = SendRequest(Target(), spec);
  EXPECT_EQ(r.outcome, Outcome::kCancelled) << r.error;
}

TEST_F(LoadgenServerTest, LoadLevel) {
  LoadOptions o;
  o.concurrency = 3;  // more clients than slots: some wait in the queue
  o.n_requests = 7;
  o.max_tokens = 4;
  const LoadSummary s = RunLoad(Target(), o);
  EXPECT_EQ(s.failed, 0) << (s.errors.empty() ? "" : s.errors[0]);
  EXPECT_EQ(s.requests, 7);
  EXPECT_EQ(s.output_tokens, 28);
  EXPECT_EQ(s.ttft_ms.n, 7);
  EXPECT_EQ(s.e2e_ms.n, 7);
  EXPECT_GT(s.requests_per_s, 0.0);
  EXPECT_GT(s.output_tok_per_s, 0.0);
  EXPECT_GE(s.e2e_ms.p99, s.e2e_ms.p50);
  const nlohmann::json j = ToJson(s);
  EXPECT_EQ(j["requests"], 7);
  EXPECT_TRUE(j["ttft_ms"].contains("p99"));
}

// Non-streamed requests (bench --load --no-stream): tokens from each answer's usage, end-to-end
// latency only, no first-token times.
TEST_F(LoadgenServerTest, LoadLevelNotStreamed) {
  LoadOptions o;
  o.concurrency = 2;
  o.n_requests = 5;
  o.max_tokens = 3;
  o.stream = false;
  o.route = Route::kCompletion;
  const LoadSummary s = RunLoad(Target(), o);
  EXPECT_EQ(s.failed, 0) << (s.errors.empty() ? "" : s.errors[0]);
  EXPECT_EQ(s.requests, 5);
  EXPECT_EQ(s.output_tokens, 15);
  EXPECT_EQ(s.ttft_ms.n, 0);
  EXPECT_EQ(s.tpot_ms.n, 0);
  EXPECT_EQ(s.e2e_ms.n, 5);
  EXPECT_NE(LoadTable({s}).find("| - |"), std::string::npos);
}

// A small soak: mixed kinds, a third of the streams cut; nothing may fail, nothing may be left
// running, and the server (this process) stays up.
TEST_F(LoadgenServerTest, SmallSoak) {
  SoakOptions o;
  o.n_requests = 60;
  o.concurrency = 4;
  o.max_tokens = 4;
  o.cancel_fraction = 0.35;
  o.seed = 3;
  o.server_pid = static_cast<int>(getpid());
  o.rss_interval_s = 0.05;
  o.max_rss_growth_mib = 1e6;  // RSS of the test process itself says little; the flag is exercised in bench/soak.sh
  const SoakResult r = RunSoak(Target(), o);
  EXPECT_EQ(r.requests, 60);
  EXPECT_EQ(r.failed, 0) << (r.errors.empty() ? "" : r.errors[0]);
  EXPECT_GT(r.cancelled, 0);
  EXPECT_EQ(r.ok + r.cancelled, 60);
  EXPECT_TRUE(r.healthy_after);
  EXPECT_EQ(r.running_after, 0);
  EXPECT_FALSE(r.rss.empty());
  EXPECT_GT(r.ok_by_kind.count("tasks"), 0u);
  EXPECT_TRUE(r.passed);
}

}  // namespace
