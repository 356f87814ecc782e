// Request statistics: every result kept, aggregated over all requests and by task type — the
// seed report's tables (individual results, summary, by task type) as data and as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "node/node.h"

namespace trinity::node {

struct StatsSummary {
  int64_t requests = 0;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double total_ms = 0.0;              // sum of the requests' total_ms
  double avg_tok_per_s = 0.0;         // mean of the requests' tok_per_s
  double min_tok_per_s = 0.0;
  double max_tok_per_s = 0.0;
  double throughput_tok_per_s = 0.0;  // generated_tokens / total time (the seed's "Average Speed")
  double tokens_per_minute = 0.0;     // the same per minute (the seed's "Throughput")
  double ttft_p50_ms = 0.0;
  double ttft_p90_ms = 0.0;
  double ttft_p99_ms = 0.0;
  double avg_total_ms = 0.0;
};

// The p-th percentile (0..100) by linear interpolation between closest ranks (numpy's default):
// rank = p/100 * (n-1). 0 for no values.
double Percentile(std::vector<double> values, double p);

StatsSummary Summarize(const std::vector<TaskResult>& results);

class Stats {
 public:
  void Add(TaskResult result) { results_.push_back(std::move(result)); }
  void Clear() { results_.clear(); }
  const std::vector<TaskResult>& results() const { return results_; }

  StatsSummary Summary() const { return Summarize(results_); }
  // One summary per task type, in the order task types first appear.
  std::vector<std::pair<std::string, StatsSummary>> ByTask() const;

  // {"results": [...], "summary": {...}, "by_task": {"qa": {...}, ...}}
  nlohmann::json ToJson() const;

 private:
  std::vector<TaskResult> results_;
};

nlohmann::json ToJson(const TaskResult& result);
nlohmann::json ToJson(const StatsSummary& summary);

}  // namespace trinity::node
