// Statistics arithmetic on hand-computed numbers, and the by-task chart.
#include <gtest/gtest.h>

#include "node/plot.h"
#include "node/stats.h"

namespace trinity::node {
namespace {

TaskResult Result(const std::string& task, int64_t generated, double total_ms, double ttft_ms, double tok_per_s) {
  TaskResult r;
  r.task = task;
  r.input = "in";
  r.output = "out";
  r.prompt_tokens = 10;
  r.generated_tokens = generated;
  r.total_ms = total_ms;
  r.ttft_ms = ttft_ms;
  r.tok_per_s = tok_per_s;
  r.finish_reason = "length";
  return r;
}

TEST(NodeStats, PercentileInterpolatesBetweenRanks) {
  const std::vector<double> one_to_ten = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};  // order does not matter
  EXPECT_DOUBLE_EQ(Percentile(one_to_ten, 50), 5.5);
  EXPECT_DOUBLE_EQ(Percentile(one_to_ten, 90), 9.1);
  EXPECT_DOUBLE_EQ(Percentile(one_to_ten, 99), 9.91);
  EXPECT_DOUBLE_EQ(Percentile(one_to_ten, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(one_to_ten, 100), 10);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Percentile({100, 200}, 25), 125);
}

TEST(NodeStats, SummaryAndByTask) {
  Stats stats;
  stats.Add(Result("qa", 40, 4000, 100, 12));
  stats.Add(Result("topic", 2, 1000, 300, 4));
  stats.Add(Result("qa", 60, 5000, 200, 14));
  const StatsSummary s = stats.Summary();
  EXPECT_EQ(s.requests, 3);
  EXPECT_EQ(s.prompt_tokens, 30);
  EXPECT_EQ(s.generated_tokens, 102);
  EXPECT_DOUBLE_EQ(s.total_ms, 10000);
  EXPECT_DOUBLE_EQ(s.avg_tok_per_s, 10);  // (12 + 4 + 14) / 3
  EXPECT_DOUBLE_EQ(s.min_tok_per_s, 4);
  EXPECT_DOUBLE_EQ(s.max_tok_per_s, 14);
  EXPECT_DOUBLE_EQ(s.throughput_tok_per_s, 10.2);  // 102 tokens / 10 s
  EXPECT_DOUBLE_EQ(s.tokens_per_minute, 612);
  EXPECT_DOUBLE_EQ(s.ttft_p50_ms, 200);
  EXPECT_DOUBLE_EQ(s.ttft_p90_ms, 280);  // 200 + 0.8 * 100
  EXPECT_NEAR(s.ttft_p99_ms, 298, 1e-9);
  EXPECT_NEAR(s.avg_total_ms, 10000.0 / 3, 1e-9);

  const auto by_task = stats.ByTask();
  ASSERT_EQ(by_task.size(), 2u);
  EXPECT_EQ(by_task[0].first, "qa");  // first-seen order
  EXPECT_EQ(by_task[0].second.requests, 2);
  EXPECT_EQ(by_task[0].second.generated_tokens, 100);
  EXPECT_DOUBLE_EQ(by_task[0].second.avg_tok_per_s, 13);
  EXPECT_DOUBLE_EQ(by_task[0].second.ttft_p50_ms, 150);
  EXPECT_DOUBLE_EQ(by_task[0].second.throughput_tok_per_s, 100.0 / 9.0);
  EXPECT_EQ(by_task[1].first, "topic");
  EXPECT_EQ(by_task[1].second.requests, 1);
  EXPECT_DOUBLE_EQ(by_task[1].second.avg_tok_per_s, 4);
}

TEST(NodeStats, SeedReportNumbers) {
  // The seed's summary: 607 tokens in 58,027 ms -> 10.5 tok/s and 627.6 tokens/minute.
  Stats stats;
  stats.Add(Result("generation", 607, 58027, 0, 10));
  EXPECT_NEAR(stats.Summary().throughput_tok_per_s, 10.46, 0.005);
  EXPECT_NEAR(stats.Summary().tokens_per_minute, 627.6, 0.05);
}

TEST(NodeStats, Json) {
  Stats stats;
  TaskResult label = Result("sentiment", 6, 500, 500, 30);
  label.label = "negative";
  label.output = "negative";
  label.probabilities = {{"positive", 0.25}, {"negative", 0.5}, {"neutral", 0.25}};
  stats.Add(label);
  stats.Add(Result("qa", 40, 4000, 100, 12));
  const nlohmann::json j = stats.ToJson();
  ASSERT_EQ(j["results"].size(), 2u);
  for (const char* key : {"task", "input", "output", "prompt_tokens", "generated_tokens", "ttft_ms", "total_ms",
                          "tok_per_s", "finish_reason"}) {
    EXPECT_TRUE(j["results"][0].contains(key)) << key;
    EXPECT_TRUE(j["results"][1].contains(key)) << key;
  }
  EXPECT_EQ(j["results"][0]["label"], "negative");
  EXPECT_DOUBLE_EQ(j["results"][0]["probabilities"]["negative"].get<double>(), 0.5);
  EXPECT_FALSE(j["results"][1].contains("probabilities"));
  EXPECT_EQ(j["summary"]["requests"], 2);
  EXPECT_EQ(j["summary"]["generated_tokens"], 46);
  EXPECT_TRUE(j["by_task"].contains("sentiment"));
  EXPECT_EQ(j["by_task"]["qa"]["requests"], 1);
}

TEST(NodeStats, EmptyStats) {
  const Stats stats;
  EXPECT_EQ(stats.Summary().requests, 0);
  EXPECT_DOUBLE_EQ(stats.Summary().tokens_per_minute, 0);
  EXPECT_TRUE(stats.ByTask().empty());
}

TEST(NodePlot, SvgHasBothPanelsAndEscapesNames) {
  Stats stats;
  stats.Add(Result("qa", 40, 4000, 100, 12));
  stats.Add(Result("topic", 2, 1000, 300, 4));
  std::vector<std::pair<std::string, StatsSummary>> named;
  for (const auto& [task, s] : stats.ByTask()) named.emplace_back(task == "qa" ? "Q&A" : "Topic", s);
  const std::string svg = ByTaskChartSvg(named, "bench <tiny>");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("Q&amp;A"), std::string::npos);
  EXPECT_NE(svg.find("bench &lt;tiny&gt;"), std::string::npos);
  EXPECT_NE(svg.find("Average tok/s by task"), std::string::npos);
  EXPECT_NE(svg.find("Time to first token"), std::string::npos);
  size_t rects = 0;
  for (size_t at = 0; (at = svg.find("<rect", at)) != std::string::npos; ++at) ++rects;
  EXPECT_EQ(rects, 1u + 2u * 2u);  // background + 2 bars per panel
}

}  // namespace
}  // namespace trinity::node
