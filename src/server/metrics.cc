#include "server/metrics.h"

#include <fmt/format.h>

namespace trinity::server {

namespace {

std::vector<double> LatencyBounds() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0};
}

}  // namespace

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk: return "ok";
    case Outcome::kBadRequest: return "bad_request";
    case Outcome::kRejected: return "rejected";
    case Outcome::kCancelled: return "cancelled";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kError: return "error";
    case Outcome::kCount: break;
  }
  return "unknown";
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string& out) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative, name, sum_, name,
                     count_);
}

Metrics::Metrics()
    : ttft_(LatencyBounds()),
      latency_(LatencyBounds()),
      queue_(LatencyBounds()),
      inter_token_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5}) {}

void Metrics::ObserveInterToken(double seconds) {
  std::lock_guard lock(mu_);
  inter_token_.Observe(seconds);
}

void Metrics::CountRequest(Outcome outcome) {
  std::lock_guard lock(mu_);
  ++requests_[static_cast<size_t>(outcome)];
}

void Metrics::CountTokens(int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  generated_tokens_ += static_cast<uint64_t>(generated_tokens);
}

void Metrics::ObserveTtft(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.Observe(seconds);
}

void Metrics::ObserveLatency(double seconds) {
  std::lock_guard lock(mu_);
  latency_.Observe(seconds);
}

void Metrics::ObserveQueueTime(double seconds) {
  std::lock_guard lock(mu_);
  queue_.Observe(seconds);
}

uint64_t Metrics::requests(Outcome outcome) const {
  std::lock_guard lock(mu_);
  return requests_[static_cast<size_t>(outcome)];
}

uint64_t Metrics::generated_tokens() const {
  std::lock_guard lock(mu_);
  return generated_tokens_;
}

std::string Metrics::Render(const Gauges& g) const {
  std::lock_guard lock(mu_);
  std::string out;
  out += "# HELP trinity_requests_total Requests by outcome.\n# TYPE trinity_requests_total counter\n";
  for (size_t i = 0; i < requests_.size(); ++i) {
    out += fmt::format("trinity_requests_total{{outcome=\"{}\"}} {}\n", OutcomeName(static_cast<Outcome>(i)),
                       requests_[i]);
  }
  out += fmt::format(
      "# HELP trinity_prompt_tokens_total Prompt tokens evaluated.\n# TYPE trinity_prompt_tokens_total counter\n"
      "trinity_prompt_tokens_total {}\n"
      "# HELP trinity_generated_tokens_total Tokens generated.\n# TYPE trinity_generated_tokens_total counter\n"
      "trinity_generated_tokens_total {}\n"
      "# HELP trinity_requests_running Requests holding a slot.\n# TYPE trinity_requests_running gauge\n"
      "trinity_requests_running {}\n"
      "# HELP trinity_requests_waiting Requests in the queue.\n# TYPE trinity_requests_waiting gauge\n"
      "trinity_requests_waiting {}\n"
      "# HELP trinity_slots Parallel slots (one KV cache each).\n# TYPE trinity_slots gauge\n"
      "trinity_slots {}\n"
      "# HELP trinity_batch_steps_total Batched forward steps (continuous batching).\n"
      "# TYPE trinity_batch_steps_total counter\n"
      "trinity_batch_steps_total {}\n"
      "# HELP trinity_batch_rows_total Tokens evaluated in batched steps (rows / steps = mean batch size).\n"
      "# TYPE trinity_batch_rows_total counter\n"
      "trinity_batch_rows_total {}\n"
      "# HELP trinity_batch_decode_rows_total Of those, next tokens of decoding sequences.\n"
      "# TYPE trinity_batch_decode_rows_total counter\n"
      "trinity_batch_decode_rows_total {}\n"
      "# HELP trinity_batch_busy_seconds_total Time in batched forward passes (the rest: gathering rows, idle).\n"
      "# TYPE trinity_batch_busy_seconds_total counter\n"
      "trinity_batch_busy_seconds_total {:.6f}\n",
      prompt_tokens_, generated_tokens_, g.running, g.waiting, g.slots, g.batch.steps, g.batch.rows,
      g.batch.decode_rows, g.batch.busy_seconds);
  ttft_.Render("trinity_time_to_first_token_seconds", "Time from arrival to the first token.", out);
  latency_.Render("trinity_e2e_request_latency_seconds", "Time from arrival to the last byte.", out);
  queue_.Render("trinity_queue_time_seconds", "Time spent waiting for a slot.", out);
  inter_token_.Render("trinity_inter_token_latency_seconds", "Time between two pieces of one answer.", out);
  return out;
}

}  // namespace trinity::server
