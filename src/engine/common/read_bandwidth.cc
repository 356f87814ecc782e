#include "engine/common/read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iterator>
#include <memory>

#include "engine/common/huge_pages.h"
#include "engine/common/thread_pool.h"

namespace trinity {

namespace {

// Sum of n 64-bit words read as kStreams sequential streams side by side (the range cut into
// kStreams equal parts); four accumulators per stream so the loads wait on no add chain (the
// compiler vectorises them).
template <int kStreams>
uint64_t SumStreams(const uint64_t* p, int64_t n) {
  const int64_t part = n / kStreams / 4 * 4;
  uint64_t acc[kStreams][4] = {};
  for (int64_t i = 0; i < part; i += 4) {
    for (int s = 0; s < kStreams; ++s) {
      for (int k = 0; k < 4; ++k) acc[s][k] += p[s * part + i + k];
    }
  }
  uint64_t total = 0;
  for (int64_t i = part * kStreams; i < n; ++i) total += p[i];
  for (const auto& a : acc) total += a[0] + a[1] + a[2] + a[3];
  return total;
}

// Whole-range sum in blocks of kBlockWords, each block read as kStreams streams.
template <int kStreams>
uint64_t SumRange(const uint64_t* p, int64_t n) {
  constexpr int64_t kBlockWords = int64_t{1} << 17;  // 1 MiB: long enough streams for the prefetcher
  uint64_t total = 0;
  for (int64_t b = 0; b < n; b += kBlockWords) total += SumStreams<kStreams>(p + b, std::min(kBlockWords, n - b));
  return total;
}

constexpr int64_t kGrain = 4096;  // words: 32 KiB
using Sum = uint64_t (*)(const uint64_t*, int64_t);
constexpr Sum kSums[] = {SumRange<1>, SumRange<2>, SumRange<4>};
static_assert(std::size(kSums) == ReadProbe::kPatterns);

}  // namespace

ReadProbe::ReadProbe(ThreadPool& pool, int64_t bytes, bool in_huge_pages)
    : pool_(pool), n_words_(std::max<int64_t>(bytes / 8, 1 << 16)) {
  if (in_huge_pages) {
    huge_ = HugePageBuffer(static_cast<size_t>(n_words_) * 8);
    words_ = reinterpret_cast<uint64_t*>(huge_.data());
  } else {
    plain_.reset(new uint64_t[static_cast<size_t>(n_words_)]);
    words_ = plain_.get();
  }
  // First touch from the threads that will read (pages land near them); also the warm-up.
  pool_.ParallelFor(
      n_words_, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) words_[i] = static_cast<uint64_t>(i);
      },
      kGrain);
}

ReadProbe::~ReadProbe() = default;

double ReadProbe::Pass(int pattern) {
  const Sum sum = kSums[pattern];
  std::atomic<uint64_t> sink{0};
  const auto start = std::chrono::steady_clock::now();
  pool_.ParallelFor(
      n_words_, [&](int64_t begin, int64_t end) { sink.fetch_add(sum(words_ + begin, end - begin), std::memory_order_relaxed); },
      kGrain);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto n = static_cast<uint64_t>(n_words_);
  const uint64_t expected = n % 2 == 0 ? n / 2 * (n - 1) : (n - 1) / 2 * n;  // 0 + 1 + ... + (n - 1)
  return sink.load() == expected ? s : 0.0;
}

double MeasureReadGbps(int threads, int64_t bytes) {
  if (threads <= 0) threads = ThreadPool::DefaultThreads();
  ThreadPool pool(threads);
  constexpr int kRounds = 3;
  // The best pass over one buffer, in seconds; 0 if a sum is wrong. The patterns take turns, so
  // that a busy moment on a shared machine costs no pattern all its passes.
  auto best_pass = [&](ReadProbe& probe) {
    double best_s = 0.0;
    for (int round = 0; round < kRounds; ++round) {
      for (int pattern = 0; pattern < ReadProbe::kPatterns; ++pattern) {
        const double s = probe.Pass(pattern);
        if (s == 0.0) return 0.0;
        if (best_s == 0.0 || s < best_s) best_s = s;
      }
    }
    return best_s;
  };
  // Ordinary pages, then 2 MiB ones (where the kernel has them: the weights' pages, see
  // huge_pages.h), one buffer at a time; the faster is the memory's rate.
  double best_s = 0.0;
  int64_t probe_bytes = 0;
  {
    ReadProbe probe(pool, bytes, /*in_huge_pages=*/false);
    probe_bytes = probe.bytes();
    best_s = best_pass(probe);
    if (best_s == 0.0) return 0.0;
  }
  if (TransparentHugePagesAvailable()) {
    ReadProbe probe(pool, bytes, /*in_huge_pages=*/true);
    const double s = best_pass(probe);
    if (s == 0.0) return 0.0;
    best_s = std::min(best_s, s);
  }
  return static_cast<double>(probe_bytes) / best_s / 1e9;
}

}  // namespace trinity
