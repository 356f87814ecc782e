// HugePageBuffer and HugePageArena: the memory the copied weights live in.
#include "engine/common/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace trinity {
namespace {

TEST(HugePagesTest, BufferIsAlignedWritableAndMovable) {
  const size_t bytes = 3 * HugePageBuffer::kHugePage + 12345;  // not a whole number of pages
  HugePageBuffer a(bytes);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(a.size(), bytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % HugePageBuffer::kHugePage, 0u);
  for (size_t i = 0; i < bytes; ++i) a.data()[i] = static_cast<uint8_t>(i * 7);
  uint8_t* p = a.data();
  HugePageBuffer b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.data(), p);
  HugePageBuffer c;
  c = std::move(b);
  ASSERT_EQ(c.data(), p);
  for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(c.data()[i], static_cast<uint8_t>(i * 7)) << i;
  EXPECT_EQ(c.data()[bytes - 1], static_cast<uint8_t>((bytes - 1) * 7));
  EXPECT_EQ(HugePageBuffer(0).data(), nullptr);
}

// Arrays of odd sizes, small and beyond one chunk: each on a cache line, none overlapping (every
// array filled with its own byte and checked after all were written).
TEST(HugePagesTest, ArenaArraysAreAlignedAndDisjoint) {
  HugePageArena arena;
  const std::vector<size_t> sizes = {1, 63, 64, 65, 409600, HugePageArena::kChunk - 100, 7,
                                     HugePageArena::kChunk + 3, 1638400, 5};
  std::vector<uint8_t*> arrays;
  size_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    uint8_t* p = arena.Allocate(sizes[i]);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % HugePageArena::kAlign, 0u) << i;
    std::memset(p, static_cast<int>(i + 1), sizes[i]);
    arrays.push_back(p);
    total += sizes[i];
  }
  EXPECT_EQ(arena.allocated(), total);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint8_t want = static_cast<uint8_t>(i + 1);
    EXPECT_EQ(arrays[i][0], want) << i;
    EXPECT_EQ(arrays[i][sizes[i] - 1], want) << i;
    EXPECT_EQ(arrays[i][sizes[i] / 2], want) << i;
  }
}

// AnonHugePages counts whole 2 MiB pages: a figure that is not a multiple of one was misread
// (e.g. its kB taken for bytes).
TEST(HugePagesTest, ReportsAnonymousHugePagesInWholePages) {
  HugePageBuffer buffer(8 * HugePageBuffer::kHugePage);
  std::memset(buffer.data(), 1, buffer.size());
  const int64_t bytes = AnonHugePageBytes();
  if (bytes < 0) GTEST_SKIP() << "no AnonHugePages in /proc/self/smaps_rollup";
  EXPECT_EQ(bytes % static_cast<int64_t>(HugePageBuffer::kHugePage), 0) << bytes;
  // The kernel may fall back to small pages (fragmented memory), so no lower bound is asserted;
  // where it gives them, the bench reports them (trinity bench --engine's "weights:" line).
}

}  // namespace
}  // namespace trinity
