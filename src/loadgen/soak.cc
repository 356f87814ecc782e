#include "loadgen/soak.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace trinity::loadgen {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

httplib::Headers AuthHeaders(const Endpoint& endpoint) {
  if (endpoint.api_key.empty()) return {};
  return {{"Authorization", "Bearer " + endpoint.api_key}};
}

// GET `path`; the body, or "" on any failure. `status` receives the HTTP status (0: none).
std::string Get(const Endpoint& endpoint, const std::string& path, int* status = nullptr) {
  httplib::Client cli(endpoint.scheme_host_port);
  cli.set_connection_timeout(10);
  cli.set_read_timeout(30);
  auto r = cli.Get(path, AuthHeaders(endpoint));
  if (status != nullptr) *status = r ? r->status : 0;
  return r && r->status == 200 ? r->body : "";
}

// A metric's value from Prometheus text ("name value" lines); -1 when absent.
double MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1.0;
}

std::string KindName(const RequestSpec& spec) {
  std::string kind = RouteName(spec.route);
  if (spec.route != Route::kTask) kind += spec.stream ? "/stream" : "/plain";
  return kind;
}

std::vector<RequestSpec> Plan(const SoakOptions& o, const std::vector<std::string>& tasks) {
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const std::vector<std::string>& prompts = DefaultPrompts();
  std::vector<RequestSpec> plan;
  for (int i = 0; i < o.n_requests; ++i) {
    RequestSpec spec;
    spec.text = prompts[rng() % prompts.size()];
    spec.max_tokens = o.max_tokens;
    spec.ignore_eos = (rng() & 1) != 0;
    const double kind = unit(rng);
    if (kind < 0.35) {
      spec.route = Route::kChat;
    } else if (kind < 0.5) {
      spec.route = Route::kChat;
      spec.stream = false;
    } else if (kind < 0.65) {
      spec.route = Route::kCompletion;
    } else if (kind < 0.75 || tasks.empty()) {
      spec.route = Route::kCompletion;
      spec.stream = false;
    } else {
      spec.route = Route::kTask;
      spec.stream = false;
      spec.task = tasks[rng() % tasks.size()];
    }
    if (spec.stream && unit(rng) < o.cancel_fraction) {
      spec.cancel_after_chunks = 1 + static_cast<int>(rng() % 4);
      spec.max_tokens = 4 * o.max_tokens;  // long enough to be cut
      spec.ignore_eos = true;
    }
    plan.push_back(std::move(spec));
  }
  return plan;
}

}  // namespace

int64_t ReadRssKib(int pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

SoakResult RunSoak(const Endpoint& endpoint, const SoakOptions& o) {
  std::vector<std::string> tasks;
  const json listed = json::parse(Get(endpoint, "/v1/tasks"), nullptr, false);
  if (listed.is_object() && listed.contains("data")) {
    for (const json& t : listed["data"]) tasks.push_back(t.value("name", ""));
  }
  const std::vector<RequestSpec> plan = Plan(o, tasks);

  SoakResult result;
  std::mutex mu;  // guards result while clients run
  std::atomic<int64_t> done{0};
  std::atomic<int> next{0};
  const auto start = Clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  std::mutex sampler_mu;
  std::condition_variable sampler_cv;
  bool stop_sampler = false;
  std::thread sampler;
  if (o.server_pid > 0) {
    sampler = std::thread([&] {
      std::unique_lock lock(sampler_mu);
      do {
        const int64_t rss = ReadRssKib(o.server_pid);
        if (rss < 0) break;  // the server is gone; the health check reports it
        result.rss.push_back({seconds(), done.load(), rss});
      } while (!sampler_cv.wait_for(lock, std::chrono::duration<double>(o.rss_interval_s), [&] { return stop_sampler; }));
    });
  }

  std::vector<std::thread> clients;
  for (int c = 0; c < std::max(1, o.concurrency); ++c) {
    clients.emplace_back([&] {
      for (int i = next.fetch_add(1); i < static_cast<int>(plan.size()); i = next.fetch_add(1)) {
        const RequestSpec& spec = plan[static_cast<size_t>(i)];
        const RequestResult r = SendRequest(endpoint, spec);
        const int64_t n = done.fetch_add(1) + 1;
        std::lock_guard lock(mu);
        ++result.requests;
        switch (r.outcome) {
          case Outcome::kOk:
            ++result.ok;
            ++result.ok_by_kind[KindName(spec)];
            result.output_tokens += r.output_tokens;
            break;
          case Outcome::kCancelled: ++result.cancelled; break;
          case Outcome::kFailed:
            ++result.failed;
            if (result.errors.size() < 10) result.errors.push_back(fmt::format("{}: {}", KindName(spec), r.error));
            break;
        }
        if (o.progress && (n % 100 == 0 || n == static_cast<int64_t>(plan.size()))) {
          std::fprintf(stderr, "\r\033[Ksoak: %lld/%zu (%lld failed, %lld cancelled)", static_cast<long long>(n),
                       plan.size(), static_cast<long long>(result.failed), static_cast<long long>(result.cancelled));
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  result.duration_s = seconds();
  if (o.progress) std::fprintf(stderr, "\n");

  // Cancelled streams stop at their next token: give them a moment, then nothing may be running.
  for (int i = 0; i < 100; ++i) {
    const std::string metrics = Get(endpoint, "/metrics");
    result.running_after = metrics.empty() ? -1 : static_cast<int64_t>(MetricValue(metrics, "trinity_requests_running"));
    if (result.running_after == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int health = 0;
  Get(endpoint, "/health", &health);
  result.healthy_after = health == 200;
  if (sampler.joinable()) {
    {
      std::lock_guard lock(sampler_mu);
      stop_sampler = true;
    }
    sampler_cv.notify_all();
    sampler.join();
    const int64_t rss = ReadRssKib(o.server_pid);  // after the run settled
    if (rss > 0) result.rss.push_back({seconds(), done.load(), rss});
    else result.healthy_after = false;
  }
  if (!result.rss.empty()) {
    result.rss_first_kib = result.rss.front().rss_kib;
    result.rss_last_kib = result.rss.back().rss_kib;
    result.rss_warm_kib = result.rss_last_kib;
    for (const RssSample& s : result.rss) {
      if (s.requests_done >= o.n_requests / 10) {
        result.rss_warm_kib = s.rss_kib;
        break;
      }
    }
    for (const RssSample& s : result.rss) result.rss_max_kib = std::max(result.rss_max_kib, s.rss_kib);
    result.rss_flat = static_cast<double>(result.rss_last_kib - result.rss_warm_kib) <= o.max_rss_growth_mib * 1024.0;
  }
  result.passed = result.failed == 0 && result.healthy_after && result.running_after == 0 && result.rss_flat &&
                  result.requests == static_cast<int64_t>(plan.size());
  return result;
}

json ToJson(const SoakResult& r) {
  json rss = json::array();
  for (const RssSample& s : r.rss) rss.push_back({s.t_s, s.requests_done, s.rss_kib});
  return {{"requests", r.requests},
          {"ok", r.ok},
          {"cancelled", r.cancelled},
          {"failed", r.failed},
          {"ok_by_kind", r.ok_by_kind},
          {"errors", r.errors},
          {"duration_s", r.duration_s},
          {"output_tokens", r.output_tokens},
          {"healthy_after", r.healthy_after},
          {"running_after", r.running_after},
          {"rss_first_kib", r.rss_first_kib},
          {"rss_warm_kib", r.rss_warm_kib},
          {"rss_last_kib", r.rss_last_kib},
          {"rss_max_kib", r.rss_max_kib},
          {"rss_flat", r.rss_flat},
          {"rss_samples", rss},  // [t_s, requests_done, rss_kib]
          {"passed", r.passed}};
}

}  // namespace trinity::loadgen
