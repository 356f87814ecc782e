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
//
// Eighteenth session, the same binary on another host of the same Zen 5 kind: without the
// prefetch, 2B-4T decode ran 1.04-1.17x faster (tokens alternated in one process), and the F16
// head alone read as fast as a plain read (a scratch harness, over 672 MB of copies) against 0.84
// with it. Prefetches next to the loads cost nothing there; only the far ones hurt, so it is the
// host's memory system, not the instructions. Neither choice is right on both hosts, so the
// kernels carry both (a template flag) and PrefetchTrial picks per thread, from the calls' own
// timings (cpu.h, StreamPrefetch).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "engine/kernels/cpu.h"

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

// Which variant of a decode GEMV a thread runs, with or without PrefetchStreams. Cycles of
// `trial` calls that alternate the two (with, without, with, ...) and are timed, then `run` calls
// of the one whose median rate was higher (the first on a tie). The trial comes back because a
// shared machine's memory changes under it. A thread's calls of one GEMV kind go through one
// trial: the calls of a trial mix the layers' shapes, but alternately, so each variant meets
// about the same mix; the median of each side keeps a stray slow call (preemption) out.
class PrefetchTrial {
 public:
  static constexpr int kMaxTrial = 64;
  constexpr PrefetchTrial(int trial, int run) : trial_(std::clamp(trial / 2 * 2, 2, kMaxTrial)), run_(run) {}

  bool timing() const { return call_ < trial_; }
  bool prefetch() const { return timing() ? call_ % 2 == 0 : choice_; }
  // Ends the call; `rate` (bytes per second) counts for trial calls only.
  void Done(double rate) {
    if (timing()) rates_[static_cast<size_t>(call_)] = rate;
    if (++call_ == trial_) choice_ = Median(0) >= Median(1);
    if (call_ >= trial_ + run_) call_ = 0;
  }

 private:
  // The median rate of the trial calls with (0) or without (1) the prefetch.
  double Median(int side) {
    std::array<double, kMaxTrial / 2> v{};
    const int n = trial_ / 2;
    for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = rates_[static_cast<size_t>(2 * i + side)];
    std::sort(v.begin(), v.begin() + n);
    return n % 2 ? v[static_cast<size_t>(n / 2)] : 0.5 * (v[static_cast<size_t>(n / 2 - 1)] + v[static_cast<size_t>(n / 2)]);
  }

  int trial_, run_;
  int call_ = 0;
  bool choice_ = true;
  std::array<double, kMaxTrial> rates_{};
};

// Runs kernel(std::true_type) (prefetching) or kernel(std::false_type) as the mode (cpu.h) says:
// under kAuto as `trial` says, timing its trial calls (`bytes`: what the call reads).
template <class Kernel>
inline void WithStreamPrefetch(PrefetchTrial& trial, uint64_t bytes, const Kernel& kernel) {
  const StreamPrefetch mode = GetStreamPrefetch();
  const bool on = mode == StreamPrefetch::kAuto ? trial.prefetch() : mode == StreamPrefetch::kOn;
  const bool timed = mode == StreamPrefetch::kAuto && trial.timing();
  const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (on) {
    kernel(std::true_type{});
  } else {
    kernel(std::false_type{});
  }
  if (mode == StreamPrefetch::kAuto) {
    const double s = timed ? std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() : 0.0;
    trial.Done(s > 0.0 ? static_cast<double>(bytes) / s : 0.0);
  }
  CountStreamPrefetchCall(on);
}

// tile(r, part) takes rows r, r + part, ..., r + (R - 1) * part; one(r) the last rows (< R).
template <int R, class Tile, class One>
inline void RowStreams(int64_t row_begin, int64_t row_end, const Tile& tile, const One& one) {
  const int64_t part = (row_end - row_begin) / R;
  for (int64_t i = 0; i < part; ++i) tile(row_begin + i, part);
  for (int64_t r = row_begin + R * part; r < row_end; ++r) one(r);
}

}  // namespace trinity::kernels
