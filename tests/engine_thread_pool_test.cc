// ThreadPool::ParallelFor: every index of [0, n) runs exactly once, in chunks that start on the
// grain, whatever the thread count, also after threads have gone to sleep; a thread's run goes in
// chunks of halving size; a slow thread does not hold the others' share. The read bandwidth probe, which runs on the pool, reads every
// word exactly once in each pattern.
#include "engine/common/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/common/read_bandwidth.h"

namespace trinity {
namespace {

TEST(ThreadPoolTest, CoversEveryIndexOnceOnGrainBoundaries) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 7, 16, 17, 100, 1000, 4099}) {
      for (int64_t grain : {1, 4, 16, 256}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<bool> off_grain{false};
        pool.ParallelFor(
            n,
            [&](int64_t begin, int64_t end) {
              if (begin % grain != 0 || begin >= end || end > n) off_grain = true;
              for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
            },
            grain);
        ASSERT_FALSE(off_grain) << "threads=" << threads << " n=" << n << " grain=" << grain;
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(1, hits[static_cast<size_t>(i)].load()) << "threads=" << threads << " n=" << n << " grain=" << grain << " i=" << i;
      }
    }
  }
}

// The first chunk to start stalls until every other row is done (or 10 s pass): the other
// thread takes all the remaining chunks, so the stalled thread runs exactly one (with one
// contiguous chunk per thread, the other would stop at half and the stall would time out).
TEST(ThreadPoolTest, ChunksGoToWhicheverThreadIsFree) {
  ThreadPool pool(2);
  const int64_t n = 1024;
  std::mutex mutex;
  std::vector<std::pair<std::thread::id, int64_t>> runs;  // (thread, rows)
  std::atomic<bool> stalled{false};
  std::atomic<int64_t> done{0};
  pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
    bool expected = false;
    if (stalled.compare_exchange_strong(expected, true)) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (done.load() + (end - begin) < n && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::lock_guard<std::mutex> lock(mutex);
    runs.emplace_back(std::this_thread::get_id(), end - begin);
    done += end - begin;
  });
  ASSERT_GE(runs.size(), 3u);
  const std::thread::id slow = runs.back().first;  // the stalled run finishes last
  int slow_runs = 0;
  int64_t rows = 0;
  for (const auto& [id, r] : runs) {
    slow_runs += id == slow;
    rows += r;
  }
  EXPECT_EQ(1, slow_runs);
  EXPECT_EQ(n, rows);
}

// Each thread's run is cut into chunks of halving size (the last two equal), so the owner starts
// with a long stretch and the stretches others may take over at the end are short: 1024 rows, two
// threads, eight chunks each.
TEST(ThreadPoolTest, ChunksHalveInSizeWithinEachThreadsRun) {
  ThreadPool pool(2);
  std::mutex mutex;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  pool.ParallelFor(1024, [&](int64_t begin, int64_t end) {
    std::lock_guard<std::mutex> lock(mutex);
    chunks.emplace_back(begin, end);
  });
  std::sort(chunks.begin(), chunks.end());
  std::vector<std::pair<int64_t, int64_t>> expected;
  for (const int64_t run : {0, 512}) {
    for (const auto& [b, e] : {std::pair<int64_t, int64_t>{0, 256}, {256, 384}, {384, 448}, {448, 480}, {480, 496},
                               {496, 504}, {504, 508}, {508, 512}})
      expected.emplace_back(run + b, run + e);
  }
  EXPECT_EQ(expected, chunks);
}

// Threads that went to sleep are woken: workers idle longer than their polling (a pause between
// jobs) and a caller whose workers outlast its polling (a slow chunk), many times over, each job
// still covering every index once. A lost wake-up would hang here (ctest's timeout).
TEST(ThreadPoolTest, SleepingThreadsWakeForEveryJob) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 60; ++round) {
      const bool pause = round % 3 == 0, slow = round % 3 == 1;
      if (pause) std::this_thread::sleep_for(std::chrono::microseconds(500));
      const int64_t n = 64;
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
        if (slow && begin == n - 1) std::this_thread::sleep_for(std::chrono::microseconds(500));
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(1, hits[static_cast<size_t>(i)].load()) << "round " << round << " i=" << i;
    }
  }
}

// MeasureReadGbps checks its own sums (0 + 1 + ... + n-1 in every pass) and returns 0 when they
// are wrong: buffer sizes that no stream count or block divides exercise every tail.
TEST(ReadBandwidthTest, EveryPatternReadsEveryWordOnce) {
  for (const int64_t words : {int64_t{1} << 16, (int64_t{1} << 17) + 13, (int64_t{1} << 18) + (int64_t{1} << 17) + 7}) {
    for (const int threads : {1, 2, 3}) {
      EXPECT_GT(MeasureReadGbps(threads, words * 8), 0.0) << words << " words, " << threads << " threads";
    }
  }
}

// ReadProbe, one pass at a time on a caller's pool: every pattern sums every word once (its
// check passes), in ordinary and in huge-page-advised buffers.
TEST(ReadBandwidthTest, ProbePassesReadEveryWordOnce) {
  for (const int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (const bool huge : {false, true}) {
      ReadProbe probe(pool, ((int64_t{1} << 17) + 13) * 8, huge);
      EXPECT_EQ(probe.bytes(), ((int64_t{1} << 17) + 13) * 8);
      for (int pattern = 0; pattern < ReadProbe::kPatterns; ++pattern) {
        EXPECT_GT(probe.Pass(pattern), 0.0) << threads << " threads, pattern " << pattern << (huge ? ", huge" : "");
      }
    }
  }
}

}  // namespace
}  // namespace trinity
