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

// Which variant of a decode GEMV a thread runs, with or without PrefetchStreams. Cycles of a
// trial of `trial` timed calls, then `run` calls of the variant the trial found faster. A
// thread's calls of one GEMV kind go through one trial, and they come in a fixed order of shapes
// (a layer's q, k, v, o, gate, up, down), so alternating call by call would give each variant
// its own shapes (four GEMVs a layer: always the same two). The trial therefore alternates per
// shape (a call's byte count): each shape's calls take turns, with first. The faster variant is
// the one whose calls, one of every shape at each side's median time, take less time; the first
// on a tie. The trial comes back because a shared machine's memory changes under it.
class PrefetchTrial {
 public:
  static constexpr int kMaxShapes = 8;  // further shapes run untimed in a trial
  static constexpr int kMaxTimed = 32;  // timed calls per shape and side; a trial has at most 2x
  struct Call {
    bool prefetch = true;
    int slot = -1;  // >= 0: timed, for the trial's shape `slot`
  };

  constexpr PrefetchTrial(int trial, int run) : trial_(std::clamp(trial, 2, 2 * kMaxTimed)), run_(std::max(run, 0)) {}

  // This call's variant; `bytes` names its shape.
  Call Begin(uint64_t bytes) {
    if (!timing()) return {choice_, -1};
    int slot = 0;
    while (slot < n_shapes_ && shapes_[slot].bytes != bytes) ++slot;
    if (slot == n_shapes_) {
      if (n_shapes_ == kMaxShapes) return {choice_, -1};
      shapes_[n_shapes_++] = Shape{bytes};
    }
    const Shape& shape = shapes_[slot];
    const bool prefetch = shape.n[1] <= shape.n[0];  // with first, then turns
    if (shape.n[prefetch ? 1 : 0] == kMaxTimed) return {choice_, -1};
    return {prefetch, slot};
  }

  // Ends a call Begin returned; `seconds`: its time (used for timed calls only).
  void End(const Call& call, double seconds) {
    if (call.slot >= 0) {
      Shape& shape = shapes_[call.slot];
      const int side = call.prefetch ? 1 : 0;
      shape.seconds[side][shape.n[side]++] = seconds;
      if (++calls_ == trial_) Decide();
      return;
    }
    if (calls_ >= trial_ && ++run_calls_ >= run_) {  // the next trial
      calls_ = 0;
      run_calls_ = 0;
      n_shapes_ = 0;
    }
  }

  bool timing() const { return calls_ < trial_; }
  bool choice() const { return choice_; }

 private:
  struct Shape {
    uint64_t bytes = 0;
    int n[2] = {0, 0};  // timed calls without (0) and with (1) the prefetch
    std::array<std::array<double, kMaxTimed>, 2> seconds{};
  };

  static double Median(std::array<double, kMaxTimed> v, int n) {
    std::sort(v.begin(), v.begin() + n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }

  void Decide() {
    double with = 0.0, without = 0.0;
    for (int i = 0; i < n_shapes_; ++i) {
      const Shape& shape = shapes_[i];
      if (shape.n[0] == 0 || shape.n[1] == 0) continue;
      without += Median(shape.seconds[0], shape.n[0]);
      with += Median(shape.seconds[1], shape.n[1]);
    }
    choice_ = with <= without;
  }

  int trial_, run_;
  int calls_ = 0;      // timed calls of the current trial
  int run_calls_ = 0;  // calls since the trial ended
  bool choice_ = true;
  int n_shapes_ = 0;
  std::array<Shape, kMaxShapes> shapes_{};
};

// Runs kernel(std::true_type) (prefetching) or kernel(std::false_type) as the mode (cpu.h) says:
// under kAuto as `trial` says, timing its trial calls (`bytes`: what the call reads).
template <class Kernel>
inline void WithStreamPrefetch(PrefetchTrial& trial, uint64_t bytes, const Kernel& kernel) {
  const StreamPrefetch mode = GetStreamPrefetch();
  const PrefetchTrial::Call call =
      mode == StreamPrefetch::kAuto ? trial.Begin(bytes) : PrefetchTrial::Call{mode == StreamPrefetch::kOn, -1};
  const auto start = call.slot >= 0 ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (call.prefetch) {
    kernel(std::true_type{});
  } else {
    kernel(std::false_type{});
  }
  if (mode == StreamPrefetch::kAuto) {
    trial.End(call, call.slot >= 0 ? std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() : 0.0);
  }
  CountStreamPrefetchCall(call.prefetch);
}

// tile(r, part) takes rows r, r + part, ..., r + (R - 1) * part; one(r) the last rows (< R).
template <int R, class Tile, class One>
inline void RowStreams(int64_t row_begin, int64_t row_end, const Tile& tile, const One& one) {
  const int64_t part = (row_end - row_begin) / R;
  for (int64_t i = 0; i < part; ++i) tile(row_begin + i, part);
  for (int64_t r = row_begin + R * part; r < row_end; ++r) one(r);
}

// RowStreams in the variant WithStreamPrefetch picks: tile(r, part, prefetch) and one(r, prefetch)
// get it as a std::bool_constant (decltype(prefetch)::value for the kernels' template flag);
// `row_bytes` sizes the call for the trial.
template <int R, class Tile, class One>
inline void PrefetchedRowStreams(PrefetchTrial& trial, int64_t row_begin, int64_t row_end, uint64_t row_bytes,
                                 const Tile& tile, const One& one) {
  WithStreamPrefetch(trial, static_cast<uint64_t>(row_end - row_begin) * row_bytes, [&](auto prefetch) {
    RowStreams<R>(
        row_begin, row_end, [&](int64_t r, int64_t part) { tile(r, part, prefetch); },
        [&](int64_t r) { one(r, prefetch); });
  });
}

}  // namespace trinity::kernels
