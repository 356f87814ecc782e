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
// slices lost more. PrefetchStreams asks for each stream's line 2 KB ahead (past a row's end is
// the next row of its stream; past the range's end it only fetches a few lines more): with it, the
// F16 slices read at 75-80 GB/s. About what the streams must have in flight: ~150-200 ns of loaded
// memory latency x ~10 GB/s per stream.
//
// One distance into L1 does not go further: 4 KB ahead read slower than 2 KB (L1 has few miss
// buffers; a likely cause, not measured here). Two distances, 1 KB into L1 and 4 KB into L2
// (prefetcht1), keep more in flight: the 2560 x 6912 ternary GEMV, one thread, over 512 MiB of
// copies, one process alternating (bench/RESULTS.md, seventeenth session) read 1.13-1.19x faster
// than with 2 KB into L1 alone (0.89-0.94 of a plain 4-stream read of the same bytes, against
// 0.76-0.78), and 2B-4T decode ran 3-5% faster on two threads, 6-17% on one.
#pragma once

#include <cstdint>

namespace trinity::kernels {

inline constexpr int64_t kStreamPrefetchBytes = 1024;
inline constexpr int64_t kStreamPrefetchL2Bytes = 4096;

// Prefetches of the lines kStreamPrefetchBytes (into L1) and kStreamPrefetchL2Bytes (into L2,
// prefetcht1) past `at` in each of R streams `stride` bytes apart: called once per 64 bytes a
// stream advances.
template <int R>
inline void PrefetchStreams(const void* at, uint64_t stride) {
  const char* near = static_cast<const char*>(at) + kStreamPrefetchBytes;
  const char* far = static_cast<const char*>(at) + kStreamPrefetchL2Bytes;
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    __builtin_prefetch(near + i * stride, 0, 3);
    __builtin_prefetch(far + i * stride, 0, 2);
  }
}

// tile(r, part) takes rows r, r + part, ..., r + (R - 1) * part; one(r) the last rows (< R).
template <int R, class Tile, class One>
inline void RowStreams(int64_t row_begin, int64_t row_end, const Tile& tile, const One& one) {
  const int64_t part = (row_end - row_begin) / R;
  for (int64_t i = 0; i < part; ++i) tile(row_begin + i, part);
  for (int64_t r = row_begin + R * part; r < row_end; ++r) one(r);
}

}  // namespace trinity::kernels
