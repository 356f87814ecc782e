// A soak run: thousands of mixed requests (chat and completions, streamed and not, the task
// route) from concurrent clients, some streams abandoned mid-way by their client, while the
// server's resident memory is sampled. The verdict: every request that was not cancelled on
// purpose succeeded, the server still answers /health and holds no running request afterwards,
// and its memory stayed flat.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loadgen/loadgen.h"

namespace trinity::loadgen {

struct SoakOptions {
  int n_requests = 3000;
  int concurrency = 8;
  int32_t max_tokens = 16;        // per request (streams to be cancelled get 4x, so they are cut)
  double cancel_fraction = 0.2;   // of streamed requests: disconnect after 1-4 text chunks
  uint64_t seed = 1;              // the request plan is a function of the seed
  int server_pid = 0;             // > 0: sample /proc/PID/status VmRSS (same machine only)
  double rss_interval_s = 0.5;
  // Flat memory: the last RSS sample may exceed the one taken after the first 10% of requests
  // (the warm-up: allocator arenas, first touches of the weights) by at most this much.
  double max_rss_growth_mib = 16.0;
  bool progress = false;          // a progress line on stderr
};

struct RssSample {
  double t_s = 0.0;
  int64_t requests_done = 0;
  int64_t rss_kib = 0;
};

struct SoakResult {
  int64_t requests = 0;
  int64_t ok = 0;
  int64_t cancelled = 0;           // disconnected on purpose
  int64_t failed = 0;
  std::map<std::string, int64_t> ok_by_kind;  // "chat/stream", "completions", "tasks", ...
  std::vector<std::string> errors;  // the first few failures
  double duration_s = 0.0;
  int64_t output_tokens = 0;
  bool healthy_after = false;      // /health answered 200 at the end
  int64_t running_after = -1;      // trinity_requests_running after the run settled; -1: unknown
  std::vector<RssSample> rss;      // empty without server_pid
  int64_t rss_first_kib = 0, rss_warm_kib = 0, rss_last_kib = 0, rss_max_kib = 0;
  bool rss_flat = true;
  bool passed = false;
};

SoakResult RunSoak(const Endpoint& endpoint, const SoakOptions& options);
nlohmann::json ToJson(const SoakResult& result);
// Resident set size of a process in KiB from /proc/PID/status; -1 if it is gone.
int64_t ReadRssKib(int pid);

}  // namespace trinity::loadgen
