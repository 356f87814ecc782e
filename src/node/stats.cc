#include "node/stats.h"

#include <algorithm>
#include <cmath>

namespace trinity::node {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

StatsSummary Summarize(const std::vector<TaskResult>& results) {
  StatsSummary s;
  if (results.empty()) return s;
  std::vector<double> ttft;
  double tok_per_s_sum = 0.0;
  s.min_tok_per_s = results.front().tok_per_s;
  s.max_tok_per_s = results.front().tok_per_s;
  for (const TaskResult& r : results) {
    ++s.requests;
    s.prompt_tokens += r.prompt_tokens;
    s.generated_tokens += r.generated_tokens;
    s.total_ms += r.total_ms;
    tok_per_s_sum += r.tok_per_s;
    s.min_tok_per_s = std::min(s.min_tok_per_s, r.tok_per_s);
    s.max_tok_per_s = std::max(s.max_tok_per_s, r.tok_per_s);
    ttft.push_back(r.ttft_ms);
  }
  s.avg_tok_per_s = tok_per_s_sum / static_cast<double>(s.requests);
  if (s.total_ms > 0.0) {
    s.throughput_tok_per_s = static_cast<double>(s.generated_tokens) * 1000.0 / s.total_ms;
    s.tokens_per_minute = s.throughput_tok_per_s * 60.0;
  }
  s.ttft_p50_ms = Percentile(ttft, 50);
  s.ttft_p90_ms = Percentile(ttft, 90);
  s.ttft_p99_ms = Percentile(ttft, 99);
  s.avg_total_ms = s.total_ms / static_cast<double>(s.requests);
  return s;
}

std::vector<std::pair<std::string, StatsSummary>> Stats::ByTask() const {
  std::vector<std::string> order;
  for (const TaskResult& r : results_) {
    if (std::find(order.begin(), order.end(), r.task) == order.end()) order.push_back(r.task);
  }
  std::vector<std::pair<std::string, StatsSummary>> out;
  for (const std::string& task : order) {
    std::vector<TaskResult> group;
    for (const TaskResult& r : results_) {
      if (r.task == task) group.push_back(r);
    }
    out.emplace_back(task, Summarize(group));
  }
  return out;
}

nlohmann::json ToJson(const TaskResult& r) {
  nlohmann::json j = {{"task", r.task},
                      {"input", r.input},
                      {"output", r.output},
                      {"prompt_tokens", r.prompt_tokens},
                      {"generated_tokens", r.generated_tokens},
                      {"prompt_ms", r.prompt_ms},
                      {"ttft_ms", r.ttft_ms},
                      {"total_ms", r.total_ms},
                      {"tok_per_s", r.tok_per_s},
                      {"node_ms", r.node_ms},
                      {"finish_reason", r.finish_reason}};
  if (!r.label.empty()) j["label"] = r.label;
  if (!r.probabilities.empty()) {
    nlohmann::json probabilities = nlohmann::json::object();
    for (const auto& [label, p] : r.probabilities) probabilities[label] = p;
    j["probabilities"] = probabilities;
  }
  return j;
}

nlohmann::json ToJson(const StatsSummary& s) {
  return {{"requests", s.requests},
          {"prompt_tokens", s.prompt_tokens},
          {"generated_tokens", s.generated_tokens},
          {"total_ms", s.total_ms},
          {"avg_tok_per_s", s.avg_tok_per_s},
          {"min_tok_per_s", s.min_tok_per_s},
          {"max_tok_per_s", s.max_tok_per_s},
          {"throughput_tok_per_s", s.throughput_tok_per_s},
          {"tokens_per_minute", s.tokens_per_minute},
          {"ttft_p50_ms", s.ttft_p50_ms},
          {"ttft_p90_ms", s.ttft_p90_ms},
          {"ttft_p99_ms", s.ttft_p99_ms},
          {"avg_total_ms", s.avg_total_ms}};
}

nlohmann::json Stats::ToJson() const {
  nlohmann::json results = nlohmann::json::array();
  for (const TaskResult& r : results_) results.push_back(node::ToJson(r));
  nlohmann::json by_task = nlohmann::json::object();
  for (const auto& [task, summary] : ByTask()) by_task[task] = node::ToJson(summary);
  return {{"results", results}, {"summary", node::ToJson(Summary())}, {"by_task", by_task}};
}

}  // namespace trinity::node
