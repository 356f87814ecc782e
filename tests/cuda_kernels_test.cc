// Each CUDA kernel against its CPU oracle (kernels/ref.h) on random inputs: exact for the integer
// paths (activation quantisation, ternary GEMV and tensor-core GEMM), to float rounding for
// attention and the LM head. Every test skips when no CUDA device is present (CI, most machines).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/cuda/cuda.h"
#include "engine/cuda/testing.h"
#include "engine/common/fp16.h"
#include "engine/kernels/ref.h"

namespace trinity {
namespace {

#define TRINITY_REQUIRE_GPU() \
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device"

std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// I2_S rows: every 2-bit code in {0, 1, 2}.
std::vector<uint8_t> RandomCodes(std::mt19937& rng, int64_t n_in, int64_t n_out) {
  std::uniform_int_distribution<int> code(0, 2);
  std::vector<uint8_t> codes(static_cast<size_t>(n_in * n_out / 4));
  for (uint8_t& b : codes) b = static_cast<uint8_t>(code(rng) << 6 | code(rng) << 4 | code(rng) << 2 | code(rng));
  return codes;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(CudaKernels, BuildReportsCuda) {
  EXPECT_TRUE(cuda::Built());
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  EXPECT_FALSE(cuda::DeviceDescription(0).empty());
  std::printf("device: %s\n", cuda::DeviceDescription(0).c_str());
}

TEST(CudaKernels, NormQuantIsExact) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(1);
  // Up to 8192 the row is held in registers (NormRegKernel); 10240 takes the strided NormKernel.
  for (int64_t width : {128, 256, 2560, 6912, 10240}) {
    const int64_t rows = 5;
    std::vector<float> x = RandomFloats(rng, static_cast<size_t>(rows * width), 1.0f);
    for (int64_t i = 0; i < width; ++i) x[static_cast<size_t>(width + i)] *= 1e-3f;  // a small-magnitude row
    x[static_cast<size_t>(2 * width + 7)] = 40.0f;                                   // an outlier
    std::vector<float> w = RandomFloats(rng, static_cast<size_t>(width), 0.5f);
    std::vector<int8_t> q(static_cast<size_t>(rows * width));
    std::vector<float> scales(static_cast<size_t>(rows));
    std::vector<int32_t> sums(static_cast<size_t>(rows));
    cuda::testing::NormQuant(x.data(), rows, width, w.data(), 1e-5f, q.data(), scales.data(), sums.data());
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> n(static_cast<size_t>(width));
      std::vector<int8_t> ref(static_cast<size_t>(width));
      kernels::RmsNorm(x.data() + r * width, w.data(), width, 1e-5f, n.data());
      const float a = kernels::QuantizeActivations(n.data(), width, ref.data());
      EXPECT_EQ(Bits(scales[r]), Bits(a)) << "width " << width << " row " << r;
      int32_t sum = 0;
      for (int64_t i = 0; i < width; ++i) {
        sum += ref[i];
        ASSERT_EQ(q[static_cast<size_t>(r * width + i)], ref[i]) << "width " << width << " row " << r << " i " << i;
      }
      EXPECT_EQ(sums[r], sum);
    }
  }
}

TEST(CudaKernels, Relu2GluNormQuantIsExact) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(2);
  const int64_t rows = 3, width = 768;
  std::vector<float> gu = RandomFloats(rng, static_cast<size_t>(rows * 2 * width), 2.0f);
  std::vector<float> w = RandomFloats(rng, static_cast<size_t>(width), 0.5f);
  std::vector<float> h(static_cast<size_t>(rows * width));
  std::vector<int8_t> q(static_cast<size_t>(rows * width));
  std::vector<float> scales(static_cast<size_t>(rows));
  std::vector<int32_t> sums(static_cast<size_t>(rows));
  cuda::testing::Relu2GluNormQuant(gu.data(), rows, width, w.data(), 1e-5f, h.data(), q.data(), scales.data(),
                                   sums.data());
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> ref_h(static_cast<size_t>(width));
    for (int64_t i = 0; i < width; ++i) {
      const float g = gu[static_cast<size_t>(r * 2 * width + i)], u = gu[static_cast<size_t>(r * 2 * width + width + i)];
      ref_h[i] = (g > 0.0f ? g * g : 0.0f) * u;  // context.cc's relu^2 gate * up
      ASSERT_EQ(Bits(h[static_cast<size_t>(r * width + i)]), Bits(ref_h[i]));
    }
    std::vector<float> n(static_cast<size_t>(width));
    std::vector<int8_t> ref(static_cast<size_t>(width));
    kernels::RmsNorm(ref_h.data(), w.data(), width, 1e-5f, n.data());
    const float a = kernels::QuantizeActivations(n.data(), width, ref.data());
    EXPECT_EQ(Bits(scales[r]), Bits(a));
    for (int64_t i = 0; i < width; ++i) ASSERT_EQ(q[static_cast<size_t>(r * width + i)], ref[i]);
  }
}

struct MatmulCase {
  int64_t n_in, n_out, rows;
  bool group;
};

// GEMV (dp4a) and GEMM (mma.sync int8) against kernels::TernaryMatVec, bit for bit.
TEST(CudaKernels, TernaryMatmulIsExact) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(3);
  const MatmulCase cases[] = {{256, 96, 1, false},  {2560, 640, 3, false}, {768, 200, 8, false},
                              {512, 130, 70, false}, {6912, 64, 9, false},  {2560, 2560, 64, false},
                              {512, 100, 5, true},   {1024, 70, 67, true},
                              // grids of >= 132 64-row blocks: the 64-row GEMM tile (smaller ones take 32)
                              {256, 13824, 9, false}, {512, 8448, 20, true}};
  for (const MatmulCase& mc : cases) {
    std::vector<uint8_t> codes = RandomCodes(rng, mc.n_in, mc.n_out);
    std::vector<float> group_scales;
    kernels::TernaryView w;
    w.codes = codes.data();
    w.n_in = mc.n_in;
    w.n_out = mc.n_out;
    w.scale = 0.37f;
    if (mc.group) {
      std::uniform_real_distribution<float> s(0.1f, 2.0f);
      group_scales.resize(static_cast<size_t>(mc.n_in * mc.n_out / 128));
      for (float& g : group_scales) g = s(rng);
      w.group_scales = group_scales.data();
    }
    std::vector<int8_t> q(static_cast<size_t>(mc.rows * mc.n_in));
    std::vector<float> act_scales(static_cast<size_t>(mc.rows));
    std::vector<int32_t> q_sums(static_cast<size_t>(mc.rows));
    for (int64_t t = 0; t < mc.rows; ++t) {
      std::vector<float> x = RandomFloats(rng, static_cast<size_t>(mc.n_in), 1.0f);
      act_scales[t] = kernels::QuantizeActivations(x.data(), mc.n_in, q.data() + t * mc.n_in);
      int32_t s = 0;
      for (int64_t i = 0; i < mc.n_in; ++i) s += q[static_cast<size_t>(t * mc.n_in + i)];
      q_sums[t] = s;
    }
    std::vector<float> ref(static_cast<size_t>(mc.rows * mc.n_out));
    for (int64_t t = 0; t < mc.rows; ++t) {
      kernels::TernaryMatVec(w, q.data() + t * mc.n_in, act_scales[t], ref.data() + t * mc.n_out, 0, mc.n_out);
    }
    for (bool gemm : {false, true}) {
      std::vector<float> y(ref.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
      cuda::testing::TernaryMatmul(w, q.data(), act_scales.data(), q_sums.data(), mc.rows, y.data(), gemm);
      int mismatches = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        // Group scales sum doubles in another order: allow the last float bit there.
        const bool ok = mc.group ? std::fabs(y[i] - ref[i]) <= 1e-6f * std::fabs(ref[i]) + 1e-30f : Bits(y[i]) == Bits(ref[i]);
        if (!ok && ++mismatches <= 3) {
          ADD_FAILURE() << (gemm ? "gemm" : "gemv") << " n_in " << mc.n_in << " n_out " << mc.n_out << " rows "
                        << mc.rows << " group " << mc.group << " at " << i << ": " << y[i] << " vs " << ref[i];
        }
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
}

// Attention shapes (query heads, KV heads, head_dim): GQA groups of 1-8, every head_dim the
// kernels take; 20/5/128 is the 2B-4T shape.
struct AttentionShape {
  int64_t n_head, n_head_kv, head_dim;
};
constexpr AttentionShape kAttentionShapes[] = {{4, 2, 64}, {20, 5, 128}, {2, 2, 32}, {8, 1, 256}};

// Flash-decoding attention (any number of splits, GQA) against kernels::Attention.
TEST(CudaKernels, AttentionMatchesReference) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(4);
  for (const AttentionShape& c : kAttentionShapes) {
    const int64_t n_ctx = 77, n_embd = c.n_head * c.head_dim, n_kv = c.n_head_kv * c.head_dim;
    const std::vector<int32_t> pos = {0, 1, 5, 31, 76};
    const int64_t rows = static_cast<int64_t>(pos.size());
    std::vector<float> q = RandomFloats(rng, static_cast<size_t>(rows * n_embd), 1.0f);
    std::vector<float> k = RandomFloats(rng, static_cast<size_t>(n_ctx * n_kv), 1.0f);
    std::vector<float> v = RandomFloats(rng, static_cast<size_t>(n_ctx * n_kv), 1.0f);
    for (int splits : {1, 3, 16}) {
      std::vector<float> out(static_cast<size_t>(rows * n_embd), std::numeric_limits<float>::quiet_NaN());
      cuda::testing::Attention(q.data(), rows, pos.data(), k.data(), v.data(), n_ctx, c.n_head, c.n_head_kv, c.head_dim,
                               splits, /*prefill=*/false, out.data());
      std::vector<float> ref(static_cast<size_t>(n_embd)), scratch(static_cast<size_t>(n_ctx));
      for (int64_t r = 0; r < rows; ++r) {
        kernels::Attention(q.data() + r * n_embd, k.data(), v.data(), pos[r] + 1, c.n_head, c.n_head_kv, c.head_dim,
                           ref.data(), scratch.data(), 0, c.n_head);
        for (int64_t i = 0; i < n_embd; ++i) {
          ASSERT_NEAR(out[static_cast<size_t>(r * n_embd + i)], ref[i], 1e-5f + 1e-5f * std::fabs(ref[i]))
              << "head_dim " << c.head_dim << " splits " << splits << " row " << r << " i " << i;
        }
      }
    }
  }
}

// The tiled prefill kernel: prompt chunks of several tiles, starting at 0 and later in the cache,
// against kernels::Attention per row.
TEST(CudaKernels, PrefillAttentionMatchesReference) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(7);
  for (const AttentionShape& c : kAttentionShapes) {
    const int64_t n_ctx = 90, n_embd = c.n_head * c.head_dim, n_kv = c.n_head_kv * c.head_dim;
    std::vector<float> k = RandomFloats(rng, static_cast<size_t>(n_ctx * n_kv), 1.0f);
    std::vector<float> v = RandomFloats(rng, static_cast<size_t>(n_ctx * n_kv), 1.0f);
    for (const int64_t p0 : {int64_t{0}, int64_t{45}}) {
      for (const int64_t rows : {int64_t{2}, int64_t{16}, int64_t{37}, int64_t{45}}) {
        std::vector<int32_t> pos(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) pos[static_cast<size_t>(r)] = static_cast<int32_t>(p0 + r);
        std::vector<float> q = RandomFloats(rng, static_cast<size_t>(rows * n_embd), 1.0f);
        std::vector<float> out(static_cast<size_t>(rows * n_embd), std::numeric_limits<float>::quiet_NaN());
        cuda::testing::Attention(q.data(), rows, pos.data(), k.data(), v.data(), n_ctx, c.n_head, c.n_head_kv,
                                 c.head_dim, 1, /*prefill=*/true, out.data());
        std::vector<float> ref(static_cast<size_t>(n_embd)), scratch(static_cast<size_t>(n_ctx));
        for (int64_t r = 0; r < rows; ++r) {
          kernels::Attention(q.data() + r * n_embd, k.data(), v.data(), pos[static_cast<size_t>(r)] + 1, c.n_head,
                             c.n_head_kv, c.head_dim, ref.data(), scratch.data(), 0, c.n_head);
          for (int64_t i = 0; i < n_embd; ++i) {
            ASSERT_NEAR(out[static_cast<size_t>(r * n_embd + i)], ref[i], 1e-5f + 1e-5f * std::fabs(ref[i]))
                << "head_dim " << c.head_dim << " p0 " << p0 << " rows " << rows << " row " << r << " i " << i;
          }
        }
      }
    }
  }
}

TEST(CudaKernels, LmHeadMatchesReference) {
  TRINITY_REQUIRE_GPU();
  std::mt19937 rng(5);
  const int64_t n_in = 256, n_rows = 1000;
  for (bool f16 : {true, false}) {
    std::vector<float> wf = RandomFloats(rng, static_cast<size_t>(n_in * n_rows), 0.1f);
    std::vector<uint8_t> bytes;
    if (f16) {
      bytes.resize(wf.size() * 2);
      for (size_t i = 0; i < wf.size(); ++i) {
        const uint16_t h = Fp32ToFp16(wf[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    } else {
      bytes.resize(wf.size() * 4);
      std::memcpy(bytes.data(), wf.data(), bytes.size());
    }
    kernels::DenseView w;
    w.type = f16 ? TensorType::kF16 : TensorType::kF32;
    w.data = bytes.data();
    w.n_in = n_in;
    w.n_rows = n_rows;
    w.row_bytes = static_cast<uint64_t>(n_in) * (f16 ? 2 : 4);
    for (int64_t rows : {1, 3, 8, 11, 16, 37, 64, 70}) {  // F16 from 8 rows: the tensor-core kernel
      std::vector<float> x = RandomFloats(rng, static_cast<size_t>(rows * n_in), 1.0f);
      std::vector<float> logits(static_cast<size_t>(rows * n_rows), std::numeric_limits<float>::quiet_NaN());
      cuda::testing::LmHead(w, x.data(), rows, logits.data());
      std::vector<float> ref(static_cast<size_t>(n_rows));
      for (int64_t r = 0; r < rows; ++r) {
        kernels::DenseMatVec(w, x.data() + r * n_in, ref.data(), 0, n_rows);
        for (int64_t i = 0; i < n_rows; ++i) {
          ASSERT_NEAR(logits[static_cast<size_t>(r * n_rows + i)], ref[i], 1e-4f) << "f16 " << f16 << " rows " << rows;
        }
      }
    }
  }
}

TEST(CudaKernels, ArgmaxTakesLowestIdOnTiesAndSkipsNan) {
  TRINITY_REQUIRE_GPU();
  const int64_t n_vocab = 5000;
  std::vector<float> logits(static_cast<size_t>(3 * n_vocab), 0.0f);
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : logits) v = u(rng);
  logits[1234] = 7.0f, logits[4321] = 7.0f;                                                // tie: 1234
  logits[n_vocab + 10] = std::numeric_limits<float>::quiet_NaN(), logits[n_vocab + 4999] = 3.0f;  // NaN skipped
  for (int64_t i = 0; i < n_vocab; ++i) logits[static_cast<size_t>(2 * n_vocab + i)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<int32_t> ids(3, -1);
  cuda::testing::Argmax(logits.data(), 3, n_vocab, ids.data());
  EXPECT_EQ(ids[0], 1234);
  EXPECT_EQ(ids[1], 4999);
  EXPECT_EQ(ids[2], 0);
}

}  // namespace
}  // namespace trinity
