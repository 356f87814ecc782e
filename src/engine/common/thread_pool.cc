#include "engine/common/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace trinity {

namespace {

// Chunk j of the m chunks of thread `share`'s run (the threads' runs: equal parts of [0, n),
// boundaries rounded to multiples of grain). The chunks halve in size (1/2, 1/4, ..., the last two
// equal): the owner starts with its longest (long sequential streams for the GEMVs), and the short
// ones at its end are what a thread that is done early takes over, so the threads end close together.
void ChunkRange(int64_t n, int64_t grain, int parts, int share, int j, int m, int64_t* begin, int64_t* end) {
  const int64_t units = (n + grain - 1) / grain;
  const int64_t first = units * share / parts;
  const int64_t len = units * (share + 1) / parts - first;
  auto at = [&](int i) { return i >= m ? len : len - (len >> i); };
  *begin = std::min(n, (first + at(j)) * grain);
  *end = std::min(n, (first + at(j + 1)) * grain);
}

// Polls `done` for up to `micros`; true as soon as it holds.
template <typename Done>
bool SpinFor(int64_t micros, Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : shares_(std::make_unique<Share[]>(static_cast<size_t>(std::max(1, n_threads)))) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // a worker between its check and its wait holds it
  }
  work_cv_.notify_all();
  for (auto& worker : workers_) worker.join();
}

int ThreadPool::DefaultThreads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int parts = n_threads();
  if (parts == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_grain_ = grain;
  // Small jobs (under kMinUnitsPerChunk grains per thread: the built-in model's few-microsecond
  // ones) keep one chunk per thread.
  const int64_t units = (n + grain - 1) / grain;
  job_chunks_ = static_cast<int>(
      std::min(units, std::clamp<int64_t>(units / kMinUnitsPerChunk, parts, int64_t{parts} * kChunksPerThread)));
  for (int i = 0; i < parts; ++i) {  // thread i owns chunks [i * chunks / parts, (i + 1) * chunks / parts)
    shares_[i].next.store(i * job_chunks_ / parts, std::memory_order_relaxed);
    shares_[i].end = (i + 1) * job_chunks_ / parts;
  }
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job, and is ordered before the load of sleepers_
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    work_cv_.notify_all();
  }
  RunChunks(0, fn, n, grain, job_chunks_);
  // seq_cst loads (plain loads on x86-64, ldar on AArch64, as acquire ones): the same check serves
  // the polling and, after the announcement, the sleep.
  auto done = [this] { return pending_.load() == 0; };
  if (!SpinFor(kSpinMicros, done)) {
    std::unique_lock<std::mutex> lock(mutex_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, done);
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }
  job_ = nullptr;
}

void ThreadPool::RunChunks(int self, const std::function<void(int64_t, int64_t)>& fn, int64_t n, int64_t grain,
                           int chunks) {
  const int parts = n_threads();
  for (int k = 0; k < parts; ++k) {  // its own share first, then what is left of the others'
    const int s = (self + k) % parts;
    Share& share = shares_[s];
    if (k > 0 && share.next.load(std::memory_order_relaxed) >= share.end) continue;  // nothing left: no write
    const int first = s * chunks / parts;  // the share's chunks are [first, end)
    for (int c; (c = share.next.fetch_add(1, std::memory_order_relaxed)) < share.end;) {
      int64_t begin, end;
      ChunkRange(n, grain, parts, s, c - first, share.end - first, &begin, &end);
      if (begin < end) fn(begin, end);
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  auto woken = [&] { return stop_.load() || generation_.load() != seen; };  // seq_cst, as `done` above
  for (;;) {
    if (!SpinFor(kSpinMicros, woken)) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleepers_.fetch_add(1);  // seq_cst: ordered before the loads of stop_ and generation_ below
      work_cv_.wait(lock, woken);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stop_.load(std::memory_order_relaxed)) return;
    seen = generation_.load(std::memory_order_acquire);
    RunChunks(index, *job_, job_n_, job_grain_, job_chunks_);
    // The last access to the job: once pending_ reaches 0 the caller may return and publish the next.
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {  // seq_cst, as the caller's store and load
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace trinity
