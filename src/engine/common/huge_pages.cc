#include "engine/common/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <utility>

namespace trinity {

bool TransparentHugePagesAvailable() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(in, line)) return false;
  // e.g. "always [madvise] never": the bracketed word is the setting.
  return line.find("[always]") != std::string::npos || line.find("[madvise]") != std::string::npos;
}

int64_t AnonHugePageBytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("AnonHugePages:", 0) != 0) continue;
    std::istringstream fields(line.substr(14));
    int64_t kib = -1;
    fields >> kib;
    return kib < 0 ? -1 : kib * 1024;
  }
  return -1;
}

HugePageBuffer::HugePageBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  // Over-allocate by one huge page and use the 2 MiB-aligned part: a huge page needs an aligned
  // virtual range. The region's end is rounded up too, so its last page can be huge.
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  mapping_bytes_ = rounded + kHugePage;
  mapping_ = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw std::bad_alloc();
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(mapping_);
  data_ = reinterpret_cast<uint8_t*>((base + kHugePage - 1) / kHugePage * kHugePage);
  // Best effort: where THP is off this fails or does nothing and the pages are ordinary ones.
  madvise(data_, rounded, MADV_HUGEPAGE);
}

HugePageBuffer::~HugePageBuffer() { Release(); }

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept
    : mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_bytes_(std::exchange(other.mapping_bytes_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void HugePageBuffer::Release() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
  mapping_ = nullptr;
  mapping_bytes_ = 0;
  data_ = nullptr;
  size_ = 0;
}

uint8_t* HugePageArena::Allocate(size_t bytes) {
  const size_t need = (bytes + kAlign - 1) / kAlign * kAlign;
  if (chunks_.empty() || used_ + need > chunks_.back().size()) {
    // A new chunk; what is left of the last one stays unused (never written, so never resident).
    chunks_.emplace_back(std::max(need, kChunk));
    used_ = 0;
  }
  uint8_t* p = chunks_.back().data() + used_;
  used_ += need;
  allocated_ += bytes;
  return p;
}

}  // namespace trinity
