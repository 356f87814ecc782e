// Every CPU kernel path this machine runs (forced through GetCpuKernels) against the scalar
// reference of ref.h, on random inputs of many shapes, odd sizes and misaligned pointers.
// Integer paths (quantisation, ternary GEMV/GEMM) must be bit-identical; float paths (dense GEMV,
// attention) within a tolerance relative to the magnitude of the sum.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/kernels/cpu.h"
#include "engine/kernels/ref.h"
#include "engine/kernels/row_streams.h"

namespace trinity::kernels {
namespace {

std::vector<CpuPath> Paths() {
  std::vector<CpuPath> paths;
  for (CpuPath p : {CpuPath::kRef, CpuPath::kGeneric, CpuPath::kAvx2, CpuPath::kAvx512, CpuPath::kNeon})
    if (CpuPathSupported(p)) paths.push_back(p);
  return paths;
}

class CpuKernelsTest : public ::testing::TestWithParam<CpuPath> {
 protected:
  const CpuKernels& k() const { return GetCpuKernels(GetParam()); }
  std::mt19937 rng_{1234};
};

std::string PathParamName(const ::testing::TestParamInfo<CpuPath>& info) { return CpuPathName(info.param); }

// The f16 KV cache: `values` rounded to IEEE halves in place (so the float kernels and the
// reference see exactly what the half kernels convert), the halves returned one element further
// in (offset 1: every half kernel reads a cache that is not 4-byte aligned).
std::vector<uint16_t> RoundToHalves(std::vector<float>& values) {
  std::vector<uint16_t> halves(values.size() + 1);
  for (size_t i = 0; i < values.size(); ++i) {
    halves[i + 1] = Fp32ToFp16(values[i]);
    values[i] = Fp16ToFp32(halves[i + 1]);
  }
  return halves;
}

TEST(CpuDispatchTest, ParsesAndDetects) {
  EXPECT_EQ(ParseCpuPath("ref"), CpuPath::kRef);
  EXPECT_EQ(ParseCpuPath("avx2"), CpuPath::kAvx2);
  EXPECT_EQ(ParseCpuPath("avx512"), CpuPath::kAvx512);
  EXPECT_EQ(ParseCpuPath("neon"), CpuPath::kNeon);
  EXPECT_EQ(ParseCpuPath("generic"), CpuPath::kGeneric);
  EXPECT_THROW(ParseCpuPath("amx"), Error);
  EXPECT_TRUE(CpuPathSupported(ActiveCpuPath()));
  EXPECT_TRUE(CpuPathSupported(CpuPath::kRef));
  EXPECT_EQ(GetCpuKernels(CpuPath::kRef).path, CpuPath::kRef);
  EXPECT_TRUE(CpuPathSupported(CpuPath::kGeneric));  // portable: every machine
  EXPECT_EQ(GetCpuKernels(CpuPath::kGeneric).path, CpuPath::kGeneric);
  EXPECT_NE(DetectCpuPath(), CpuPath::kRef);  // the oracle is never the default
  EXPECT_EQ(GetCpuKernels(DetectCpuPath()).path, DetectCpuPath());
#if defined(__aarch64__)
  EXPECT_FALSE(CpuPathSupported(CpuPath::kAvx2));
  EXPECT_FALSE(CpuPathSupported(CpuPath::kAvx512));
#else
  EXPECT_FALSE(CpuPathSupported(CpuPath::kNeon));
  EXPECT_THROW(GetCpuKernels(CpuPath::kNeon), Error);
#endif
  // $TRINITY_CPU lowers the path when the machine runs the one it names.
  if (const char* env = std::getenv("TRINITY_CPU"); env != nullptr && *env != '\0' && CpuPathSupported(ParseCpuPath(env))) {
    EXPECT_EQ(ActiveCpuPath(), ParseCpuPath(env));
  }
  // scripts/test-arm.sh runs this under emulated CPUs with and without the dot-product extension.
  if (const char* want = std::getenv("TRINITY_EXPECT_DETECTED"); want != nullptr) {
    EXPECT_STREQ(CpuPathName(DetectCpuPath()), want);
  }
  std::printf("detected CPU path: %s, active: %s\n", CpuPathName(DetectCpuPath()), CpuPathName(ActiveCpuPath()));
}

TEST(CpuDispatchTest, StreamPrefetchModes) {
  for (StreamPrefetch mode : {StreamPrefetch::kAuto, StreamPrefetch::kOn, StreamPrefetch::kOff}) {
    EXPECT_EQ(ParseStreamPrefetch(StreamPrefetchName(mode)), mode);
  }
  EXPECT_THROW(ParseStreamPrefetch("always"), Error);
  EXPECT_THROW(ParseStreamPrefetch(""), Error);
  const StreamPrefetch before = GetStreamPrefetch();
  SetStreamPrefetch(StreamPrefetch::kOff);
  EXPECT_EQ(GetStreamPrefetch(), StreamPrefetch::kOff);
  SetStreamPrefetch(before);
}

// A trial alternates each shape's calls (with, without, ...), however the shapes interleave; the
// variant whose calls take less time per shape (medians) runs the next calls; then a new trial.
// Two shapes called in turn (A, B, A, B): alternating call by call would time every A with the
// prefetch and every B without, and pick the prefetch for A being the smaller shape.
TEST(PrefetchTrialTest, AlternatesPerShapeThenKeepsTheFaster) {
  for (bool with_faster : {true, false}) {
    PrefetchTrial trial(12, 5);
    for (int cycle = 0; cycle < 3; ++cycle) {
      int turn[2] = {0, 0};
      for (int i = 0; i < 12; ++i) {
        const int shape = i % 2;
        ASSERT_TRUE(trial.timing());
        const PrefetchTrial::Call call = trial.Begin(shape ? 300 : 100);
        ASSERT_GE(call.slot, 0);
        ASSERT_EQ(call.prefetch, turn[shape]++ % 2 == 0) << "cycle " << cycle << " call " << i;
        const double base = shape ? 3.0 : 1.0;
        // One stray slow call (preemption) on the faster side: A's first call with, or A's first without.
        const bool stray = with_faster ? i == 0 : i == 2;
        trial.End(call, stray ? 100.0 : call.prefetch == with_faster ? base : 1.2 * base);
      }
      for (int i = 0; i < 5; ++i) {
        ASSERT_FALSE(trial.timing());
        const PrefetchTrial::Call call = trial.Begin(i % 2 ? 300 : 100);
        ASSERT_EQ(call.slot, -1);
        ASSERT_EQ(call.prefetch, with_faster) << "cycle " << cycle << " call " << i;
        trial.End(call, 0.0);
      }
    }
  }
}

TEST(PrefetchTrialTest, TiesLoneShapesAndTooManyShapes) {
  PrefetchTrial tie(2, 1);  // a tie keeps the prefetch
  for (int i = 0; i < 2; ++i) {
    const PrefetchTrial::Call call = tie.Begin(64);
    tie.End(call, 5.0);
  }
  EXPECT_FALSE(tie.timing());
  EXPECT_TRUE(tie.choice());
  tie.End(tie.Begin(64), 0.0);
  EXPECT_TRUE(tie.timing());
  // One shape alone fills the longest trial (2 x kMaxTimed calls), and it ends.
  PrefetchTrial lone(1000, 1);
  for (int i = 0; i < 2 * PrefetchTrial::kMaxTimed; ++i) {
    ASSERT_TRUE(lone.timing()) << i;
    const PrefetchTrial::Call call = lone.Begin(64);
    ASSERT_GE(call.slot, 0);
    lone.End(call, call.prefetch ? 2.0 : 1.0);
  }
  EXPECT_FALSE(lone.timing());
  EXPECT_FALSE(lone.choice());
  // Past kMaxShapes shapes, a trial's calls of further shapes run untimed, with the current choice.
  PrefetchTrial many(2 * PrefetchTrial::kMaxShapes + 2, 1);
  for (int s = 0; s < PrefetchTrial::kMaxShapes; ++s) {
    const PrefetchTrial::Call call = many.Begin(100 + s);
    ASSERT_GE(call.slot, 0);
    many.End(call, 1.0);
  }
  const PrefetchTrial::Call extra = many.Begin(7);
  EXPECT_EQ(extra.slot, -1);
  EXPECT_TRUE(extra.prefetch);
  many.End(extra, 0.0);
  EXPECT_TRUE(many.timing());
}

// Restores the process's prefetch mode at the end of a scope.
class PrefetchModeScope {
 public:
  explicit PrefetchModeScope(StreamPrefetch mode) : saved_(GetStreamPrefetch()) { SetStreamPrefetch(mode); }
  ~PrefetchModeScope() { SetStreamPrefetch(saved_); }
  PrefetchModeScope(const PrefetchModeScope&) = delete;
  PrefetchModeScope& operator=(const PrefetchModeScope&) = delete;

 private:
  StreamPrefetch saved_;
};

TEST_P(CpuKernelsTest, QuantizeIsBitIdentical) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t n : {1, 2, 7, 15, 16, 17, 31, 33, 64, 100, 128, 255, 2560, 6912}) {
    for (int offset : {0, 1, 3}) {
      for (float magnitude : {1e-7f, 1.0f, 300.0f}) {
        std::vector<float> xs(static_cast<size_t>(n + offset));
        for (float& v : xs) v = normal(rng_) * magnitude;
        if (n > 3) xs[offset + 2] = 0.5f / (127.0f / 1.0f);  // exercise rounding ties rarely; harmless
        const float* x = xs.data() + offset;
        std::vector<int8_t> want(n), got_buf(n + 5);
        int8_t* got = got_buf.data() + offset;
        const float a_want = QuantizeActivations(x, n, want.data());
        int32_t sum = 0;
        const float a_got = k().quantize(x, n, got, &sum);
        ASSERT_EQ(a_want, a_got) << "n=" << n;
        ASSERT_EQ(0, std::memcmp(want.data(), got, n)) << "n=" << n << " offset=" << offset;
        int32_t want_sum = 0;
        for (int8_t v : want) want_sum += v;
        ASSERT_EQ(want_sum, sum);
      }
    }
  }
}

TEST_P(CpuKernelsTest, QuantizeRoundsHalfToEven) {
  // max|x| = 127 -> a = 1: x = 0.5, 1.5, 2.5, -0.5, -2.5 round to 0, 2, 2, 0, -2.
  std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, -127.0f, 3.5f, 0, 0, 0, 0, 0, 0, 0, 0, 4.5f};
  std::vector<int8_t> want(x.size()), got(x.size());
  QuantizeActivations(x.data(), static_cast<int64_t>(x.size()), want.data());
  int32_t sum;
  k().quantize(x.data(), static_cast<int64_t>(x.size()), got.data(), &sum);
  EXPECT_EQ(want, got);
  EXPECT_EQ(got[1], 0);
  EXPECT_EQ(got[3], 2);
  EXPECT_EQ(got[16], 4);
}

struct TernaryCase {
  std::vector<uint8_t> codes_buf;
  std::vector<float> group_scales;
  TernaryView view;
};

TernaryCase MakeTernary(std::mt19937& rng, int64_t n_in, int64_t n_out, int offset, bool groups) {
  TernaryCase c;
  c.codes_buf.resize(static_cast<size_t>(n_in * n_out / 4 + offset));
  std::uniform_int_distribution<int> byte(0, 255), code(0, 2);
  // Mostly valid codes {0,1,2}; some bytes fully random (code 3 included: the reference reads it
  // as +2 and every path must agree).
  for (size_t i = 0; i < c.codes_buf.size(); ++i) {
    c.codes_buf[i] = i % 7 == 0 ? static_cast<uint8_t>(byte(rng))
                                : static_cast<uint8_t>(code(rng) << 6 | code(rng) << 4 | code(rng) << 2 | code(rng));
  }
  c.view.codes = c.codes_buf.data() + offset;
  c.view.n_in = n_in;
  c.view.n_out = n_out;
  c.view.scale = 0.37f;
  if (groups) {
    std::uniform_real_distribution<float> s(0.1f, 2.0f);
    c.group_scales.resize(static_cast<size_t>(n_in * n_out / 128));
    for (float& g : c.group_scales) g = s(rng);
    c.view.group_scales = c.group_scales.data();
  }
  return c;
}

std::vector<int8_t> RandomQ(std::mt19937& rng, size_t n, bool extremes) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> q(n);
  for (size_t i = 0; i < n; ++i) q[i] = extremes ? (i % 2 ? -128 : 127) : static_cast<int8_t>(d(rng));
  return q;
}

TEST_P(CpuKernelsTest, TernaryGemvIsBitIdentical) {
  for (int64_t n_in : {128, 256, 384, 640, 2560, 6912}) {
    for (int64_t n_out : {1, 3, 4, 5, 17, 64}) {
      for (int offset : {0, 1}) {
        for (bool groups : {false, true}) {
          for (bool extremes : {false, true}) {
            TernaryCase w = MakeTernary(rng_, n_in, n_out, offset, groups);
            std::vector<int8_t> q_buf = RandomQ(rng_, static_cast<size_t>(n_in + 3), extremes);
            const int8_t* q = q_buf.data() + 3 * offset;
            int32_t q_sum = 0;
            for (int64_t i = 0; i < n_in; ++i) q_sum += q[i];
            const float act_scale = 3.1f;
            // A sub-range of rows (as a thread gets) and the whole matrix.
            for (auto [b, e] : {std::pair<int64_t, int64_t>{0, n_out}, {n_out / 3, n_out - n_out / 4}}) {
              std::vector<float> want(n_out, -1.0f), got(n_out, -1.0f);
              TernaryMatVec(w.view, q, act_scale, want.data(), b, e);
              k().ternary_gemv(w.view, q, q_sum, act_scale, got.data(), b, e);
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
                  << "n_in=" << n_in << " n_out=" << n_out << " rows " << b << ".." << e << " groups=" << groups;
            }
          }
        }
      }
    }
  }
}

// The largest sums a kernel's narrow (int16) partial sums can meet: every code 3 (a malformed
// file's; the reference reads it as +2) against activations all -128 or all 127, over the widest
// rows, for the GEMV and for token counts that take each GEMM kernel.
TEST_P(CpuKernelsTest, TernaryKernelsHoldWorstCaseSums) {
  for (int64_t n_in : {2560, 6912}) {
    const int64_t n_out = 7;
    std::vector<uint8_t> codes(static_cast<size_t>(n_in * n_out / 4), 0xFF);
    TernaryView w;
    w.codes = codes.data();
    w.n_in = n_in;
    w.n_out = n_out;
    w.scale = 0.37f;
    for (int8_t value : {int8_t{-128}, int8_t{127}}) {
      for (int64_t n_tok : {1, 4, 8, 16, 64}) {
        std::vector<int8_t> q(static_cast<size_t>(n_in * n_tok), value);
        std::vector<int32_t> sums(n_tok, static_cast<int32_t>(value) * static_cast<int32_t>(n_in));
        std::vector<float> scales(n_tok, 1.5f);
        std::vector<float> want(n_out * n_tok), got(n_out * n_tok, -1.0f);
        for (int64_t t = 0; t < n_tok; ++t) TernaryMatVec(w, q.data() + t * n_in, 1.5f, want.data() + t * n_out, 0, n_out);
        k().ternary_gemm(w, q.data(), n_in, sums.data(), scales.data(), n_tok, got.data(), n_out, 0, n_out);
        ASSERT_EQ(want, got) << "n_in=" << n_in << " n_tok=" << n_tok << " q=" << int{value};
        if (n_tok == 1) {
          std::vector<float> gemv(n_out, -1.0f);
          k().ternary_gemv(w, q.data(), sums[0], 1.5f, gemv.data(), 0, n_out);
          ASSERT_EQ(std::vector<float>(want.begin(), want.begin() + n_out), gemv) << "n_in=" << n_in;
        }
      }
    }
  }
}

TEST_P(CpuKernelsTest, TernaryGemmIsBitIdentical) {
  // 6912: more than one chunk of values per pass (kernels that split n_in).
  for (int64_t n_in : {128, 384, 2560, 6912}) {
    for (int64_t n_out : {1, 5, 16, 19, 37}) {
      for (int64_t n_tok : {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 33, 37, 64}) {
        for (bool groups : {false, true}) {
          TernaryCase w = MakeTernary(rng_, n_in, n_out, static_cast<int>(n_tok % 2), groups);
          const int64_t q_stride = n_in + 5;  // a row stride that misaligns every other token
          std::vector<int8_t> q = RandomQ(rng_, static_cast<size_t>(q_stride * n_tok), false);
          std::vector<int32_t> sums(n_tok);
          std::vector<float> scales(n_tok);
          for (int64_t t = 0; t < n_tok; ++t) {
            sums[t] = 0;
            for (int64_t i = 0; i < n_in; ++i) sums[t] += q[t * q_stride + i];
            scales[t] = 0.5f + static_cast<float>(t);
          }
          const int64_t y_stride = n_out + 2;
          std::vector<float> want(y_stride * n_tok, -1.0f), got(y_stride * n_tok, -1.0f);
          const int64_t b = n_out > 4 ? 1 : 0, e = n_out;
          for (int64_t t = 0; t < n_tok; ++t)
            TernaryMatVec(w.view, q.data() + t * q_stride, scales[t], want.data() + t * y_stride, b, e);
          k().ternary_gemm(w.view, q.data(), q_stride, sums.data(), scales.data(), n_tok, got.data(), y_stride, b, e);
          ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
              << "n_in=" << n_in << " n_out=" << n_out << " n_tok=" << n_tok << " groups=" << groups;
        }
      }
    }
  }
}

TEST_P(CpuKernelsTest, DenseGemvMatchesReference) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (TensorType type : {TensorType::kF16, TensorType::kF32, TensorType::kQ8_0}) {
    for (int64_t n_in : {32, 64, 96, 256, 2560}) {
      if (type != TensorType::kQ8_0) {
        // odd widths only for the vectorised types (Q8_0 rows are whole 32-blocks)
      }
      for (int64_t n_rows : {1, 3, 4, 9, 33}) {
        const uint64_t row_bytes = type == TensorType::kF16   ? 2 * n_in
                                   : type == TensorType::kF32 ? 4 * n_in
                                                              : n_in / 32 * 34;
        std::vector<uint8_t> data(row_bytes * n_rows + 3);
        uint8_t* base = data.data() + 1;  // misaligned rows
        for (int64_t r = 0; r < n_rows; ++r) {
          for (int64_t c = 0; c < n_in; ++c) {
            const float v = normal(rng_);
            uint8_t* row = base + r * row_bytes;
            if (type == TensorType::kF16) {
              const uint16_t h = Fp32ToFp16(v);
              std::memcpy(row + 2 * c, &h, 2);
            } else if (type == TensorType::kF32) {
              std::memcpy(row + 4 * c, &v, 4);
            } else if (c % 32 == 0) {
              const uint16_t d = Fp32ToFp16(0.02f);
              std::memcpy(row + c / 32 * 34, &d, 2);
              for (int i = 0; i < 32; ++i) row[c / 32 * 34 + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(normal(rng_) * 40));
            }
          }
        }
        DenseView w{type, base, n_in, n_rows, row_bytes};
        std::vector<float> x(n_in);
        for (float& v : x) v = normal(rng_);
        std::vector<float> want(n_rows), got(n_rows);
        DenseMatVec(w, x.data(), want.data(), 0, n_rows);
        k().dense_gemv(w, x.data(), got.data(), 0, n_rows);
        for (int64_t r = 0; r < n_rows; ++r) {
          std::vector<float> row(n_in);
          DenseRow(w, r, row.data());
          double mag = 0;
          for (int64_t c = 0; c < n_in; ++c) mag += std::fabs(row[c] * x[c]);
          ASSERT_NEAR(want[r], got[r], 1e-5 * mag + 1e-6) << Traits(type).name << " n_in=" << n_in << " row " << r;
        }
      }
    }
  }
  // Odd widths for F16/F32 (not multiples of 8 or 16).
  for (int64_t n_in : {1, 7, 17, 45}) {
    std::vector<uint16_t> h(n_in * 5);
    for (auto& v : h) v = Fp32ToFp16(normal(rng_));
    DenseView w{TensorType::kF16, reinterpret_cast<const uint8_t*>(h.data()), n_in, 5, static_cast<uint64_t>(2 * n_in)};
    std::vector<float> x(n_in), want(5), got(5);
    for (float& v : x) v = normal(rng_);
    DenseMatVec(w, x.data(), want.data(), 0, 5);
    k().dense_gemv(w, x.data(), got.data(), 0, 5);
    for (int r = 0; r < 5; ++r) ASSERT_NEAR(want[r], got[r], 1e-4) << "n_in=" << n_in;
  }
}

// Every half-precision value (subnormals, infinities, NaNs) converts exactly: row h holds the half
// h in one column of 32 (the rest 0) and x is all ones, so the dot product is the value itself.
TEST_P(CpuKernelsTest, DenseGemvConvertsEveryHalf) {
  constexpr int64_t n_in = 32, n_rows = 65536;
  std::vector<uint16_t> h(static_cast<size_t>(n_in * n_rows), 0);
  for (int64_t r = 0; r < n_rows; ++r) h[static_cast<size_t>(r * n_in + r % n_in)] = static_cast<uint16_t>(r);
  const DenseView w{TensorType::kF16, reinterpret_cast<const uint8_t*>(h.data()), n_in, n_rows,
                    static_cast<uint64_t>(2 * n_in)};
  const std::vector<float> x(n_in, 1.0f);
  std::vector<float> got(n_rows);
  k().dense_gemv(w, x.data(), got.data(), 0, n_rows);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float want = Fp16ToFp32(static_cast<uint16_t>(r));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got[r])) << "half 0x" << std::hex << r;
    } else {
      ASSERT_EQ(got[r], want) << "half 0x" << std::hex << r;  // -0 sums to +0: equal
    }
  }
}

// The batched LM head: n_x vectors through dense_gemm equal, bit for bit, n_x dense_gemv calls of
// the same path (batched decode must not change any sequence's logits). Odd widths, row ranges
// that start off the block grid, misaligned rows and outputs.
TEST_P(CpuKernelsTest, DenseGemmEqualsGemvExactly) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (TensorType type : {TensorType::kF16, TensorType::kF32, TensorType::kQ8_0}) {
    for (int64_t n_in : {1, 7, 32, 45, 96, 300, 600}) {
      if (type == TensorType::kQ8_0 && n_in % 32 != 0) continue;
      const int64_t n_rows = 77;
      const uint64_t row_bytes = type == TensorType::kF16   ? 2 * n_in
                                 : type == TensorType::kF32 ? 4 * n_in
                                                            : n_in / 32 * 34;
      std::vector<uint8_t> data(row_bytes * n_rows + 3);
      uint8_t* base = data.data() + 1;  // misaligned rows
      for (int64_t r = 0; r < n_rows; ++r) {
        uint8_t* row = base + r * row_bytes;
        for (int64_t c = 0; c < n_in; ++c) {
          const float v = normal(rng_);
          if (type == TensorType::kF16) {
            const uint16_t h = Fp32ToFp16(v);
            std::memcpy(row + 2 * c, &h, 2);
          } else if (type == TensorType::kF32) {
            std::memcpy(row + 4 * c, &v, 4);
          } else if (c % 32 == 0) {
            const uint16_t d = Fp32ToFp16(0.02f);
            std::memcpy(row + c / 32 * 34, &d, 2);
            for (int i = 0; i < 32; ++i) row[c / 32 * 34 + 2 + i] = static_cast<uint8_t>(static_cast<int8_t>(normal(rng_) * 40));
          }
        }
      }
      const DenseView w{type, base, n_in, n_rows, row_bytes};
      for (int64_t n_x : {1, 2, 5, 8, 11}) {
        const int64_t x_stride = n_in + 3;
        std::vector<float> x(static_cast<size_t>(n_x * x_stride + 1));
        for (float& v : x) v = normal(rng_);
        const float* xs = x.data() + 1;  // misaligned vectors
        std::vector<std::vector<float>> want(n_x, std::vector<float>(n_rows + 1)), got = want;
        std::vector<float*> ys;
        for (auto& g : got) ys.push_back(g.data() + 1);
        for (auto [b, e] : {std::pair<int64_t, int64_t>{0, n_rows}, {3, 70}, {33, 34}}) {
          for (int64_t i = 0; i < n_x; ++i) k().dense_gemv(w, xs + i * x_stride, want[i].data() + 1, b, e);
          k().dense_gemm(w, xs, x_stride, n_x, ys.data(), b, e);
          for (int64_t i = 0; i < n_x; ++i) {
            for (int64_t r = b; r < e; ++r) {
              ASSERT_EQ(want[i][r + 1], got[i][r + 1]) << Traits(type).name << " n_in=" << n_in << " n_x=" << n_x << " row " << r;
            }
          }
        }
      }
    }
  }
}

TEST_P(CpuKernelsTest, AttentionMatchesReference) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t head_dim : {8, 20, 64, 128}) {
    for (int64_t n_kv : {1, 2, 17, 100}) {
      const int64_t n_head = 4, n_head_kv = 2;
      std::vector<float> q(n_head * head_dim), k_cache(n_kv * n_head_kv * head_dim), v_cache(k_cache.size());
      for (float& v : q) v = normal(rng_);
      for (float& v : k_cache) v = normal(rng_);
      for (float& v : v_cache) v = normal(rng_);
      std::vector<float> want(q.size()), got(q.size()), scratch(n_kv);
      Attention(q.data(), k_cache.data(), v_cache.data(), n_kv, n_head, n_head_kv, head_dim, want.data(), scratch.data(), 0, n_head);
      k().attention(q.data(), k_cache.data(), v_cache.data(), n_kv, n_head, n_head_kv, head_dim, got.data(), scratch.data(), 1,
                    n_head);
      for (int64_t i = head_dim; i < n_head * head_dim; ++i) ASSERT_NEAR(want[i], got[i], 1e-5) << "head_dim=" << head_dim << " n_kv=" << n_kv;
      // Half caches: equal to the f32 reference on the converted values (bit for bit: the
      // per-token f16 kernel is the reference's loops on every path).
      const std::vector<uint16_t> k_half = RoundToHalves(k_cache), v_half = RoundToHalves(v_cache);
      Attention(q.data(), k_cache.data(), v_cache.data(), n_kv, n_head, n_head_kv, head_dim, want.data(), scratch.data(), 0, n_head);
      k().attention_f16(q.data(), k_half.data() + 1, v_half.data() + 1, n_kv, n_head, n_head_kv, head_dim, got.data(),
                        scratch.data(), 0, n_head);
      ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << "head_dim=" << head_dim << " n_kv=" << n_kv;
    }
  }
}

// The fused norm + quantisation against RmsNorm then QuantizeActivations, plain and with the
// feed-forward's relu^2(gate) * up in front (as the forward pass computes it). Only the double sum
// of squares is summed in another order: on these (seeded, deterministic) inputs the float
// results are identical.
TEST_P(CpuKernelsTest, NormQuantizeMatchesReference) {
  if (k().norm_quantize == nullptr) GTEST_SKIP() << "no fused norm + quantize on this path";
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t n : {1, 7, 16, 17, 100, 2560, 6912}) {
    for (int offset : {0, 1}) {
      for (bool relu2 : {false, true}) {
        std::vector<float> xs(n + offset), us(n + offset), ws(n + offset);
        for (float& v : xs) v = normal(rng_) * 3.0f;
        for (float& v : us) v = normal(rng_);
        for (float& v : ws) v = 0.5f + normal(rng_) * 0.2f;
        const float* x = xs.data() + offset;
        const float* u = us.data() + offset;
        const float* w = ws.data() + offset;
        std::vector<float> h(x, x + n), xn(n);
        if (relu2) {
          for (int64_t i = 0; i < n; ++i) {
            const float a = h[i] > 0.0f ? h[i] * h[i] : 0.0f;
            h[i] = a * u[i];
          }
        }
        RmsNorm(h.data(), w, n, 1e-5f, xn.data());
        std::vector<int8_t> want(n), got_buf(n + 1);
        const float a_want = QuantizeActivations(xn.data(), n, want.data());
        int32_t want_sum = 0;
        for (int8_t v : want) want_sum += v;
        int32_t sum = 0;
        const float a_got = k().norm_quantize(x, relu2 ? u : nullptr, w, n, 1e-5f, got_buf.data() + offset, &sum);
        ASSERT_EQ(a_want, a_got) << "n=" << n << " relu2=" << relu2;
        ASSERT_EQ(0, std::memcmp(want.data(), got_buf.data() + offset, n)) << "n=" << n << " offset=" << offset;
        ASSERT_EQ(want_sum, sum);
      }
    }
  }
}

// The batched (prefill) attention against the one-token reference, token by token: GQA groups of
// 1, 3 and 4 heads, head sizes 16..256, batches that start at position 0 or deep into the cache,
// key counts around the kernel's 64-key blocks, more tokens than one pass covers (> 64), a
// sub-range of tokens and of KV heads (as a thread gets). Both cache types: the f16 kernel equals the
// path's f32 kernel on the halves' values bit for bit (and so is as close to the reference).
TEST_P(CpuKernelsTest, AttentionPrefillMatchesReference) {
  if (k().attention_prefill == nullptr) GTEST_SKIP() << "no batched attention on this path";
  ASSERT_NE(k().attention_prefill_f16, nullptr);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (bool half : {false, true}) {
  struct Shape {
    int64_t n_head, n_head_kv, head_dim, pos, n_tok;
  };
  for (const Shape& sh : {Shape{4, 4, 16, 0, 1}, Shape{8, 2, 64, 0, 5}, Shape{6, 2, 128, 3, 64}, Shape{8, 2, 128, 61, 70},
                          Shape{4, 1, 32, 130, 9}, Shape{20, 5, 128, 64, 64}, Shape{2, 1, 256, 0, 17},
                          Shape{16, 1, 48, 7, 3}}) {
    ASSERT_TRUE(AttentionPrefillSupports(sh.n_head, sh.n_head_kv, sh.head_dim));
    const int64_t kv_width = sh.n_head_kv * sh.head_dim, n_kv = sh.pos + sh.n_tok;
    const int64_t q_stride = sh.n_head * sh.head_dim + 3;  // misaligned rows
    std::vector<float> q(q_stride * sh.n_tok), k_cache(n_kv * kv_width), v_cache(k_cache.size());
    for (float& v : q) v = normal(rng_) * 2.0f;
    for (float& v : k_cache) v = normal(rng_);
    for (float& v : v_cache) v = normal(rng_);
    std::vector<uint16_t> k_half, v_half;
    if (half) k_half = RoundToHalves(k_cache), v_half = RoundToHalves(v_cache);
    for (auto [t_begin, kvh_begin] : {std::pair<int64_t, int64_t>{0, 0}, {sh.n_tok / 2, sh.n_head_kv / 2}}) {
      const int64_t t_end = sh.n_tok, kvh_end = sh.n_head_kv;
      std::vector<float> want(q.size(), -7.0f), got(q.size(), -7.0f), scratch(n_kv);
      const int64_t group = sh.n_head / sh.n_head_kv;
      for (int64_t t = t_begin; t < t_end; ++t) {
        Attention(q.data() + t * q_stride, k_cache.data(), v_cache.data(), sh.pos + t + 1, sh.n_head, sh.n_head_kv,
                  sh.head_dim, want.data() + t * q_stride, scratch.data(), kvh_begin * group, kvh_end * group);
      }
      if (half) {
        k().attention_prefill_f16(q.data(), q_stride, k_half.data() + 1, v_half.data() + 1, sh.pos, sh.n_head,
                                  sh.n_head_kv, sh.head_dim, got.data(), q_stride, t_begin, t_end, kvh_begin, kvh_end);
        // Exactly the f32 kernel on the converted values.
        std::vector<float> f32(q.size(), -7.0f);
        k().attention_prefill(q.data(), q_stride, k_cache.data(), v_cache.data(), sh.pos, sh.n_head, sh.n_head_kv,
                              sh.head_dim, f32.data(), q_stride, t_begin, t_end, kvh_begin, kvh_end);
        ASSERT_EQ(0, std::memcmp(f32.data(), got.data(), got.size() * sizeof(float))) << "n_head=" << sh.n_head;
      } else {
        k().attention_prefill(q.data(), q_stride, k_cache.data(), v_cache.data(), sh.pos, sh.n_head, sh.n_head_kv,
                              sh.head_dim, got.data(), q_stride, t_begin, t_end, kvh_begin, kvh_end);
      }
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(want[i], got[i], 2e-5) << "i=" << i << " n_head=" << sh.n_head << " head_dim=" << sh.head_dim
                                           << " pos=" << sh.pos << " n_tok=" << sh.n_tok << " t_begin=" << t_begin
                                           << " half=" << half;
      }
    }
  }
  }
}

// Decode attention by key ranges against the one-token reference: GQA groups of 1, 3 and 4
// heads (and 16 query heads on one KV head), head sizes 16..256, caches of 1 to 1000 keys cut
// into ranges of several lengths (odd ones, so blocks of 8 keys end mid-range), merged. Both cache
// types: the f16 kernel equals the path's f32 kernel on the halves' values bit for bit (and so is as
// close to the reference).
TEST_P(CpuKernelsTest, AttentionDecodeMatchesReference) {
  if (k().attention_decode == nullptr) GTEST_SKIP() << "no decode attention by key ranges on this path";
  ASSERT_NE(k().attention_decode_f16, nullptr);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (bool half : {false, true}) {
  struct Shape {
    int64_t n_head, n_head_kv, head_dim, n_kv;
  };
  for (const Shape& sh : {Shape{4, 4, 16, 1}, Shape{8, 2, 64, 9}, Shape{6, 2, 128, 100}, Shape{20, 5, 128, 1000},
                          Shape{4, 1, 32, 130}, Shape{2, 1, 256, 17}, Shape{16, 1, 48, 77}, Shape{64, 8, 16, 40}}) {
    ASSERT_TRUE(AttentionDecodeSupports(sh.n_head, sh.n_head_kv, sh.head_dim));
    const int64_t width = sh.n_head * sh.head_dim, kv_width = sh.n_head_kv * sh.head_dim;
    std::vector<float> q(width), k_cache(sh.n_kv * kv_width), v_cache(k_cache.size());
    for (float& v : q) v = normal(rng_) * 2.0f;
    for (float& v : k_cache) v = normal(rng_);
    for (float& v : v_cache) v = normal(rng_);
    std::vector<uint16_t> k_half, v_half;
    if (half) k_half = RoundToHalves(k_cache), v_half = RoundToHalves(v_cache);
    std::vector<float> want(width), scratch(sh.n_kv);
    Attention(q.data(), k_cache.data(), v_cache.data(), sh.n_kv, sh.n_head, sh.n_head_kv, sh.head_dim, want.data(),
              scratch.data(), 0, sh.n_head);
    for (int64_t span : {int64_t{1}, int64_t{7}, int64_t{32}, int64_t{61}, kDecodeKeys}) {
      const int64_t n_parts = (sh.n_kv + span - 1) / span;
      std::vector<float> o(n_parts * width, -7.0f), m(n_parts * sh.n_head), l(m.size()), got(width, -7.0f);
      for (int64_t p = 0; p < n_parts; ++p) {
        const int64_t end = std::min(sh.n_kv, (p + 1) * span);
        float* op = o.data() + p * width;
        float* mp = m.data() + p * sh.n_head;
        float* lp = l.data() + p * sh.n_head;
        if (half) {
          k().attention_decode_f16(q.data(), k_half.data() + 1, v_half.data() + 1, sh.n_head, sh.n_head_kv, sh.head_dim,
                                   p * span, end, op, mp, lp);
        } else {
          k().attention_decode(q.data(), k_cache.data(), v_cache.data(), sh.n_head, sh.n_head_kv, sh.head_dim, p * span,
                               end, op, mp, lp);
        }
      }
      MergeAttentionParts(o.data(), m.data(), l.data(), n_parts, sh.n_head, sh.head_dim, got.data());
      if (half) {  // exactly the f32 kernel on the converted values
        std::vector<float> o32(o.size()), m32(m.size()), l32(l.size());
        for (int64_t p = 0; p < n_parts; ++p) {
          k().attention_decode(q.data(), k_cache.data(), v_cache.data(), sh.n_head, sh.n_head_kv, sh.head_dim, p * span,
                               std::min(sh.n_kv, (p + 1) * span), o32.data() + p * width, m32.data() + p * sh.n_head,
                               l32.data() + p * sh.n_head);
        }
        ASSERT_EQ(0, std::memcmp(o32.data(), o.data(), o.size() * sizeof(float))) << "span=" << span << " n_head=" << sh.n_head;
        ASSERT_EQ(0, std::memcmp(m32.data(), m.data(), m.size() * sizeof(float)));
        ASSERT_EQ(0, std::memcmp(l32.data(), l.data(), l.size() * sizeof(float)));
      }
      for (int64_t i = 0; i < width; ++i) {
        ASSERT_NEAR(want[i], got[i], 2e-5) << "i=" << i << " n_head=" << sh.n_head << " n_head_kv=" << sh.n_head_kv
                                           << " head_dim=" << sh.head_dim << " n_kv=" << sh.n_kv << " span=" << span
                                           << " half=" << half;
      }
    }
  }
  }
}

TEST_P(CpuKernelsTest, Q8GemvIsBitIdentical) {
  std::uniform_int_distribution<int> byte(1, 255);
  for (int64_t n_in : {1, 7, 31, 32, 33, 63, 64, 65, 100, 127, 128, 200, 2560, 2563}) {
    for (int64_t n_rows : {1, 3, 4, 5, 9}) {
      for (int offset : {0, 1}) {
        for (bool extremes : {false, true}) {
          const uint64_t row_bytes = static_cast<uint64_t>(n_in + offset * 3);  // odd row strides too
          std::vector<uint8_t> data(row_bytes * n_rows + 8);
          uint8_t* base = data.data() + offset;
          for (size_t i = 0; i < row_bytes * n_rows; ++i) {
            base[i] = extremes ? static_cast<uint8_t>(i % 3 == 0 ? 1 : 255) : static_cast<uint8_t>(byte(rng_));
          }
          std::vector<float> scales(n_rows);
          for (int64_t r = 0; r < n_rows; ++r) scales[r] = 0.01f * static_cast<float>(r + 1);
          std::vector<int8_t> q_buf = RandomQ(rng_, static_cast<size_t>(n_in + 3), extremes);
          const int8_t* q = q_buf.data() + 3 * offset;
          int32_t q_sum = 0;
          for (int64_t i = 0; i < n_in; ++i) q_sum += q[i];
          const Q8View w{base, n_in, n_rows, row_bytes, scales.data()};
          for (auto [b, e] : {std::pair<int64_t, int64_t>{0, n_rows}, {n_rows / 3, n_rows}}) {
            std::vector<float> want(n_rows, -1.0f), got(n_rows, -1.0f);
            Q8MatVec(w, q, 2.7f, want.data(), b, e);
            k().q8_gemv(w, q, q_sum, 2.7f, got.data(), b, e);
            ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
                << "n_in=" << n_in << " n_rows=" << n_rows << " rows " << b << ".." << e << " extremes=" << extremes;
          }
        }
      }
    }
  }
}

TEST(Q8RowTest, QuantizeRowQ8RoundTrips) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t n : {1, 5, 2560}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * 0.05f;
    std::vector<uint8_t> b(n);
    const float d = QuantizeRowQ8(x.data(), n, b.data());
    float max_abs = 0.0f;
    for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
    EXPECT_FLOAT_EQ(d, max_abs / 127.0f);
    bool hit_127 = false;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_GE(b[i], 1);
      hit_127 |= b[i] == 1 || b[i] == 255;
      EXPECT_NEAR((static_cast<int>(b[i]) - 128) * d, x[i], 0.5001f * d);
    }
    EXPECT_TRUE(hit_127);
  }
  std::vector<float> zeros(3, 0.0f);
  std::vector<uint8_t> b(3);
  QuantizeRowQ8(zeros.data(), 3, b.data());
  EXPECT_EQ(b, std::vector<uint8_t>(3, 128));
}

// The decode GEMVs with the row-stream prefetch forced on, forced off and chosen (auto): the same
// bits, and for the integer GEMVs the reference's. Shapes with four row streams and rows left over
// (RowStreams). On the x86 paths the call counts show that forcing took effect.
TEST_P(CpuKernelsTest, StreamPrefetchChangesNoResult) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t n_in : {256, 2560}) {
    for (int64_t n_out : {5, 67}) {
      TernaryCase t = MakeTernary(rng_, n_in, n_out, 1, false);
      std::vector<int8_t> q = RandomQ(rng_, static_cast<size_t>(n_in), false);
      int32_t q_sum = 0;
      for (int8_t v : q) q_sum += v;
      std::vector<uint8_t> q8_data(static_cast<size_t>(n_in * n_out));
      for (uint8_t& b : q8_data) b = static_cast<uint8_t>(1 + rng_() % 255);
      std::vector<float> q8_scales(static_cast<size_t>(n_out), 0.02f);
      const Q8View q8{q8_data.data(), n_in, n_out, static_cast<uint64_t>(n_in), q8_scales.data()};
      std::vector<uint16_t> halves(static_cast<size_t>(n_in * n_out));
      for (uint16_t& h : halves) h = Fp32ToFp16(normal(rng_));
      const DenseView f16{TensorType::kF16, reinterpret_cast<const uint8_t*>(halves.data()), n_in, n_out,
                          static_cast<uint64_t>(2 * n_in)};
      std::vector<float> x(static_cast<size_t>(n_in));
      for (float& v : x) v = normal(rng_);

      std::vector<float> want_ternary(n_out), want_q8(n_out), want_f16(n_out);
      TernaryMatVec(t.view, q.data(), 2.5f, want_ternary.data(), 0, n_out);
      Q8MatVec(q8, q.data(), 2.5f, want_q8.data(), 0, n_out);
      {
        PrefetchModeScope on(StreamPrefetch::kOn);
        k().dense_gemv(f16, x.data(), want_f16.data(), 0, n_out);
      }
      const bool x86 = GetParam() == CpuPath::kAvx2 || GetParam() == CpuPath::kAvx512;
      for (StreamPrefetch mode : {StreamPrefetch::kOn, StreamPrefetch::kOff, StreamPrefetch::kAuto}) {
        PrefetchModeScope scope(mode);
        const StreamPrefetchCalls before = StreamPrefetchCallCounts();
        for (int call = 0; call < 20; ++call) {
          std::vector<float> got(n_out, -1.0f);
          k().ternary_gemv(t.view, q.data(), q_sum, 2.5f, got.data(), 0, n_out);
          ASSERT_EQ(0, std::memcmp(want_ternary.data(), got.data(), got.size() * 4))
              << "ternary, " << StreamPrefetchName(mode) << ", n_in=" << n_in << " n_out=" << n_out;
          k().q8_gemv(q8, q.data(), q_sum, 2.5f, got.data(), 0, n_out);
          ASSERT_EQ(0, std::memcmp(want_q8.data(), got.data(), got.size() * 4))
              << "q8, " << StreamPrefetchName(mode) << ", n_in=" << n_in << " n_out=" << n_out;
          k().dense_gemv(f16, x.data(), got.data(), 0, n_out);
          ASSERT_EQ(0, std::memcmp(want_f16.data(), got.data(), got.size() * 4))
              << "f16, " << StreamPrefetchName(mode) << ", n_in=" << n_in << " n_out=" << n_out;
        }
        const StreamPrefetchCalls after = StreamPrefetchCallCounts();
        const uint64_t on = after.on - before.on, off = after.off - before.off;
        EXPECT_EQ(on + off, x86 ? 60u : 0u) << StreamPrefetchName(mode);
        if (mode == StreamPrefetch::kOn) {
          EXPECT_EQ(off, 0u);
        }
        if (mode == StreamPrefetch::kOff) {
          EXPECT_EQ(on, 0u);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, CpuKernelsTest, ::testing::ValuesIn(Paths()), PathParamName);

}  // namespace
}  // namespace trinity::kernels
