// A fixed pool of worker threads for data-parallel loops.
//
// Workers sleep on a condition variable between jobs: an idle engine (a server waiting for
// requests) uses no CPU. Before sleeping, a worker (and a caller waiting for the workers) polls
// for kSpinMicros: a forward pass is a chain of short jobs (several per layer), and waking a
// sleeping thread costs tens of microseconds here, more than a small model's whole job. The
// calling thread takes part in every job.
//
// Handing a job over takes no lock while the threads poll: the caller writes the job, then bumps
// generation_; a worker that sees the new generation reads the job and, when done, counts pending_
// down. The mutex and condition variables serve only threads that have gone to sleep, and are
// touched only when one has (sleepers_, caller_sleeping_): a 2B-4T token is ~150 jobs, and each
// lock that moves between the cores costs a cache-line round trip.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace trinity {

class ThreadPool {
 public:
  // n_threads total, including the caller (n_threads <= 1: everything runs on the caller).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int n_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into an equal run per thread and each run into up to kChunksPerThread
  // contiguous chunks (rounded to `grain`, at least kMinUnitsPerChunk grains each, at least one
  // chunk per thread) of halving size, and runs fn(begin, end) on each: every thread takes its own
  // run's chunks in order, longest first (an uncontended counter of its own), then what is still
  // unclaimed of the other threads' runs, their shortest (a thread slowed by anything, another
  // process on its core included, ends up with fewer); returns when all are done. fn may run
  // several times on one thread. Not re-entrant.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // Default thread count: the number of cores this process may run on.
  static int DefaultThreads();

 private:
  // One thread's run of chunks: the next to take and the end (set before a job is published).
  struct alignas(64) Share {
    std::atomic<int> next{0};
    int end = 0;
  };

  void WorkerLoop(int index);
  void RunChunks(int self, const std::function<void(int64_t, int64_t)>& fn, int64_t n, int64_t grain, int chunks);

  static constexpr int64_t kSpinMicros = 50;
  // Measured on the 2B-4T shape's decode (Zen 5, two threads, tokens alternated in one process):
  // eight halving chunks per thread of at least 4 grains ran 1-2% faster than four of at least
  // 16, which ran faster than four equal chunks in 9 of 9 runs (median +1.1%).
  static constexpr int64_t kChunksPerThread = 8;
  static constexpr int64_t kMinUnitsPerChunk = 4;

  std::vector<std::thread> workers_;
  std::unique_ptr<Share[]> shares_;  // one per thread, the caller's first
  // The job, in one cache line with generation_: written by the caller before it bumps
  // generation_ (release), read by a worker after it sees the new value (acquire).
  alignas(64) std::atomic<uint64_t> generation_{0};
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  int job_chunks_ = 0;
  std::atomic<bool> stop_{false};
  alignas(64) std::atomic<int> pending_{0};  // workers still on the current job
  // Sleeping. A thread about to sleep announces it (seq_cst) and then re-checks its condition
  // under mutex_; the thread that changes the condition does so (seq_cst) and then looks for the
  // announcement: one of the two always sees the other, so no wake-up is lost.
  alignas(64) std::atomic<int> sleepers_{0};      // workers asleep on work_cv_
  std::atomic<bool> caller_sleeping_{false};      // the caller asleep on done_cv_
  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
};

}  // namespace trinity
