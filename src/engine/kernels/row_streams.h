// The access pattern of the decode GEMVs, shared by the x86 kernel files.
//
// Decode reads every weight once, so the GEMVs (ternary, the LM heads) are bound by how fast one
// core streams memory, and that depends on the access pattern: several long sequential streams
// side by side read faster than one (more misses in flight, each followed by the prefetcher),
// while several ADJACENT rows read together are streams only one row long, which the prefetcher
// follows badly. RowStreams cuts a thread's rows into R equal parts and hands `tile` the i-th row
// of every part: the R rows of a tile are R long sequential streams. Measurements: cpu_avx2.cc
// (Zen 3) and cpu_avx512.cc (Zen 5).
#pragma once

#include <cstdint>

namespace trinity::kernels {

// tile(r, part) takes rows r, r + part, ..., r + (R - 1) * part; one(r) the last rows (< R).
template <int R, class Tile, class One>
inline void RowStreams(int64_t row_begin, int64_t row_end, const Tile& tile, const One& one) {
  const int64_t part = (row_end - row_begin) / R;
  for (int64_t i = 0; i < part; ++i) tile(row_begin + i, part);
  for (int64_t r = row_begin + R * part; r < row_end; ++r) one(r);
}

}  // namespace trinity::kernels
