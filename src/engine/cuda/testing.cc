#include "engine/cuda/testing.h"

#include <cuda_runtime.h>

#include <vector>

#include "engine/common/error.h"
#include "engine/cuda/kernels.cuh"

namespace trinity::cuda::testing {

namespace {

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Fail("CUDA error in {}: {}", what, cudaGetErrorString(e));
}

// A device copy of n elements, freed at scope exit.
template <typename T>
class Dev {
 public:
  explicit Dev(size_t n, const T* host = nullptr) : n_(n) {
    Check(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    if (host) Check(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return p_; }
  void CopyTo(T* host) const {
    Check(cudaDeviceSynchronize(), "kernel");
    Check(cudaMemcpy(host, p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

}  // namespace

void NormQuant(const float* x, int64_t rows, int64_t width, const float* weight, float eps, int8_t* q,
               float* act_scales, int32_t* q_sums) {
  Dev<float> dx(Sz(rows * width), x), dw(Sz(width), weight), ds(Sz(rows));
  Dev<int8_t> dq(Sz(rows * width));
  Dev<int32_t> dsum(Sz(rows));
  detail::LaunchNormQuant(detail::NormInput::kPlain, dx.get(), width, nullptr, 0, dw.get(), width, eps, rows, dq.get(),
                          width, ds.get(), dsum.get(), nullptr);
  dq.CopyTo(q);
  ds.CopyTo(act_scales);
  dsum.CopyTo(q_sums);
}

void Relu2GluNormQuant(const float* gate_up, int64_t rows, int64_t width, const float* weight, float eps, float* h,
                       int8_t* q, float* act_scales, int32_t* q_sums) {
  Dev<float> dx(Sz(rows * 2 * width), gate_up), dw(Sz(width), weight), ds(Sz(rows));
  Dev<int8_t> dq(Sz(rows * width));
  Dev<int32_t> dsum(Sz(rows));
  detail::LaunchNormQuant(detail::NormInput::kRelu2Glu, dx.get(), 2 * width, nullptr, 0, dw.get(), width, eps, rows,
                          dq.get(), width, ds.get(), dsum.get(), nullptr);
  std::vector<float> all(Sz(rows * 2 * width));
  dx.CopyTo(all.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < width; ++i) h[r * width + i] = all[Sz(r * 2 * width + i)];
  }
  dq.CopyTo(q);
  ds.CopyTo(act_scales);
  dsum.CopyTo(q_sums);
}

void TernaryMatmul(const kernels::TernaryView& w, const int8_t* q, const float* act_scales, const int32_t* q_sums,
                   int64_t rows, float* y, bool gemm) {
  Dev<uint8_t> codes(Sz(w.n_out * w.n_in / 4), w.codes);
  std::vector<float> row_scales(Sz(w.n_out), w.scale);
  Dev<float> drs(row_scales.size(), row_scales.data());
  const int64_t n_gs = w.group_scales ? w.n_out * w.n_in / 128 : 0;
  Dev<float> dgs(Sz(n_gs), w.group_scales);
  Dev<int8_t> dq(Sz(rows * w.n_in), q);
  Dev<float> das(Sz(rows), act_scales), dy(Sz(rows * w.n_out));
  Dev<int32_t> dsum(Sz(rows), q_sums);
  detail::TernaryDev d;
  d.codes = codes.get();
  d.n_in = w.n_in;
  d.n_out = w.n_out;
  d.row_scales = drs.get();
  d.group_scales = w.group_scales ? dgs.get() : nullptr;
  detail::LaunchTernaryMatmul(d, dq.get(), w.n_in, das.get(), dsum.get(), rows, dy.get(), w.n_out,
                              gemm ? detail::MatmulKind::kGemm : detail::MatmulKind::kGemv, nullptr);
  dy.CopyTo(y);
}

void Attention(const float* q, int64_t rows, const int32_t* pos, const float* k_cache, const float* v_cache,
               int64_t n_ctx, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int n_splits, bool prefill,
               float* out) {
  const int64_t n_embd = n_head * head_dim, n_kv = n_head_kv * head_dim;
  Dev<float> dq(Sz(rows * n_embd), q), dk(Sz(n_ctx * n_kv), k_cache), dv(Sz(n_ctx * n_kv), v_cache);
  Dev<int32_t> dpos(Sz(rows), pos);
  std::vector<int32_t> seq(Sz(rows), 0);
  Dev<int32_t> dseq(Sz(rows), seq.data());
  Dev<float> part_o(Sz(rows * n_head * n_splits * head_dim)), part_ml(Sz(rows * n_head * n_splits * 2));
  Dev<float> dout(Sz(rows * n_embd));
  detail::LaunchAttention(dq.get(), n_embd, rows, dpos.get(), dseq.get(), dk.get(), dv.get(), n_ctx * n_kv, n_head,
                          n_head_kv, head_dim, n_splits, part_o.get(), part_ml.get(), dout.get(), n_embd, prefill,
                          nullptr);
  dout.CopyTo(out);
}

void LmHead(const kernels::DenseView& w, const float* x, int64_t rows, float* logits) {
  const bool f16 = w.type == TensorType::kF16;
  if (!f16 && w.type != TensorType::kF32) Fail("cuda::testing::LmHead takes F16 or F32 matrices");
  const size_t elt = f16 ? 2 : 4;
  std::vector<uint8_t> packed(Sz(w.n_rows) * Sz(w.n_in) * elt);
  for (int64_t r = 0; r < w.n_rows; ++r) {
    std::copy(w.data + r * w.row_bytes, w.data + r * w.row_bytes + w.n_in * elt, packed.begin() + r * w.n_in * elt);
  }
  Dev<uint8_t> dw(packed.size(), packed.data());
  Dev<float> dx(Sz(rows * w.n_in), x), dl(Sz(rows * w.n_rows));
  detail::DenseDev d;
  d.data = dw.get();
  d.n_in = w.n_in;
  d.n_rows = w.n_rows;
  d.f16 = f16;
  detail::PrepareLmHead(w.n_in);
  detail::LaunchLmHead(d, dx.get(), w.n_in, rows, dl.get(), w.n_rows, nullptr);
  dl.CopyTo(logits);
}

void Argmax(const float* logits, int64_t rows, int64_t n_vocab, int32_t* ids) {
  Dev<float> dl(Sz(rows * n_vocab), logits);
  Dev<int32_t> di(Sz(rows));
  detail::LaunchArgmax(dl.get(), n_vocab, n_vocab, rows, di.get(), nullptr);
  di.CopyTo(ids);
}

}  // namespace trinity::cuda::testing
