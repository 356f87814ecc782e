// LazyBuffer: zero-filled memory mapped on first touch, and Prefault, which maps a range ahead of
// use in one system call (the KV cache prefaults the positions a sequence is about to reach).
#include "engine/common/lazy_buffer.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <vector>

namespace trinity {
namespace {

// Resident pages of [p, p + bytes) (mincore), or -1 when the kernel cannot tell.
int64_t ResidentPages(const void* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  std::vector<unsigned char> vec((end - begin + page - 1) / page);
  if (mincore(reinterpret_cast<void*>(begin), end - begin, vec.data()) != 0) return -1;
  int64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

// Whether this kernel has MADV_POPULATE_WRITE (Linux 5.14+); Prefault is a no-op without it.
bool KernelPopulates() {
  const long page = sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool ok = madvise(p, page, 23 /* MADV_POPULATE_WRITE */) == 0;
  munmap(p, page);
  return ok;
}

TEST(LazyBufferTest, PagesAreMappedOnFirstTouchOrPrefault) {
  const size_t page_floats = static_cast<size_t>(sysconf(_SC_PAGESIZE)) / sizeof(float);
  LazyBuffer<float> buf(64 * page_floats);
  ASSERT_NE(buf.data(), nullptr);
  if (ResidentPages(buf.data(), 64 * page_floats * sizeof(float)) < 0) GTEST_SKIP() << "mincore unavailable";
  EXPECT_EQ(ResidentPages(buf.data(), 64 * page_floats * sizeof(float)), 0);

  // Pages 8 .. 15, given as an element range that starts and ends mid-page.
  buf.Prefault(8 * page_floats + 3, 8 * page_floats - 6);
  if (KernelPopulates()) {
    EXPECT_EQ(ResidentPages(buf.data() + 8 * page_floats, 8 * page_floats * sizeof(float)), 8);
    EXPECT_EQ(ResidentPages(buf.data(), 8 * page_floats * sizeof(float)), 0);
    EXPECT_EQ(ResidentPages(buf.data() + 16 * page_floats, 48 * page_floats * sizeof(float)), 0);
  }
  // A range past the end is clamped; an empty one does nothing.
  buf.Prefault(60 * page_floats, 100 * page_floats);
  buf.Prefault(0, 0);
  // Prefaulted or not, the memory reads as zeros and keeps what is written.
  for (size_t i = 0; i < 64 * page_floats; i += 97) EXPECT_EQ(buf.data()[i], 0.0f) << i;
  buf.data()[9 * page_floats] = 1.5f;
  buf.data()[63 * page_floats + 5] = -2.0f;
  EXPECT_EQ(buf.data()[9 * page_floats], 1.5f);
  EXPECT_EQ(buf.data()[63 * page_floats + 5], -2.0f);
}

// Huge pages asked for after part of the buffer was written (as the KV cache does past
// kKvHugePagesFrom positions), and the written part collapsed into them: every value kept, the
// rest still zero, writes after it kept too. (Whether the kernel gave huge pages is its choice;
// the values are what must hold either way.)
TEST(LazyBufferTest, HugePagesKeepWhatWasWritten) {
  const size_t n = (size_t{6} << 20) / sizeof(float) + 1234;  // 6 MiB and a bit, odd
  LazyBuffer<float> buf(n);
  const size_t written = (size_t{3} << 20) / sizeof(float) + 77;  // ends mid huge page
  for (size_t i = 0; i < written; ++i) buf.data()[i] = static_cast<float>(i % 1000) - 500.0f;
  buf.AdviseHugePages();
  buf.CollapseHugePages(0, written);
  buf.CollapseHugePages(n - 10, 100);  // clamped at the end
  LazyBuffer<float>().CollapseHugePages(0, 10);  // empty: nothing
  for (size_t i = 0; i < written; ++i) ASSERT_EQ(buf.data()[i], static_cast<float>(i % 1000) - 500.0f) << i;
  for (size_t i = written; i < n; i += 31) ASSERT_EQ(buf.data()[i], 0.0f) << i;
  buf.data()[n - 1] = 3.0f;
  buf.data()[written] = 4.0f;
  EXPECT_EQ(buf.data()[n - 1], 3.0f);
  EXPECT_EQ(buf.data()[written], 4.0f);
  EXPECT_EQ(buf.data()[written - 1], static_cast<float>((written - 1) % 1000) - 500.0f);
}

TEST(LazyBufferTest, EmptyBufferIgnoresPrefault) {
  LazyBuffer<float> empty;
  empty.Prefault(0, 100);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
}

}  // namespace
}  // namespace trinity
