// Memory in 2 MiB pages for the weights that decode streams every token.
//
// Decode reads ~1.2 GB of weights per token of the 2B-4T shape, in sequential streams. From the
// file's mapping (page-cache pages, mostly 4 KiB) a thread reads them about half as fast as the
// same bytes copied into anonymous memory advised with MADV_HUGEPAGE, which the kernel backs with
// 2 MiB pages (2B-4T, `trinity bench --engine -t 1 -p 0 -n 128`, Zen 5, alternated: 9.7-11.1 tok/s
// mapped against 23.2-24.3 copied; bench/RESULTS.md, thirteenth session). A copy in 4 KiB pages
// was erratic (10-19 tok/s against 12-14 mapped and 17-21 in 2 MiB pages in one alternated run),
// so without transparent huge pages (THP "never") the weights stay mapped. The kernel
// micro-benchmarks read alike from 4 KiB and 2 MiB anonymous pages: what the mapping costs is
// not only the TLB but where the page cache's pages lie (not measurable without hardware counters
// in this VM).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace trinity {

// Whether this kernel gives 2 MiB pages to memory advised with MADV_HUGEPAGE:
// /sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise" (false when it is "never",
// or unreadable).
bool TransparentHugePagesAvailable();

// Bytes of this process's anonymous memory that sit in transparent huge pages now
// (/proc/self/smaps_rollup AnonHugePages), or -1 when the kernel does not say.
int64_t AnonHugePageBytes();

// An anonymous, 2 MiB-aligned region advised MADV_HUGEPAGE; pages are provided on first write, so
// the kernel backs each whole 2 MiB of it with one huge page where it can. Move-only; unmapped on
// destruction. Throws std::bad_alloc when the mapping fails.
class HugePageBuffer {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;

  HugePageBuffer() = default;
  explicit HugePageBuffer(size_t bytes);
  ~HugePageBuffer();
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }  // the requested bytes

 private:
  void Release();

  void* mapping_ = nullptr;  // what mmap returned (the aligned data_ lies inside)
  size_t mapping_bytes_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Many arrays packed one after another in HugePageBuffers of at least kChunk bytes, so that small
// tensors (a 410 KB projection) share huge pages instead of each rounding up to its own. Not
// thread-safe; allocations live as long as the arena.
class HugePageArena {
 public:
  static constexpr size_t kChunk = size_t{64} << 20;
  static constexpr size_t kAlign = 64;  // every array starts on a cache line

  uint8_t* Allocate(size_t bytes);
  size_t allocated() const { return allocated_; }

 private:
  std::vector<HugePageBuffer> chunks_;
  size_t used_ = 0;  // bytes taken from the last chunk
  size_t allocated_ = 0;
};

}  // namespace trinity
