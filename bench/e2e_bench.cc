// End-to-end prefill and decode speed, reference forward pass vs the fast path on every CPU path
// this machine runs, for each thread count, side by side in one process (the machine is shared
// and noisy: ratios within one run are what to compare).
//
//   build-cpu/bench/e2e_bench MODEL [threads=1,2] [n_prompt=64] [n_gen=32] [paths=reference,ref,avx2,avx512]
//
// "reference" is ContextOptions::reference (scalar kernels, one token at a time); "ref" is the
// fast path's batching with the scalar kernels. Decode is greedy, teacher-free: each step feeds
// back the argmax. Roofline: weight bytes read per generated token / measured read bandwidth with
// the same thread count.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "engine/common/error.h"
#include "engine/common/thread_pool.h"
#include "engine/kernels/cpu.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// Read bandwidth with `threads` threads over 512 MiB, best of 4 passes, GB/s.
double ReadGbps(int threads) {
  const int64_t n = (int64_t{512} << 20) / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(n));
  trinity::ThreadPool pool(threads);
  pool.ParallelFor(n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i); }, 4096);
  std::atomic<uint64_t> sink{0};
  double best = 1e30;
  for (int pass = 0; pass < 4; ++pass) {
    const auto t0 = Clock::now();
    pool.ParallelFor(n, [&](int64_t b, int64_t e) {
      uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (int64_t i = b; i + 4 <= e; i += 4) a0 += buf[i], a1 += buf[i + 1], a2 += buf[i + 2], a3 += buf[i + 3];
      sink += a0 + a1 + a2 + a3;
    }, 4096);
    best = std::min(best, Since(t0));
  }
  return static_cast<double>(n) * 8.0 / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trinity;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [threads=1,2] [n_prompt=64] [n_gen=32] [paths=reference,ref,avx2,avx512]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const std::vector<std::string> threads = Split(argc > 2 ? argv[2] : "1,2");
  const int n_prompt = argc > 3 ? std::stoi(argv[3]) : 64;
  const int n_gen = argc > 4 ? std::stoi(argv[4]) : 32;
  const std::vector<std::string> paths = Split(argc > 5 ? argv[5] : "reference,ref,avx2,avx512");
  try {
    const auto model = Model::Load(path);
    const int64_t n_vocab = model->config().n_vocab;
    const double bytes = static_cast<double>(model->WeightBytesPerToken());
    std::printf("model %s: %.1f MB read per generated token; detected CPU path %s\n", model->config().name.c_str(), bytes / 1e6,
                kernels::CpuPathName(kernels::DetectCpuPath()));
    {
      // Warm-up: one token through the fast path touches every weight page of the mapping, so
      // the first measured path does not pay the page faults.
      Context warm(*model, ContextOptions{2, 1});
      const int32_t token = 0;
      warm.Eval(std::span<const int32_t>(&token, 1));
    }
    std::printf("%-10s %3s %8s %9s %9s %9s %9s %8s %9s %9s %8s\n", "path", "thr", "pp_tok", "pp_tok/s", "tg_tok/s", "tg_GB/s",
                "bw_GB/s", "roofline", "tg_median", "tg_best", "roof_best");
    for (const std::string& t : threads) {
      const int n_threads = std::stoi(t);
      const double bw = ReadGbps(n_threads);
      for (const std::string& p : paths) {
        ContextOptions options{n_prompt + n_gen + 1, n_threads};
        // "PATH+q8": the same path with the 8-bit LM head (Model::LmHeadQ8).
        std::string kp = p;
        if (kp.size() > 3 && kp.compare(kp.size() - 3, 3, "+q8") == 0) {
          options.lm_head = LmHeadFormat::kQ8;
          kp.resize(kp.size() - 3);
        }
        const double path_bytes = static_cast<double>(model->WeightBytesPerToken(options.lm_head == LmHeadFormat::kQ8));
        if (kp == "reference") {
          options.reference = true;
        } else {
          options.cpu_path = kernels::ParseCpuPath(kp);
          if (!kernels::CpuPathSupported(*options.cpu_path)) continue;
        }
        Context context(*model, options);
        std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
        for (int i = 0; i < n_prompt; ++i) prompt[i] = static_cast<int32_t>((1000 + 7919 * i) % std::min<int64_t>(n_vocab, 100000));
        auto t0 = Clock::now();
        auto logits = context.Eval(prompt);
        const double pp_s = Since(t0);
        int32_t tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        t0 = Clock::now();
        std::vector<double> step_s;
        for (int i = 0; i < n_gen; ++i) {
          const auto s0 = Clock::now();
          auto l = context.Eval(std::span<const int32_t>(&tok, 1));
          tok = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
          step_s.push_back(Since(s0));
        }
        const double tg_s = Since(t0);
        const double tg = n_gen / tg_s;
        // Per-token times: the median and the fastest token say what a quiet machine gives (the
        // mean carries every preemption by other processes on a shared machine).
        std::sort(step_s.begin(), step_s.end());
        const double med = step_s.empty() ? 0.0 : step_s[step_s.size() / 2], best = step_s.empty() ? 0.0 : step_s[0];
        std::printf("%-10s %3d %8d %9.2f %9.2f %9.2f %9.2f %7.1f%% %9.2f %9.2f %7.1f%%\n", p.c_str(), n_threads, n_prompt,
                    n_prompt / pp_s, tg, tg * path_bytes / 1e9, bw, 100.0 * tg * path_bytes / 1e9 / bw, 1.0 / med, 1.0 / best,
                    100.0 * path_bytes / best / 1e9 / bw);
        std::fflush(stdout);
      }
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    std::printf("peak resident memory (ru_maxrss, whole run incl. bandwidth buffers): %.1f MiB; model file %.1f MiB\n",
                usage.ru_maxrss / 1024.0, static_cast<double>(model->file().file_size()) / 1048576.0);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
