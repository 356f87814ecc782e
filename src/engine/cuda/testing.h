// Single-kernel entry points for tests/cuda_kernels_test.cc: each copies host inputs to the GPU,
// runs one launcher of kernels.cuh, and copies the result back (synchronously). Not for the
// forward pass, which keeps everything on the device.
#pragma once

#include <cstdint>

#include "engine/kernels/ref.h"

namespace trinity::cuda::testing {

// rows x width: RMSNorm(x) * weight then int8 quantisation (q [rows][width], scales, sums).
void NormQuant(const float* x, int64_t rows, int64_t width, const float* weight, float eps, int8_t* q,
               float* act_scales, int32_t* q_sums);
// gate_up [rows][2*width] -> h = relu(gate)^2 * up (written to h [rows][width]), then as NormQuant.
void Relu2GluNormQuant(const float* gate_up, int64_t rows, int64_t width, const float* weight, float eps, float* h,
                       int8_t* q, float* act_scales, int32_t* q_sums);
// y [rows][w.n_out] = W q_t for each token row (q [rows][w.n_in]); gemm: tensor-core kernel,
// else the dp4a GEMV.
void TernaryMatmul(const kernels::TernaryView& w, const int8_t* q, const float* act_scales, const int32_t* q_sums,
                   int64_t rows, float* y, bool gemm);
// One sequence: rows query rows (q [rows][n_head*head_dim]) at positions pos[r] over a cache
// k/v [n_ctx][n_head_kv*head_dim]; out [rows][n_head*head_dim]. prefill: the positions ascend
// (a prompt chunk) and the tiled prefill kernel may run (kernels.cuh).
void Attention(const float* q, int64_t rows, const int32_t* pos, const float* k_cache, const float* v_cache,
               int64_t n_ctx, int64_t n_head, int64_t n_head_kv, int64_t head_dim, int n_splits, bool prefill,
               float* out);
// logits [rows][w.n_rows] = W x_r (F16 or F32 W; x [rows][w.n_in]).
void LmHead(const kernels::DenseView& w, const float* x, int64_t rows, float* logits);
void Argmax(const float* logits, int64_t rows, int64_t n_vocab, int32_t* ids);

}  // namespace trinity::cuda::testing
