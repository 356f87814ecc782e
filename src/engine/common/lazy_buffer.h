// A zero-filled array whose memory the kernel provides on first touch: anonymous mmap, so pages
// never written cost no RAM. The KV cache is sized for the whole context but a request uses the
// positions it reaches; with std::vector every byte would be written (and resident) at once.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

namespace trinity {

template <typename T>
class LazyBuffer {
 public:
  LazyBuffer() = default;
  explicit LazyBuffer(size_t n) : size_(n) {
    if (n == 0) return;
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<T*>(p);
  }
  ~LazyBuffer() { Release(); }
  LazyBuffer(LazyBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  LazyBuffer& operator=(LazyBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  LazyBuffer(const LazyBuffer&) = delete;
  LazyBuffer& operator=(const LazyBuffer&) = delete;

  // Maps the pages of elements [first, first + count) now, in one system call, instead of one page
  // fault each as they are first written (a fault costs microseconds, more under a hypervisor: an
  // 8-stream decode step of the 2B-4T shape spent 7 of its ~95 ms faulting in KV-cache pages).
  // Best effort: on a kernel without MADV_POPULATE_WRITE (< 5.14) pages fault in as before.
  void Prefault(size_t first, size_t count) {
    if (data_ == nullptr || count == 0) return;
    static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));  // 4 KB, 16 KB, 64 KB
    const uintptr_t begin = reinterpret_cast<uintptr_t>(data_ + first) & ~(page - 1);
    const uintptr_t end = reinterpret_cast<uintptr_t>(data_ + std::min(size_, first + count));
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite);
  }

  // Asks for 2 MiB pages (MADV_HUGEPAGE) for the parts not yet touched: each later first touch
  // of an aligned, still empty 2 MiB range maps one huge page (zeroed) where the kernel has
  // transparent huge pages; ranges already holding small pages keep them. Best effort.
  void AdviseHugePages() {
    if (data_ != nullptr) madvise(data_, bytes(), MADV_HUGEPAGE);
  }
  // Turns the small pages already mapped for elements [first, first + count), and the rest of
  // the 2 MiB ranges they lie in, into huge pages now (MADV_COLLAPSE, Linux 6.1+; a copy of
  // those bytes). Best effort: older kernels, or no huge page free, leave them as they are.
  void CollapseHugePages(size_t first, size_t count) {
    if (data_ == nullptr || count == 0) return;
    constexpr uintptr_t kHuge = uintptr_t{2} << 20;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(data_), hi = lo + bytes();
    const uintptr_t begin = std::max(lo, reinterpret_cast<uintptr_t>(data_ + first) & ~(kHuge - 1));
    const uintptr_t end = std::min(hi, (reinterpret_cast<uintptr_t>(data_ + std::min(size_, first + count)) + kHuge - 1) & ~(kHuge - 1));
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, kCollapse);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  size_t bytes() const { return size_ * sizeof(T); }
  void Release() {
    if (data_ != nullptr) munmap(data_, bytes());
    data_ = nullptr;
    size_ = 0;
  }

#ifdef MADV_COLLAPSE
  static constexpr int kCollapse = MADV_COLLAPSE;
#else
  static constexpr int kCollapse = 25;  // Linux's value
#endif
#ifdef MADV_POPULATE_WRITE
  static constexpr int kPopulateWrite = MADV_POPULATE_WRITE;
#else
  static constexpr int kPopulateWrite = 23;  // Linux's value; older headers lack the name
#endif

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace trinity
