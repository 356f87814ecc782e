// The GPU forward pass (cuda.h): weights uploaded once, KV caches of n_seq sequences, every
// batch a list of (token, sequence, position) rows run through the kernels of kernels.cu.
//
// Per batch of `rows` rows, buffers [rows][width] f32 unless said (widths in brackets):
//   x [n_embd] residual stream, q8 [wide] int8 activations + act_scales/q_sums [1],
//   qkv [n_embd + 2 n_kv], att [n_embd], tmp [n_embd] (o / down outputs), gu [2 n_ff] (gate|up),
//   xn [n_embd] output-normed rows and logits [n_vocab] for up to logit_rows rows.
// One layer (kernel launches):
//   norm_quant(x (+= tmp of the previous layer), attn_norm) -> q8
//   matmul(q|k|v) -> qkv;  rope_kv: rotate q in place, k/v into the caches
//   attention split + combine -> att;  norm_quant(att, attn_sub_norm) -> q8;  matmul(o) -> tmp
//   norm_quant(x += tmp, ffn_norm) -> q8;  matmul(gate|up) -> gu
//   norm_quant(relu(gate)^2 * up, ffn_sub_norm) -> q8;  matmul(down) -> tmp
// then norm(x += tmp, output_norm) -> xn, lm_head -> logits, argmax -> ids for the rows asked.
// Decode steps (one row per sequence) are captured once per row count as a CUDA graph: every
// kernel reads tokens/positions/sequences from device memory, so the graph is replayed as is.
//
// TRINITY_CUDA_PROFILE=1: graphs off, every stage timed with CUDA events, and a table of GPU time
// per stage and batch size printed to stderr when the Forward is destroyed (where the time goes,
// for the next optimisation).
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "engine/common/error.h"
#include "engine/cuda/cuda.h"
#include "engine/cuda/kernels.cuh"
#include "engine/model/model.h"
#include "engine/quant/quant.h"

namespace trinity::cuda {

namespace {

using detail::DenseDev;
using detail::NormInput;
using detail::TernaryDev;

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Fail("CUDA error in {}: {}", what, cudaGetErrorString(e));
}
#define TRINITY_CU(call) Check((call), #call)

// Everything a CudaForward holds on the device, released here so that a constructor that throws
// half-way (out of memory, say) leaks nothing: members are destroyed even then.
struct DeviceResources {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::vector<void*> allocations;
  void* pinned = nullptr;
  std::map<int64_t, cudaGraphExec_t> graphs;  // decode step by row count
  ~DeviceResources() {
    cudaSetDevice(device);
    if (stream) cudaStreamSynchronize(stream);
    for (auto& [n, exec] : graphs) cudaGraphExecDestroy(exec);
    for (void* p : allocations) cudaFree(p);
    if (pinned) cudaFreeHost(pinned);
    if (stream) cudaStreamDestroy(stream);
  }
};

class CudaForward final : public Forward {
 public:
  CudaForward(const Model& model, const ForwardOptions& options);
  ~CudaForward() override {
    if (profile_) PrintProfile();
  }

  void Eval(int seq, const int32_t* tokens, int64_t n, int64_t pos, float* last_logits, float* all_logits,
            int32_t* greedy) override;
  void Decode(int64_t n, const int32_t* tokens, const int32_t* seqs, const int64_t* pos, float* logits,
              int32_t* greedy) override;
  void Synchronize() override {
    TRINITY_CU(cudaSetDevice(device_));
    TRINITY_CU(cudaStreamSynchronize(stream_));
  }
  int graphs_built() const override { return static_cast<int>(res_.graphs.size()); }
  uint64_t device_bytes() const override { return device_bytes_; }

 private:
  struct Layer {
    const float* attn_norm = nullptr;
    const float* attn_sub_norm = nullptr;
    const float* ffn_norm = nullptr;
    const float* ffn_sub_norm = nullptr;
    TernaryDev qkv, wo, gate_up, down;
  };

  template <typename T>
  T* Alloc(size_t n) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(n * sizeof(T), 16);
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      Fail("CUDA: cannot allocate {:.1f} MiB of device memory ({} held so far): {}", static_cast<double>(bytes) / (1 << 20),
           device_bytes_, cudaGetErrorString(e));
    }
    res_.allocations.push_back(p);
    device_bytes_ += bytes;
    return static_cast<T*>(p);
  }
  template <typename T>
  T* Upload(const T* host, size_t n) {
    T* p = Alloc<T>(n);
    TRINITY_CU(cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice));
    return p;
  }
  TernaryDev UploadTernary(std::initializer_list<const TernaryWeight*> parts);
  DenseDev UploadDense(const kernels::DenseView& v);

  // Copies rows' metadata into the device (async on stream_; the pinned staging buffer must not be
  // rewritten before the stream has consumed it).
  void Stage(int64_t rows);
  // prefill: the rows are one sequence at consecutive positions (Eval), else one row per
  // sequence (Decode).
  void EnqueueLayers(int64_t rows, bool prefill);
  // output_norm + LM head for rows [begin, begin + n) into logits_ rows [0, n); argmax into ids_.
  void EnqueueHead(int64_t begin, int64_t n, bool argmax);
  int SplitsFor(int64_t rows) const {
    return static_cast<int>(std::clamp<int64_t>(part_slots_ / rows, 1, n_dec_splits_));
  }

  DeviceResources res_;  // first: destroyed last
  // TRINITY_CUDA_PROFILE: Timed(name, rows, launch) brackets a launch with events when on.
  template <typename F>
  void Timed(const char* name, int64_t rows, F&& launch) {
    if (!profile_) {
      launch();
      return;
    }
    cudaEvent_t start = nullptr, stop = nullptr;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaEventRecord(start, stream_);
    launch();
    cudaEventRecord(stop, stream_);
    const char* bucket = rows == 1 ? "1 row" : rows <= 8 ? "2-8 rows" : rows <= 64 ? "9-64 rows" : "65+ rows";
    pending_.push_back({std::string(name) + " [" + bucket + "]", start, stop});
  }
  void CollectProfile();
  void PrintProfile();
  struct PendingEvent {
    std::string name;
    cudaEvent_t start, stop;
  };
  bool profile_ = false;
  std::vector<PendingEvent> pending_;
  std::map<std::string, std::pair<double, int64_t>> profile_ms_;  // stage -> (ms, calls)

  const Model& model_;
  ModelConfig c_;
  int device_ = 0;
  int64_t n_ctx_ = 0, n_seq_ = 0, max_rows_ = 0, logit_rows_ = 0;
  int64_t n_kv_ = 0, wide_ = 0, qkv_w_ = 0;
  int64_t n_dec_splits_ = 1, part_slots_ = 0;
  bool use_graphs_ = true;
  cudaStream_t stream_ = nullptr;  // == res_.stream
  uint64_t device_bytes_ = 0;

  std::vector<Layer> layers_;
  DenseDev embd_, lm_;
  const float* output_norm_ = nullptr;
  const float* rope_cs_ = nullptr;  // [n_ctx][n_rot/2][2]
  float *k_ = nullptr, *v_ = nullptr;  // [n_seq][n_layer][n_ctx][n_kv]
  int64_t seq_stride_ = 0;

  float *x_ = nullptr, *qkv_ = nullptr, *att_ = nullptr, *tmp_ = nullptr, *gu_ = nullptr, *xn_ = nullptr;
  float *logits_ = nullptr, *part_o_ = nullptr, *part_ml_ = nullptr, *act_scales_ = nullptr;
  int8_t* q8_ = nullptr;
  int32_t *q_sums_ = nullptr, *ids_ = nullptr;
  int32_t* d_meta_ = nullptr;  // [3][max_rows]: tokens, pos, seq
  int32_t* h_meta_ = nullptr;  // pinned host copy (res_.pinned)
};

CudaForward::CudaForward(const Model& model, const ForwardOptions& o) : model_(model), c_(model.config()) {
  const ModelConfig& c = c_;
  device_ = o.device;
  const int n_dev = DeviceCount();
  if (n_dev == 0) Fail("--device cuda: no CUDA device is available (no driver, or no GPU)");
  if (device_ < 0 || device_ >= n_dev) Fail("CUDA device {} does not exist ({} found)", device_, n_dev);
  TRINITY_CU(cudaSetDevice(device_));
  res_.device = device_;
  cudaDeviceProp prop{};
  TRINITY_CU(cudaGetDeviceProperties(&prop, device_));
  if (prop.major < 8) Fail("CUDA device {} is sm_{}{}: the kernels need sm_80 or newer", prop.name, prop.major, prop.minor);

  if (o.n_ctx <= 0) Fail("CUDA forward: n_ctx must be positive");
  if (o.n_seq < 1) Fail("CUDA forward: n_seq must be at least 1");
  if (c.head_dim % 32 != 0 || c.head_dim > 256 || (c.head_dim & (c.head_dim - 1)) != 0) {
    Fail("CUDA forward: head_dim {} is not supported (32, 64, 128 or 256)", c.head_dim);
  }
  if (c.n_head % c.n_head_kv != 0 || c.n_head / c.n_head_kv > 32) {
    Fail("CUDA forward: {} query heads per KV head is not supported (at most 32)", c.n_head / c.n_head_kv);
  }
  if (c.n_embd % 128 != 0 || c.n_ff % 128 != 0) Fail("CUDA forward: n_embd and n_ff must be multiples of 128");
  n_ctx_ = o.n_ctx;
  n_seq_ = o.n_seq;
  max_rows_ = std::max<int64_t>(std::max<int64_t>(o.max_rows, 1), n_seq_);
  logit_rows_ = std::max<int64_t>(n_seq_, 64);
  n_kv_ = c.n_embd_kv();
  wide_ = std::max(c.n_embd, c.n_ff);
  qkv_w_ = c.n_embd + 2 * n_kv_;
  n_dec_splits_ = std::clamp<int64_t>(n_ctx_ / 16, 1, 32);
  part_slots_ = std::max<int64_t>(max_rows_, 64 * n_dec_splits_);
  const char* graphs_env = std::getenv("TRINITY_CUDA_GRAPHS");
  use_graphs_ = o.graphs && !(graphs_env && std::strcmp(graphs_env, "0") == 0);
  const char* profile_env = std::getenv("TRINITY_CUDA_PROFILE");
  profile_ = profile_env && std::strcmp(profile_env, "1") == 0;
  if (profile_) use_graphs_ = false;
  TRINITY_CU(cudaStreamCreateWithFlags(&res_.stream, cudaStreamNonBlocking));
  stream_ = res_.stream;

  // Weights.
  for (const LayerWeights& l : model.layers()) {
    Layer d;
    d.attn_norm = Upload(l.attn_norm, static_cast<size_t>(c.n_embd));
    d.attn_sub_norm = Upload(l.attn_sub_norm, static_cast<size_t>(c.n_embd));
    d.ffn_norm = Upload(l.ffn_norm, static_cast<size_t>(c.n_embd));
    d.ffn_sub_norm = Upload(l.ffn_sub_norm, static_cast<size_t>(c.n_ff));
    d.qkv = UploadTernary({&l.wq, &l.wk, &l.wv});
    d.wo = UploadTernary({&l.wo});
    d.gate_up = UploadTernary({&l.w_gate, &l.w_up});
    d.down = UploadTernary({&l.w_down});
    layers_.push_back(d);
  }
  output_norm_ = Upload(model.output_norm(), static_cast<size_t>(c.n_embd));
  embd_ = UploadDense(model.token_embd());
  lm_ = model.lm_head().data == model.token_embd().data ? embd_ : UploadDense(model.lm_head());
  if (embd_.n_in != c.n_embd || lm_.n_in != c.n_embd || lm_.n_rows != c.n_vocab) {
    Fail("CUDA forward: embedding / LM head shapes do not match the model");
  }
  detail::PrepareLmHead(c.n_embd);

  // RoPE table: the CPU fast path's double math (context.cc), rounded to float.
  {
    const int64_t half = c.n_rot / 2;
    std::vector<float> cs(static_cast<size_t>(n_ctx_ * c.n_rot));
    for (int64_t i = 0; i < half; ++i) {
      const double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * static_cast<double>(i) / static_cast<double>(c.n_rot));
      for (int64_t p = 0; p < n_ctx_; ++p) {
        const double angle = static_cast<double>(p) * freq;
        cs[p * c.n_rot + 2 * i] = static_cast<float>(std::cos(angle));
        cs[p * c.n_rot + 2 * i + 1] = static_cast<float>(std::sin(angle));
      }
    }
    rope_cs_ = Upload(cs.data(), cs.size());
  }

  // KV caches and scratch.
  seq_stride_ = c.n_layer * n_ctx_ * n_kv_;
  k_ = Alloc<float>(static_cast<size_t>(n_seq_ * seq_stride_));
  v_ = Alloc<float>(static_cast<size_t>(n_seq_ * seq_stride_));
  const size_t r = static_cast<size_t>(max_rows_);
  x_ = Alloc<float>(r * c.n_embd);
  qkv_ = Alloc<float>(r * qkv_w_);
  att_ = Alloc<float>(r * c.n_embd);
  tmp_ = Alloc<float>(r * c.n_embd);
  gu_ = Alloc<float>(r * 2 * c.n_ff);
  q8_ = Alloc<int8_t>(r * wide_);
  act_scales_ = Alloc<float>(r);
  q_sums_ = Alloc<int32_t>(r);
  xn_ = Alloc<float>(static_cast<size_t>(logit_rows_ * c.n_embd));
  logits_ = Alloc<float>(static_cast<size_t>(logit_rows_ * c.n_vocab));
  ids_ = Alloc<int32_t>(static_cast<size_t>(logit_rows_));
  part_o_ = Alloc<float>(static_cast<size_t>(part_slots_ * c.n_head * c.head_dim));
  part_ml_ = Alloc<float>(static_cast<size_t>(part_slots_ * c.n_head * 2));
  d_meta_ = Alloc<int32_t>(3 * r);
  TRINITY_CU(cudaMallocHost(&res_.pinned, 3 * r * sizeof(int32_t)));
  h_meta_ = static_cast<int32_t*>(res_.pinned);
  TRINITY_CU(cudaMemset(k_, 0, static_cast<size_t>(n_seq_ * seq_stride_) * sizeof(float)));
  TRINITY_CU(cudaMemset(v_, 0, static_cast<size_t>(n_seq_ * seq_stride_) * sizeof(float)));
  TRINITY_CU(cudaDeviceSynchronize());
}

TernaryDev CudaForward::UploadTernary(std::initializer_list<const TernaryWeight*> parts) {
  TernaryDev d;
  d.n_in = (*parts.begin())->view.n_in;
  bool group = false;
  for (const TernaryWeight* w : parts) {
    if (w->view.n_in != d.n_in || w->view.n_in % 128 != 0) Fail("CUDA forward: fused ternary parts differ in n_in");
    d.n_out += w->view.n_out;
    group = group || w->view.group_scales != nullptr;
  }
  const size_t row_bytes = static_cast<size_t>(d.n_in / 4), blocks = static_cast<size_t>(d.n_in / 128);
  uint8_t* codes = Alloc<uint8_t>(static_cast<size_t>(d.n_out) * row_bytes);
  std::vector<float> row_scales;
  std::vector<float> group_scales;
  size_t row = 0;
  for (const TernaryWeight* w : parts) {
    const size_t n_out = static_cast<size_t>(w->view.n_out);
    TRINITY_CU(cudaMemcpy(codes + row * row_bytes, w->view.codes, n_out * row_bytes, cudaMemcpyHostToDevice));
    row_scales.insert(row_scales.end(), n_out, w->view.scale);
    if (group) {
      if (w->view.group_scales) {
        group_scales.insert(group_scales.end(), w->view.group_scales, w->view.group_scales + n_out * blocks);
      } else {
        group_scales.insert(group_scales.end(), n_out * blocks, w->view.scale);
      }
    }
    row += n_out;
  }
  d.codes = codes;
  d.row_scales = Upload(row_scales.data(), row_scales.size());
  if (group) d.group_scales = Upload(group_scales.data(), group_scales.size());
  return d;
}

DenseDev CudaForward::UploadDense(const kernels::DenseView& v) {
  DenseDev d;
  d.n_in = v.n_in;
  d.n_rows = v.n_rows;
  if (v.type == TensorType::kF16 || v.type == TensorType::kF32) {
    const size_t elt = v.type == TensorType::kF16 ? 2 : 4;
    d.f16 = v.type == TensorType::kF16;
    uint8_t* p = Alloc<uint8_t>(static_cast<size_t>(v.n_rows) * v.n_in * elt);
    TRINITY_CU(cudaMemcpy2D(p, v.n_in * elt, v.data, v.row_bytes, v.n_in * elt, static_cast<size_t>(v.n_rows),
                            cudaMemcpyHostToDevice));
    d.data = p;
    return d;
  }
  // Other types (BF16, Q8_0, Q6_K): dequantised exactly to f32 once, in slices.
  d.f16 = false;
  float* p = Alloc<float>(static_cast<size_t>(v.n_rows * v.n_in));
  const int64_t slice = 1024;
  std::vector<float> buf(static_cast<size_t>(slice * v.n_in));
  for (int64_t r0 = 0; r0 < v.n_rows; r0 += slice) {
    const int64_t n = std::min(slice, v.n_rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      quant::DequantizeRow(v.type, v.data + (r0 + r) * v.row_bytes, static_cast<uint64_t>(v.n_in), buf.data() + r * v.n_in);
    }
    TRINITY_CU(cudaMemcpy(p + r0 * v.n_in, buf.data(), static_cast<size_t>(n * v.n_in) * sizeof(float),
                          cudaMemcpyHostToDevice));
  }
  d.data = p;
  return d;
}

void CudaForward::Stage(int64_t rows) {
  TRINITY_CU(cudaMemcpyAsync(d_meta_, h_meta_, static_cast<size_t>(3 * max_rows_) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  (void)rows;
}

void CudaForward::EnqueueLayers(int64_t rows, bool prefill) {
  const ModelConfig& c = c_;
  const int32_t* tokens = d_meta_;
  const int32_t* pos = d_meta_ + max_rows_;
  const int32_t* seq = d_meta_ + 2 * max_rows_;
  const NormInput glu = c.activation == FfnActivation::kRelu2 ? NormInput::kRelu2Glu : NormInput::kSiluGlu;
  auto matmul = [&](const char* name, const TernaryDev& w, float* y, int64_t y_stride) {
    Timed(name, rows, [&] {
      detail::LaunchTernaryMatmul(w, q8_, wide_, act_scales_, q_sums_, rows, y, y_stride, detail::MatmulKind::kAuto,
                                  stream_);
    });
  };
  auto norm_quant = [&](NormInput mode, float* src, int64_t stride, const float* weight, int64_t width) {
    Timed("norm_quant", rows, [&] {
      detail::LaunchNormQuant(mode, src, stride, tmp_, c.n_embd, weight, width, c.rms_eps, rows, q8_, wide_,
                              act_scales_, q_sums_, stream_);
    });
  };
  Timed("embed", rows, [&] { detail::LaunchEmbed(embd_, tokens, rows, x_, stream_); });
  for (int64_t il = 0; il < c.n_layer; ++il) {
    const Layer& l = layers_[static_cast<size_t>(il)];
    float* k_layer = k_ + il * n_ctx_ * n_kv_;
    float* v_layer = v_ + il * n_ctx_ * n_kv_;
    // x += the previous layer's down output, fused into this norm.
    norm_quant(il == 0 ? NormInput::kPlain : NormInput::kResidual, x_, c.n_embd, l.attn_norm, c.n_embd);
    matmul("matmul qkv", l.qkv, qkv_, qkv_w_);
    Timed("rope_kv", rows, [&] {
      detail::LaunchRopeKv(qkv_, qkv_w_, rows, pos, seq, rope_cs_, c.n_head, c.n_head_kv, c.head_dim, c.n_rot, k_layer,
                           v_layer, seq_stride_, stream_);
    });
    Timed("attention", rows, [&] {
      detail::LaunchAttention(qkv_, qkv_w_, rows, pos, seq, k_layer, v_layer, seq_stride_, c.n_head, c.n_head_kv,
                              c.head_dim, SplitsFor(rows), part_o_, part_ml_, att_, c.n_embd, prefill, stream_);
    });
    norm_quant(NormInput::kPlain, att_, c.n_embd, l.attn_sub_norm, c.n_embd);
    matmul("matmul o", l.wo, tmp_, c.n_embd);
    norm_quant(NormInput::kResidual, x_, c.n_embd, l.ffn_norm, c.n_embd);
    matmul("matmul gate_up", l.gate_up, gu_, 2 * c.n_ff);
    Timed("norm_quant", rows, [&] {
      detail::LaunchNormQuant(glu, gu_, 2 * c.n_ff, nullptr, 0, l.ffn_sub_norm, c.n_ff, c.rms_eps, rows, q8_, wide_,
                              act_scales_, q_sums_, stream_);
    });
    matmul("matmul down", l.down, tmp_, c.n_embd);
  }
}

void CudaForward::EnqueueHead(int64_t begin, int64_t n, bool argmax) {
  const ModelConfig& c = c_;
  Timed("output_norm", n, [&] {
    detail::LaunchNorm(NormInput::kResidual, x_ + begin * c.n_embd, c.n_embd, tmp_ + begin * c.n_embd, c.n_embd,
                       output_norm_, c.n_embd, c.rms_eps, n, xn_, c.n_embd, stream_);
  });
  Timed("lm_head", n, [&] { detail::LaunchLmHead(lm_, xn_, c.n_embd, n, logits_, c.n_vocab, stream_); });
  if (argmax) Timed("argmax", n, [&] { detail::LaunchArgmax(logits_, c.n_vocab, c.n_vocab, n, ids_, stream_); });
  CollectProfile();
}

void CudaForward::CollectProfile() {
  if (pending_.empty()) return;
  cudaStreamSynchronize(stream_);
  for (PendingEvent& e : pending_) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, e.start, e.stop);
    auto& [total, calls] = profile_ms_[e.name];
    total += ms;
    ++calls;
    cudaEventDestroy(e.start);
    cudaEventDestroy(e.stop);
  }
  pending_.clear();
}

void CudaForward::PrintProfile() {
  CollectProfile();
  double all = 0.0;
  for (const auto& [name, v] : profile_ms_) all += v.first;
  std::fprintf(stderr, "\nCUDA profile (TRINITY_CUDA_PROFILE=1; graphs off, GPU time between events)\n");
  std::fprintf(stderr, "%-34s %10s %12s %10s %7s\n", "stage [batch rows]", "calls", "total ms", "mean us", "share");
  for (const auto& [name, v] : profile_ms_) {
    std::fprintf(stderr, "%-34s %10lld %12.3f %10.2f %6.1f%%\n", name.c_str(), static_cast<long long>(v.second), v.first,
                 v.first * 1e3 / static_cast<double>(v.second), all > 0.0 ? 100.0 * v.first / all : 0.0);
  }
}

void CudaForward::Eval(int seq, const int32_t* tokens, int64_t n, int64_t pos, float* last_logits, float* all_logits,
                       int32_t* greedy) {
  if (n <= 0) return;
  if (seq < 0 || seq >= n_seq_) Fail("CUDA forward: sequence {} is out of range [0, {})", seq, n_seq_);
  if (pos < 0 || pos + n > n_ctx_) Fail("CUDA forward: positions {}..{} exceed the context ({})", pos, pos + n - 1, n_ctx_);
  if (n == 1 && use_graphs_) {
    const int64_t p = pos;
    float* out = last_logits ? last_logits : all_logits;
    Decode(1, tokens, &seq, &p, out, greedy);
    if (last_logits && all_logits) std::memcpy(all_logits, last_logits, static_cast<size_t>(c_.n_vocab) * sizeof(float));
    return;
  }
  TRINITY_CU(cudaSetDevice(device_));
  const int64_t n_vocab = c_.n_vocab;
  for (int64_t c0 = 0; c0 < n; c0 += max_rows_) {
    const int64_t rows = std::min(max_rows_, n - c0);
    for (int64_t i = 0; i < rows; ++i) {
      const int32_t t = tokens[c0 + i];
      if (t < 0 || t >= n_vocab) Fail("token id {} is out of range [0, {})", t, n_vocab);
      h_meta_[i] = t;
      h_meta_[max_rows_ + i] = static_cast<int32_t>(pos + c0 + i);
      h_meta_[2 * max_rows_ + i] = seq;
    }
    Stage(rows);
    EnqueueLayers(rows, /*prefill=*/true);
    const bool last = c0 + rows == n;
    if (all_logits) {
      for (int64_t b = 0; b < rows; b += logit_rows_) {
        const int64_t k = std::min(logit_rows_, rows - b);
        EnqueueHead(b, k, false);
        TRINITY_CU(cudaMemcpyAsync(all_logits + (c0 + b) * n_vocab, logits_, static_cast<size_t>(k * n_vocab) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
      }
      if (last && greedy) {
        detail::LaunchArgmax(all_logits ? logits_ + ((rows - 1) % logit_rows_) * n_vocab : logits_, n_vocab, n_vocab, 1,
                             ids_, stream_);
        TRINITY_CU(cudaMemcpyAsync(greedy, ids_, sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
      }
    } else if (last && (last_logits || greedy)) {
      EnqueueHead(rows - 1, 1, greedy != nullptr);
      if (last_logits) {
        TRINITY_CU(cudaMemcpyAsync(last_logits, logits_, static_cast<size_t>(n_vocab) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
      }
      if (greedy) TRINITY_CU(cudaMemcpyAsync(greedy, ids_, sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    }
    TRINITY_CU(cudaStreamSynchronize(stream_));  // h_meta_ is rewritten by the next chunk
  }
  if (all_logits && last_logits) {
    std::memcpy(last_logits, all_logits + (n - 1) * n_vocab, static_cast<size_t>(n_vocab) * sizeof(float));
  }
}

void CudaForward::Decode(int64_t n, const int32_t* tokens, const int32_t* seqs, const int64_t* pos, float* logits,
                         int32_t* greedy) {
  if (n <= 0) return;
  if (n > n_seq_ || n > logit_rows_) Fail("CUDA forward: {} decode rows but only {} sequences", n, n_seq_);
  TRINITY_CU(cudaSetDevice(device_));
  const int64_t n_vocab = c_.n_vocab;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) Fail("token id {} is out of range [0, {})", tokens[i], n_vocab);
    if (seqs[i] < 0 || seqs[i] >= n_seq_) Fail("CUDA forward: sequence {} is out of range [0, {})", seqs[i], n_seq_);
    if (pos[i] < 0 || pos[i] >= n_ctx_) Fail("CUDA forward: position {} exceeds the context ({})", pos[i], n_ctx_);
    h_meta_[i] = tokens[i];
    h_meta_[max_rows_ + i] = static_cast<int32_t>(pos[i]);
    h_meta_[2 * max_rows_ + i] = seqs[i];
  }
  Stage(n);
  if (use_graphs_) {
    auto it = res_.graphs.find(n);
    if (it == res_.graphs.end()) {
      cudaGraph_t graph = nullptr;
      TRINITY_CU(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        EnqueueLayers(n, /*prefill=*/false);
        EnqueueHead(0, n, true);
      } catch (...) {
        cudaStreamEndCapture(stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      TRINITY_CU(cudaStreamEndCapture(stream_, &graph));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      Check(e, "cudaGraphInstantiate");
      it = res_.graphs.emplace(n, exec).first;
    }
    TRINITY_CU(cudaGraphLaunch(it->second, stream_));
  } else {
    EnqueueLayers(n, /*prefill=*/false);
    EnqueueHead(0, n, true);
  }
  if (logits) {
    TRINITY_CU(cudaMemcpyAsync(logits, logits_, static_cast<size_t>(n * n_vocab) * sizeof(float), cudaMemcpyDeviceToHost,
                               stream_));
  }
  if (greedy) TRINITY_CU(cudaMemcpyAsync(greedy, ids_, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  TRINITY_CU(cudaStreamSynchronize(stream_));
}

}  // namespace

bool Built() { return true; }

int DeviceCount() {
  // No driver library, no device: answer without starting the CUDA runtime (machines without a
  // GPU, CI, sanitizer runs never initialise it).
  static const bool have_driver = [] {
    void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (driver == nullptr) return false;
    dlclose(driver);
    return true;
  }();
  if (!have_driver) return 0;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear: no driver / no device is not an error here
    return 0;
  }
  return n;
}

std::string DeviceDescription(int device) {
  if (device < 0 || device >= DeviceCount()) return "";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB)", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                     static_cast<double>(prop.totalGlobalMem) / (1 << 30));
}

double MeasureCopyGbps(int device, int64_t bytes) {
  if (device < 0 || device >= DeviceCount()) return 0.0;
  TRINITY_CU(cudaSetDevice(device));
  const size_t n = static_cast<size_t>(std::max<int64_t>(bytes, 1 << 20));
  void *a = nullptr, *b = nullptr;
  TRINITY_CU(cudaMalloc(&a, n));
  if (cudaMalloc(&b, n) != cudaSuccess) {
    cudaFree(a);
    Fail("CUDA: cannot allocate the bandwidth test's buffers");
  }
  cudaMemset(a, 1, n);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float best_ms = 0.0f;
  for (int i = 0; i < 6; ++i) {  // the first is a warm-up
    cudaEventRecord(start);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    if (i > 0 && (best_ms == 0.0f || ms < best_ms)) best_ms = ms;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  TRINITY_CU(cudaGetLastError());
  return best_ms > 0.0f ? 2.0 * static_cast<double>(n) / (best_ms * 1e-3) / 1e9 : 0.0;
}

std::unique_ptr<Forward> CreateForward(const Model& model, const ForwardOptions& options) {
  return std::make_unique<CudaForward>(model, options);
}

}  // namespace trinity::cuda
