// A zero-filled array whose memory the kernel provides on first touch: anonymous mmap, so pages
// never written cost no RAM. The KV cache is sized for the whole context but a request uses the
// positions it reaches; with std::vector every byte would be written (and resident) at once.
#pragma once

#include <sys/mman.h>

#include <cstddef>
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

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace trinity
