#pragma once

#include <cstdint>
#include <memory>

#include "engine/common/huge_pages.h"

namespace trinity {

class ThreadPool;

// Memory read bandwidth, the denominator of a roofline: `threads` threads (0: one per core) read
// a `bytes` buffer (>> any cache), each its own contiguous share, in every access pattern the
// probe knows (1, 2 and 4 sequential streams per thread read side by side), three passes of each
// with the patterns taking turns, after the first touch of the buffer; the best pass wins. Then
// the same over a buffer in 2 MiB pages (where the kernel has transparent huge pages: the copied
// weights' pages), the best of both kept.
// Returns 1e9 bytes per second (0 if its own check of the sums fails).
//
// One stream per thread is not the ceiling: on a Zen 3 core, one thread read 9.5-11 GB/s as one
// stream and up to 15-17 GB/s as two or four (bench/RESULTS.md, tenth session), and the F16 LM
// head, four row streams, read faster than a one-stream probe: a roofline against the one-stream
// rate could pass 100%.
double MeasureReadGbps(int threads, int64_t bytes);

// The same probe one pass at a time, for measurements that take turns with other work on the same
// threads (trinity bench --engine's alternated roofline: a probe pass after every decode token, so
// both see the same moments of a shared machine). The buffer is written once here (the first
// touch, from pool's threads).
class ReadProbe {
 public:
  static constexpr int kPatterns = 3;  // 1, 2 and 4 streams per thread

  // in_huge_pages: the buffer is advised MADV_HUGEPAGE (2 MiB pages where the kernel gives them).
  ReadProbe(ThreadPool& pool, int64_t bytes, bool in_huge_pages);
  ~ReadProbe();
  ReadProbe(const ReadProbe&) = delete;
  ReadProbe& operator=(const ReadProbe&) = delete;

  int64_t bytes() const { return n_words_ * 8; }
  // One pass of pattern (0 .. kPatterns - 1) over the whole buffer: its seconds, or 0 if the sum
  // read is wrong (so the compiler cannot drop the reads, and a broken probe says so).
  double Pass(int pattern);

 private:
  ThreadPool& pool_;
  int64_t n_words_ = 0;
  std::unique_ptr<uint64_t[]> plain_;
  HugePageBuffer huge_;
  uint64_t* words_ = nullptr;
};

}  // namespace trinity
