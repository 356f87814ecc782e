// The access pattern of the decode GEMVs, shared by the x86 kernel files.
//
// Decode reads every weight once, so the GEMVs (ternary, the LM heads) are bound by how fast one
// core streams memory, and that depends on the access pattern: several long sequential streams
// side by side read faster than one (more misses in flight, each followed by the prefetcher),
// while several ADJACENT rows read together are streams only one row long, which the prefetcher
// follows badly. RowStreams cuts a thread's rows into R equal parts and hands `tile` the i-th row
// of every part: the R rows of a tile are R long sequential streams. Measurements: cpu_avx2.cc
// (Zen 3) and cpu_avx512.cc (Zen 5).
//
// The hardware prefetcher alone does not run far enough ahead of streams that carry work: on the
// Zen 5, two threads, 4 row streams each, a plain read of 64 MB slices went at 78-83 GB/s and the
// same bytes converted from F16 and multiplied at 66 (one thread 37-40 and 31-34), and short
// slices lost more. PrefetchStreams asks for each stream's line kStreamPrefetchBytes ahead (past
// a row's end is the next row of its stream; past the range's end it only fetches a few lines
// more): with it, the F16 slices read at 75-80 GB/s. About what the streams must have in flight:
// ~150-200 ns of loaded memory latency x ~10 GB/s per stream.
#pragma once

#include <cstdint>

namespace trinity::kernels {

inline constexpr int64_t kStreamPrefetchBytes = 2048;

// A prefetch of the line kStreamPrefetchBytes past `at` in each of R streams `stride` bytes apart:
// called once per 64 bytes a stream advances.
template <int R>
inline void PrefetchStreams(const void* at, uint64_t stride) {
  const char* p = static_cast<const char*>(at) + kStreamPrefetchBytes;
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) __builtin_prefetch(p + i * stride, 0, 3);
}

// tile(r, part) takes rows r, r + part, ..., r + (R - 1) * part; one(r) the last rows (< R).
template <int R, class Tile, class One>
inline void RowStreams(int64_t row_begin, int64_t row_end, const Tile& tile, const One& one) {
  const int64_t part = (row_end - row_begin) / R;
  for (int64_t i = 0; i < part; ++i) tile(row_begin + i, part);
  for (int64_t r = row_begin + R * part; r < row_end; ++r) one(r);
}

}  // namespace trinity::kernels
