// Prometheus metrics of the server: request outcomes, token counters, running/waiting gauges and
// latency histograms. Every metric is declared once (kOutcomes, the histogram list in Render).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model/batcher.h"

namespace trinity::server {

// How a request ended; the label of trinity_requests_total.
enum class Outcome { kOk, kBadRequest, kRejected, kCancelled, kTimeout, kError, kCount };
const char* OutcomeName(Outcome outcome);  // "ok", "bad_request", ...

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends the _bucket / _sum / _count lines of `name`.
  void Render(const std::string& name, const std::string& help, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), plus +Inf at the end
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// Values read at scrape time from the scheduler.
struct Gauges {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t slots = 0;
  BatcherStats batch;  // continuous batching counters (zero without batching)
};

class Metrics {
 public:
  Metrics();
  void CountRequest(Outcome outcome);
  void CountTokens(int64_t prompt_tokens, int64_t generated_tokens);
  void ObserveTtft(double seconds);
  void ObserveLatency(double seconds);
  void ObserveQueueTime(double seconds);
  void ObserveInterToken(double seconds);  // between two streamed pieces of one answer
  // The Prometheus text exposition (version 0.0.4); the gauges come from the scheduler.
  std::string Render(const Gauges& gauges) const;

  uint64_t requests(Outcome outcome) const;
  uint64_t generated_tokens() const;

 private:
  mutable std::mutex mu_;
  std::array<uint64_t, static_cast<size_t>(Outcome::kCount)> requests_{};
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  Histogram ttft_, latency_, queue_, inter_token_;
};

}  // namespace trinity::server
