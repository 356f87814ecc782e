// The reference forward pass: plain C++, one token at a time, the oracle for faster paths.
//
//   x = token_embd[token]
//   per layer:
//     a   = attn_norm(x)
//     q,k,v = Wq a, Wk a, Wv a            (BitLinear: int8 per-token activations, ternary weights)
//     RoPE(q), RoPE(k); append k, v to the cache
//     att = softmax(q k^T / sqrt(head_dim)) v   (causal, grouped-query)
//     x  += Wo attn_sub_norm(att)
//     m   = ffn_norm(x)
//     x  += Wdown ffn_sub_norm(act(Wgate m) * (Wup m))    act = relu^2 (or SiLU)
//   logits = lm_head . output_norm(x)
//
// Two paths compute it. EvalToken is the reference: scalar kernels, one token at a time. EvalBatch
// is the fast path: the kernel table picked once at construction (kernels/cpu.h), a batch of up to
// kMaxBatch prompt tokens per weight pass (ternary GEMM, weights unpacked once per block of
// tokens), decode as a batch of one (ternary GEMV), per-token work (residual add, norm,
// activation quantisation) fused into one pass per token, RoPE angles computed once per batch
// rather than per layer, and the LM head only for the tokens whose logits are asked for. Integer
// matmuls are bit-identical to the reference; the LM head and attention sum floats in another
// order, so logits agree to within rounding (see tests/engine_fast_path_test.cc).
#include "engine/model/context.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/common/error.h"
#include "engine/common/fp16.h"
#include "engine/model/batcher.h"

namespace trinity {

namespace {

const kernels::CpuKernels& KernelsFor(const ContextOptions& options) {
  if (options.reference) return kernels::RefKernels();
  kernels::GetStreamPrefetch();  // a bad $TRINITY_PREFETCH fails here, in the caller's thread
  return kernels::GetCpuKernels(options.cpu_path.value_or(kernels::ActiveCpuPath()));
}

int PoolThreads(const ContextOptions& options) {
  if (options.batcher) return 1;  // the batcher's threads do the work
  return options.n_threads > 0 ? options.n_threads : ThreadPool::DefaultThreads();
}

}  // namespace

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
    case Device::kAuto: return "auto";
  }
  return "?";
}

Device ParseDevice(const std::string& name) {
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda" || name == "gpu") return Device::kCuda;
  if (name == "auto") return Device::kAuto;
  Fail("unknown device \"{}\": expected cpu, cuda or auto", name);
}

Device ResolveDevice(Device device) {
  if (device != Device::kAuto) return device;
  return cuda::DeviceCount() > 0 ? Device::kCuda : Device::kCpu;
}


const char* LmHeadFormatName(LmHeadFormat format) { return format == LmHeadFormat::kQ8 ? "q8" : "file"; }

LmHeadFormat ParseLmHeadFormat(const std::string& name) {
  if (name == "file" || name == "f16" || name == "default") return LmHeadFormat::kFile;
  if (name == "q8") return LmHeadFormat::kQ8;
  Fail("unknown LM head format \"{}\": expected file (the model's own weights) or q8", name);
}

const char* KvCacheTypeName(KvCacheType type) { return type == KvCacheType::kF16 ? "f16" : "f32"; }

KvCacheType ParseKvCacheType(const std::string& name) {
  if (name == "f32") return KvCacheType::kF32;
  if (name == "f16") return KvCacheType::kF16;
  Fail("unknown KV cache type \"{}\": expected f32 or f16", name);
}

Context::Context(const Model& model, ContextOptions options)
    : model_(model),
      config_(model.config()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min<int64_t>(config_.n_ctx_train, 4096)),
      pool_(PoolThreads(options)),
      batcher_(options.batcher),
      kv_cache_(options.kv_cache),
      kernels_(&KernelsFor(options)),
      reference_(options.reference) {
  if (batcher_ && reference_) Fail("the reference forward pass cannot be batched");
  if (!reference_ && ResolveDevice(options.device) == Device::kCuda) {
    if (batcher_) Fail("a GPU context cannot join a CPU batcher");
    if (kv_cache_ != KvCacheType::kF32) Fail("the f16 KV cache is CPU-only: use --device cpu, or --kv-cache f32 on the GPU");
    if (n_ctx_ <= 0 || n_ctx_ > (int64_t{1} << 20)) Fail("context size {} is out of range", n_ctx_);
    cuda::ForwardOptions o;
    o.n_ctx = n_ctx_;
    gpu_ = cuda::CreateForward(model, o);
    logits_.resize(config_.n_vocab);
    return;  // the CPU KV cache and scratch are not needed
  }
  ChooseHeads(options.lm_head);
  Allocate(/*kv_cache=*/true, /*compute=*/batcher_ == nullptr);
}

Context::Context(const Model& model, ContextOptions options, ComputeOnly)
    : model_(model),
      config_(model.config()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min<int64_t>(config_.n_ctx_train, 4096)),
      pool_(options.n_threads > 0 ? options.n_threads : ThreadPool::DefaultThreads()),
      kernels_(&KernelsFor(options)) {
  ChooseHeads(options.lm_head);
  Allocate(/*kv_cache=*/false, /*compute=*/true);
}

void Context::ChooseHeads(LmHeadFormat lm_head) {
  if (lm_head == LmHeadFormat::kQ8) {
    lm_head_q8_ = &model_.LmHeadQ8();
  } else {
    lm_head_ = &model_.StreamedLmHead();
  }
  token_embd_ = config_.tied_embeddings && lm_head_ != nullptr ? lm_head_ : &model_.token_embd();
}

Context::~Context() {
  if (batcher_) batcher_->Detach(*this);
}

uint64_t Context::KvBytesPerPosition() const {
  const uint64_t element = kv_cache_ == KvCacheType::kF16 ? sizeof(uint16_t) : sizeof(float);
  return 2 * static_cast<uint64_t>(config_.n_layer * config_.n_embd_kv()) * element;
}

void Context::StoreKv(int64_t il, int64_t pos, const float* k, const float* v) {
  const int64_t n_kv = config_.n_embd_kv();
  const size_t at = static_cast<size_t>((il * n_ctx_ + pos) * n_kv);
  if (kv_cache_ == KvCacheType::kF16) {
    for (int64_t i = 0; i < n_kv; ++i) {
      k_half_.data()[at + i] = Fp32ToFp16(k[i]);
      v_half_.data()[at + i] = Fp32ToFp16(v[i]);
    }
    return;
  }
  std::copy_n(k, n_kv, k_cache_.data() + at);
  std::copy_n(v, n_kv, v_cache_.data() + at);
}

void Context::Idle() {
  if (batcher_) batcher_->Idle(*this);
}

void Context::Allocate(bool kv_cache, bool compute) {
  if (n_ctx_ <= 0 || n_ctx_ > (int64_t{1} << 20)) Fail("context size {} is out of range", n_ctx_);
  const ModelConfig& c = config_;
  logits_.resize(c.n_vocab);
  if (kv_cache) {
    const size_t kv = static_cast<size_t>(c.n_layer * n_ctx_ * c.n_embd_kv());
    if (kv_cache_ == KvCacheType::kF16) {
      k_half_ = LazyBuffer<uint16_t>(kv);
      v_half_ = LazyBuffer<uint16_t>(kv);
    } else {
      k_cache_ = LazyBuffer<float>(kv);
      v_cache_ = LazyBuffer<float>(kv);
    }
  }
  if (!compute) return;
  const size_t wide = static_cast<size_t>(std::max(c.n_embd, c.n_ff));
  scores_.resize(static_cast<size_t>(c.n_head * n_ctx_));
  if (reference_) {
    x_.resize(c.n_embd);
    xn_.resize(wide);
    q_.resize(c.n_embd);
    att_.resize(c.n_embd);
    tmp_.resize(c.n_embd);
    gate_.resize(c.n_ff);
    up_.resize(c.n_ff);
    act_q_.resize(wide);
    kb_.resize(c.n_embd_kv());
    vb_.resize(c.n_embd_kv());
    return;
  }
  const size_t b = static_cast<size_t>(kMaxBatch);
  xb_.resize(b * c.n_embd);
  xnb_ = LazyBuffer<float>(b * wide);
  qb_ = LazyBuffer<int8_t>(b * wide + 64);  // + 64: kernels may read a full vector past an odd-sized row
  act_scales_.resize(b);
  act_sums_.resize(b);
  qh_.resize(b * c.n_embd);
  attb_.resize(b * c.n_embd);
  tmpb_.resize(b * c.n_embd);
  gateb_.resize(b * c.n_ff);
  upb_.resize(b * c.n_ff);
  kb_.resize(b * c.n_embd_kv());
  vb_.resize(b * c.n_embd_kv());
  rope_cs_.resize(b * c.n_rot);
  rows_.reserve(b);
  head_rows_.reserve(b);
  head_out_.reserve(b);
  rope_freq_.resize(static_cast<size_t>(c.n_rot / 2));
  for (int64_t i = 0; i < c.n_rot / 2; ++i) {
    // As kernels::RopeNeox: theta^(-2i/n_rot) in double.
    rope_freq_[i] = std::pow(static_cast<double>(c.rope_theta), -2.0 * static_cast<double>(i) / static_cast<double>(c.n_rot));
  }
}

void Context::Truncate(int64_t n) {
  if (n < 0 || n > n_past_) Fail("cannot truncate a context of {} positions to {}", n_past_, n);
  n_past_ = n;
}

void Context::Linear(const TernaryWeight& w, const float* x, float* y) {
  const float act_scale = kernels::QuantizeActivations(x, w.view.n_in, act_q_.data());
  pool_.ParallelFor(
      w.view.n_out, [&](int64_t begin, int64_t end) { kernels::TernaryMatVec(w.view, act_q_.data(), act_scale, y, begin, end); },
      16);
}

std::span<const float> Context::Eval(std::span<const int32_t> tokens, std::vector<float>* all_logits) {
  if (tokens.empty()) Fail("Eval needs at least one token");
  if (n_past_ + static_cast<int64_t>(tokens.size()) > n_ctx_) {
    Fail("the context is full: {} positions used + {} new tokens > context size {}", n_past_, tokens.size(), n_ctx_);
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= config_.n_vocab) Fail("token id {} is out of range [0, {})", t, config_.n_vocab);
  }
  if (all_logits) all_logits->resize(tokens.size() * static_cast<size_t>(config_.n_vocab));
  if (batcher_) {
    batcher_->Eval(*this, tokens, all_logits ? all_logits->data() : nullptr);
    return logits_;
  }
  if (gpu_) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    gpu_->Eval(0, tokens.data(), n, n_past_, logits_.data(), all_logits ? all_logits->data() : nullptr, nullptr);
    n_past_ += n;
    return logits_;
  }
  if (!reference_) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    for (int64_t i = 0; i < n; i += kMaxBatch) {
      const int64_t nb = std::min(kMaxBatch, n - i);
      EvalBatch(tokens.data() + i, nb, n_past_, all_logits ? all_logits->data() + i * config_.n_vocab : nullptr,
                /*last_logits=*/i + nb == n);
      n_past_ += nb;
    }
    return logits_;
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    EvalToken(tokens[i], n_past_);
    ++n_past_;
    if (all_logits) std::copy(logits_.begin(), logits_.end(), all_logits->begin() + i * config_.n_vocab);
  }
  return logits_;
}

void Context::PrefaultKv(int64_t end) {
  if (end <= kv_prefaulted_ || (k_cache_.data() == nullptr && k_half_.data() == nullptr)) return;
  const int64_t n_kv = config_.n_embd_kv();
  const int64_t to = std::min(n_ctx_, std::max(end, kv_prefaulted_ + kKvPrefaultPositions));
  if (!kv_huge_pages_ && to >= kKvHugePagesFrom) {
    // The positions cached so far sit in small pages: collapsed once (~160 MB copied for 2B-4T),
    // so the whole cache, not only its later part, is read from huge pages.
    for (auto* cache : {&k_cache_, &v_cache_}) cache->AdviseHugePages();
    for (auto* cache : {&k_half_, &v_half_}) cache->AdviseHugePages();
    for (int64_t il = 0; il < config_.n_layer; ++il) {
      const size_t first = static_cast<size_t>(il * n_ctx_ * n_kv), count = static_cast<size_t>(kv_prefaulted_ * n_kv);
      for (auto* cache : {&k_cache_, &v_cache_}) cache->CollapseHugePages(first, count);
      for (auto* cache : {&k_half_, &v_half_}) cache->CollapseHugePages(first, count);
    }
    kv_huge_pages_ = true;
  }
  for (int64_t il = 0; il < config_.n_layer; ++il) {
    const size_t first = static_cast<size_t>((il * n_ctx_ + kv_prefaulted_) * n_kv);
    const size_t count = static_cast<size_t>((to - kv_prefaulted_) * n_kv);
    k_cache_.Prefault(first, count);  // the empty pair does nothing
    v_cache_.Prefault(first, count);
    k_half_.Prefault(first, count);
    v_half_.Prefault(first, count);
  }
  kv_prefaulted_ = to;
}

void Context::EvalToken(int32_t token, int64_t pos) {
  const ModelConfig& c = config_;
  const int64_t n_kv = c.n_embd_kv();
  kernels::DenseRow(*token_embd_, token, x_.data());

  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& l = model_.layers()[static_cast<size_t>(il)];

    // Attention block.
    kernels::RmsNorm(x_.data(), l.attn_norm, c.n_embd, c.rms_eps, xn_.data());
    {
      // q, k and v share one activation quantisation (same input).
      const float act_scale = kernels::QuantizeActivations(xn_.data(), c.n_embd, act_q_.data());
      float* k = kb_.data();
      float* v = vb_.data();
      pool_.ParallelFor(c.n_embd + 2 * n_kv, [&](int64_t begin, int64_t end) {
        // Rows [0, n_embd) are q, then k, then v.
        auto run = [&](const TernaryWeight& w, float* y, int64_t offset) {
          const int64_t b = std::clamp(begin - offset, int64_t{0}, w.view.n_out);
          const int64_t e = std::clamp(end - offset, int64_t{0}, w.view.n_out);
          if (b < e) kernels::TernaryMatVec(w.view, act_q_.data(), act_scale, y, b, e);
        };
        run(l.wq, q_.data(), 0);
        run(l.wk, k, c.n_embd);
        run(l.wv, v, c.n_embd + n_kv);
      }, 16);
      kernels::RopeNeox(q_.data(), c.n_head, c.head_dim, c.n_rot, pos, c.rope_theta);
      kernels::RopeNeox(k, c.n_head_kv, c.head_dim, c.n_rot, pos, c.rope_theta);
      StoreKv(il, pos, k, v);
    }
    pool_.ParallelFor(c.n_head, [&](int64_t begin, int64_t end) {
      if (kv_cache_ == KvCacheType::kF16) {
        kernels::Attention(q_.data(), KHalf(il), VHalf(il), pos + 1, c.n_head, c.n_head_kv, c.head_dim, att_.data(),
                           scores_.data() + begin * n_ctx_, begin, end);
      } else {
        kernels::Attention(q_.data(), KCache(il), VCache(il), pos + 1, c.n_head, c.n_head_kv, c.head_dim, att_.data(),
                           scores_.data() + begin * n_ctx_, begin, end);
      }
    });
    kernels::RmsNorm(att_.data(), l.attn_sub_norm, c.n_embd, c.rms_eps, att_.data());
    Linear(l.wo, att_.data(), tmp_.data());
    for (int64_t i = 0; i < c.n_embd; ++i) x_[i] += tmp_[i];

    // Feed-forward block.
    kernels::RmsNorm(x_.data(), l.ffn_norm, c.n_embd, c.rms_eps, xn_.data());
    {
      const float act_scale = kernels::QuantizeActivations(xn_.data(), c.n_embd, act_q_.data());
      pool_.ParallelFor(2 * c.n_ff, [&](int64_t begin, int64_t end) {
        const int64_t gb = std::min(begin, c.n_ff), ge = std::min(end, c.n_ff);
        if (gb < ge) kernels::TernaryMatVec(l.w_gate.view, act_q_.data(), act_scale, gate_.data(), gb, ge);
        const int64_t ub = std::max(begin, c.n_ff) - c.n_ff, ue = std::max(end, c.n_ff) - c.n_ff;
        if (ub < ue) kernels::TernaryMatVec(l.w_up.view, act_q_.data(), act_scale, up_.data(), ub, ue);
      }, 16);
    }
    for (int64_t i = 0; i < c.n_ff; ++i) {
      const float g = gate_[i];
      const float a = c.activation == FfnActivation::kRelu2 ? (g > 0.0f ? g * g : 0.0f) : g / (1.0f + std::exp(-g));
      gate_[i] = a * up_[i];
    }
    kernels::RmsNorm(gate_.data(), l.ffn_sub_norm, c.n_ff, c.rms_eps, gate_.data());
    Linear(l.w_down, gate_.data(), tmp_.data());
    for (int64_t i = 0; i < c.n_embd; ++i) x_[i] += tmp_[i];
  }

  kernels::RmsNorm(x_.data(), model_.output_norm(), c.n_embd, c.rms_eps, xn_.data());
  LmHead(xn_.data(), logits_.data());
}

void Context::LmHead(const float* xn, float* logits) {
  // kernels_ is the reference table on the reference pass.
  const kernels::CpuKernels& k = *kernels_;
  if (lm_head_q8_ != nullptr) {
    // int8 activations by the BitLinear rule, into act_q_ (free at this point).
    int32_t q_sum = 0;
    const float act_scale = k.quantize(xn, config_.n_embd, act_q_.data(), &q_sum);
    pool_.ParallelFor(config_.n_vocab, [&](int64_t b, int64_t e) {
      k.q8_gemv(*lm_head_q8_, act_q_.data(), q_sum, act_scale, logits, b, e);
    }, 256);
    return;
  }
  pool_.ParallelFor(config_.n_vocab, [&](int64_t b, int64_t e) { k.dense_gemv(*lm_head_, xn, logits, b, e); }, 256);
}


// Fast path. Buffers are [n][width] row-major, one row per token of the batch.
void Context::EvalBatch(const int32_t* tokens, int64_t n, int64_t pos, float* all_logits, bool last_logits) {
  rows_.clear();
  for (int64_t t = 0; t < n; ++t) {
    float* out = all_logits ? all_logits + t * config_.n_vocab : (t == n - 1 && last_logits ? logits_.data() : nullptr);
    rows_.push_back(Row{this, tokens[t], pos + t, out});
  }
  EvalRows(rows_.data(), n);
  if (all_logits) std::copy(all_logits + (n - 1) * config_.n_vocab, all_logits + n * config_.n_vocab, logits_.begin());
}

void Context::EvalRows(const Row* rows, int64_t n) {
  const ModelConfig& c = config_;
  const kernels::CpuKernels& k = *kernels_;
  const int64_t n_embd = c.n_embd, n_ff = c.n_ff, n_kv = c.n_embd_kv();
  const int64_t wide = std::max(n_embd, n_ff);
  const int64_t half = c.n_rot / 2;

  for (int64_t t = 0; t < n; ++t) rows[t].seq->PrefaultKv(rows[t].pos + 1);
  for (int64_t t = 0; t < n; ++t) kernels::DenseRow(*token_embd_, rows[t].token, xb_.data() + t * n_embd);
  // RoPE angles of the rows' positions, once for all layers (same double math as RopeNeox).
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(rows[t].pos) * rope_freq_[i];
      rope_cs_[t * c.n_rot + 2 * i] = static_cast<float>(std::cos(angle));
      rope_cs_[t * c.n_rot + 2 * i + 1] = static_cast<float>(std::sin(angle));
    }
  }
  auto rope = [&](float* v, int64_t n_head, int64_t t) {
    const float* cs = rope_cs_.data() + t * c.n_rot;
    for (int64_t h = 0; h < n_head; ++h) {
      float* head = v + h * c.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = head[i], x1 = head[i + half];
        head[i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
        head[i + half] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
      }
    }
  };
  // Per token t in [b, e): in = rms_norm(src_t) * weight, quantised into qb_ row t.
  auto norm_quant = [&](const float* src, int64_t width, const float* weight, int64_t b, int64_t e) {
    if (k.norm_quantize != nullptr) {  // one fused kernel, no normed copy written
      for (int64_t t = b; t < e; ++t)
        act_scales_[t] = k.norm_quantize(src + t * width, nullptr, weight, width, c.rms_eps, qb_.data() + t * wide, &act_sums_[t]);
      return;
    }
    for (int64_t t = b; t < e; ++t) {
      float* xn = xnb_.data() + t * wide;
      kernels::RmsNorm(src + t * width, weight, width, c.rms_eps, xn);
      act_scales_[t] = k.quantize(xn, width, qb_.data() + t * wide, &act_sums_[t]);
    }
  };
  // y (n rows of y_stride) = W x for all n tokens, rows split over the threads.
  auto gemm = [&](const TernaryWeight& w, float* y, int64_t y_stride, int64_t b, int64_t e) {
    k.ternary_gemm(w.view, qb_.data(), wide, act_sums_.data(), act_scales_.data(), n, y, y_stride, b, e);
  };
  // Each row's attention reads its own sequence's cache, of that sequence's type.
  auto half_cache = [&](const Row& r) { return r.seq->kv_cache_ == KvCacheType::kF16; };

  for (int64_t il = 0; il < c.n_layer; ++il) {
    const LayerWeights& l = model_.layers()[static_cast<size_t>(il)];

    // Attention block. q, k and v share one activation quantisation.
    pool_.ParallelFor(n, [&](int64_t b, int64_t e) { norm_quant(xb_.data(), n_embd, l.attn_norm, b, e); });
    pool_.ParallelFor(n_embd + 2 * n_kv, [&](int64_t begin, int64_t end) {
      auto run = [&](const TernaryWeight& w, float* y, int64_t y_stride, int64_t offset) {
        const int64_t b = std::clamp(begin - offset, int64_t{0}, w.view.n_out);
        const int64_t e = std::clamp(end - offset, int64_t{0}, w.view.n_out);
        if (b < e) gemm(w, y, y_stride, b, e);
      };
      run(l.wq, qh_.data(), n_embd, 0);
      run(l.wk, kb_.data(), n_kv, n_embd);
      run(l.wv, vb_.data(), n_kv, n_embd + n_kv);
    }, 16);
    // RoPE, then every row's key and value into its sequence's cache before any row attends (a
    // row sees the rows of its own sequence at earlier positions of this batch).
    for (int64_t t = 0; t < n; ++t) {
      rope(qh_.data() + t * n_embd, c.n_head, t);
      rope(kb_.data() + t * n_kv, c.n_head_kv, t);
      rows[t].seq->StoreKv(il, rows[t].pos, kb_.data() + t * n_kv, vb_.data() + t * n_kv);
    }
    // Causal: a row at position p sees positions 0 .. p of its sequence. Runs of rows at
    // consecutive positions of one sequence (a prompt batch is one run) go through the batched
    // kernel when the path has one: work items of (KV head, up to kAttnChunk rows of a run) over
    // the threads, each reading its KV head's cache once for all its rows and query heads. Other
    // rows (decode steps) through the decode kernel by key ranges (below), or on paths without
    // it the one-token kernel, heads split over the threads; each head's scores row (n_ctx floats
    // of scores_) is reused by those rows in turn.
    const bool batched_attention =
        k.attention_prefill != nullptr && kernels::AttentionPrefillSupports(c.n_head, c.n_head_kv, c.head_dim);
    constexpr int64_t kAttnChunk = 16;
    struct AttnItem {
      int64_t t_begin, t_end, kvh;
    };
    std::vector<AttnItem> attn_items;
    std::vector<int64_t> single_rows;
    for (int64_t t0 = 0, t1; t0 < n; t0 = t1) {
      for (t1 = t0 + 1; t1 < n && rows[t1].seq == rows[t0].seq && rows[t1].pos == rows[t1 - 1].pos + 1; ++t1) {
      }
      if (!batched_attention || t1 - t0 == 1) {
        for (int64_t t = t0; t < t1; ++t) single_rows.push_back(t);
        continue;
      }
      for (int64_t kvh = 0; kvh < c.n_head_kv; ++kvh)
        for (int64_t t = t0; t < t1; t += kAttnChunk) attn_items.push_back({t, std::min(t1, t + kAttnChunk), kvh});
    }
    if (!attn_items.empty()) {
      pool_.ParallelFor(static_cast<int64_t>(attn_items.size()), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const AttnItem& it = attn_items[static_cast<size_t>(i)];
          // Row t0 of the run at position p0 is the kernel's token 0 at pos p0; the run's rows
          // are contiguous in qh_ and attb_.
          const Row& r0 = rows[it.t_begin];
          const float* q = qh_.data() + it.t_begin * n_embd;
          float* out = attb_.data() + it.t_begin * n_embd;
          const int64_t n_tok = it.t_end - it.t_begin;
          if (half_cache(r0)) {
            k.attention_prefill_f16(q, n_embd, r0.seq->KHalf(il), r0.seq->VHalf(il), r0.pos, c.n_head, c.n_head_kv,
                                    c.head_dim, out, n_embd, 0, n_tok, it.kvh, it.kvh + 1);
          } else {
            k.attention_prefill(q, n_embd, r0.seq->KCache(il), r0.seq->VCache(il), r0.pos, c.n_head, c.n_head_kv,
                                c.head_dim, out, n_embd, 0, n_tok, it.kvh, it.kvh + 1);
          }
        }
      });
    }
    if (!single_rows.empty() && k.attention_decode != nullptr &&
        kernels::AttentionDecodeSupports(c.n_head, c.n_head_kv, c.head_dim)) {
      // Decode rows: work items of (row, range of cached keys), every head at once, so each
      // range's cache rows are read once, whole and in order; the parts are merged per row.
      // Ranges of kDecodeKeys, down to 32 keys for short caches (up to 8 ranges, for the threads):
      // a function of the position alone, never of the thread count or the step's other rows,
      // so batched decode stays bit-identical to a sequence decoded alone. Before,
      // heads split over the threads and each read its KV head's slice of every row: at depth
      // 3072 on Zen 3, 2.5x slower end to end (bench/RESULTS.md, eleventh session).
      struct DecodeItem {
        int64_t t, k_begin, k_end;
      };
      std::vector<DecodeItem> items;
      for (int64_t t : single_rows) {
        const int64_t n_keys = rows[t].pos + 1;
        const int64_t span = std::clamp<int64_t>((n_keys + 7) / 8, 32, kernels::kDecodeKeys);
        for (int64_t k0 = 0; k0 < n_keys; k0 += span) items.push_back({t, k0, std::min(n_keys, k0 + span)});
      }
      const size_t n_items = items.size(), per_item = static_cast<size_t>(c.n_head * c.head_dim);
      if (part_o_.size() < n_items * per_item) part_o_.resize(n_items * per_item);
      if (part_ml_.size() < 2 * n_items * c.n_head) part_ml_.resize(2 * n_items * c.n_head);
      float* part_m = part_ml_.data();
      float* part_l = part_ml_.data() + n_items * c.n_head;
      pool_.ParallelFor(static_cast<int64_t>(n_items), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const DecodeItem& it = items[static_cast<size_t>(i)];
          const Context& seq = *rows[it.t].seq;
          const float* q = qh_.data() + it.t * n_embd;
          float* o = part_o_.data() + i * per_item;
          if (half_cache(rows[it.t])) {
            k.attention_decode_f16(q, seq.KHalf(il), seq.VHalf(il), c.n_head, c.n_head_kv, c.head_dim, it.k_begin,
                                   it.k_end, o, part_m + i * c.n_head, part_l + i * c.n_head);
          } else {
            k.attention_decode(q, seq.KCache(il), seq.VCache(il), c.n_head, c.n_head_kv, c.head_dim, it.k_begin,
                               it.k_end, o, part_m + i * c.n_head, part_l + i * c.n_head);
          }
        }
      });
      for (size_t i = 0, j; i < n_items; i = j) {  // a row's items are adjacent
        for (j = i + 1; j < n_items && items[j].t == items[i].t; ++j) {
        }
        kernels::MergeAttentionParts(part_o_.data() + i * per_item, part_m + i * c.n_head, part_l + i * c.n_head,
                                     static_cast<int64_t>(j - i), c.n_head, c.head_dim, attb_.data() + items[i].t * n_embd);
      }
    } else if (!single_rows.empty()) {
      pool_.ParallelFor(c.n_head, [&](int64_t begin, int64_t end) {
        for (int64_t t : single_rows) {
          const Context& seq = *rows[t].seq;
          const float* q = qh_.data() + t * n_embd;
          float* out = attb_.data() + t * n_embd;
          float* scratch = scores_.data() + begin * n_ctx_;
          if (half_cache(rows[t])) {
            k.attention_f16(q, seq.KHalf(il), seq.VHalf(il), rows[t].pos + 1, c.n_head, c.n_head_kv, c.head_dim, out,
                            scratch, begin, end);
          } else {
            k.attention(q, seq.KCache(il), seq.VCache(il), rows[t].pos + 1, c.n_head, c.n_head_kv, c.head_dim, out,
                        scratch, begin, end);
          }
        }
      });
    }
    pool_.ParallelFor(n, [&](int64_t b, int64_t e) { norm_quant(attb_.data(), n_embd, l.attn_sub_norm, b, e); });
    pool_.ParallelFor(n_embd, [&](int64_t b, int64_t e) { gemm(l.wo, tmpb_.data(), n_embd, b, e); }, 16);

    // Feed-forward block; the residual add is fused into the ffn_norm pass.
    pool_.ParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* x = xb_.data() + t * n_embd;
        const float* d = tmpb_.data() + t * n_embd;
        for (int64_t i = 0; i < n_embd; ++i) x[i] += d[i];
      }
      norm_quant(xb_.data(), n_embd, l.ffn_norm, b, e);
    });
    pool_.ParallelFor(2 * n_ff, [&](int64_t begin, int64_t end) {
      const int64_t gb = std::min(begin, n_ff), ge = std::min(end, n_ff);
      if (gb < ge) gemm(l.w_gate, gateb_.data(), n_ff, gb, ge);
      const int64_t ub = std::max(begin, n_ff) - n_ff, ue = std::max(end, n_ff) - n_ff;
      if (ub < ue) gemm(l.w_up, upb_.data(), n_ff, ub, ue);
    }, 16);
    // act(gate) * up, ffn_sub_norm and quantisation in one pass per token (relu^2 with a fused
    // kernel: one call, nothing written back).
    pool_.ParallelFor(n, [&](int64_t b, int64_t e) {
      if (k.norm_quantize != nullptr && c.activation == FfnActivation::kRelu2) {
        for (int64_t t = b; t < e; ++t) {
          act_scales_[t] = k.norm_quantize(gateb_.data() + t * n_ff, upb_.data() + t * n_ff, l.ffn_sub_norm, n_ff,
                                           c.rms_eps, qb_.data() + t * wide, &act_sums_[t]);
        }
        return;
      }
      for (int64_t t = b; t < e; ++t) {
        float* g = gateb_.data() + t * n_ff;
        const float* u = upb_.data() + t * n_ff;
        for (int64_t i = 0; i < n_ff; ++i) {
          const float v = g[i];
          const float a = c.activation == FfnActivation::kRelu2 ? (v > 0.0f ? v * v : 0.0f) : v / (1.0f + std::exp(-v));
          g[i] = a * u[i];
        }
      }
      norm_quant(gateb_.data(), n_ff, l.ffn_sub_norm, b, e);
    });
    pool_.ParallelFor(n_embd, [&](int64_t b, int64_t e) { gemm(l.w_down, tmpb_.data(), n_embd, b, e); }, 16);
    for (int64_t t = 0; t < n; ++t) {
      float* x = xb_.data() + t * n_embd;
      const float* d = tmpb_.data() + t * n_embd;
      for (int64_t i = 0; i < n_embd; ++i) x[i] += d[i];
    }
  }

  // LM head, only for the rows that want logits: one dense GEMM, so a batched decode step streams
  // the head from memory once for all its rows, not once per row.
  head_rows_.clear();
  for (int64_t t = 0; t < n; ++t) {
    if (rows[t].logits) head_rows_.push_back(t);
  }
  if (head_rows_.empty()) return;
  const int64_t n_head_rows = static_cast<int64_t>(head_rows_.size());
  pool_.ParallelFor(n_head_rows, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      kernels::RmsNorm(xb_.data() + head_rows_[i] * n_embd, model_.output_norm(), n_embd, c.rms_eps,
                       xnb_.data() + i * wide);
    }
  });
  head_out_.clear();
  for (int64_t i : head_rows_) head_out_.push_back(rows[i].logits);
  if (lm_head_q8_ != nullptr) {
    // The 8-bit head: each row's activations int8-quantised (BitLinear rule), then 8-bit GEMVs
    // over blocks of 64 head rows (160 KB, L2-resident while every row uses them). One row needs
    // no reuse: its block is the thread's whole range, read as four long row streams rather than
    // four 16-row ones per block (same sums: Zen 5, two threads, tokens alternated in one
    // process, 2-3% faster decode).
    for (int64_t i = 0; i < n_head_rows; ++i) {
      act_scales_[i] = k.quantize(xnb_.data() + i * wide, n_embd, qb_.data() + i * wide, &act_sums_[i]);
    }
    pool_.ParallelFor(c.n_vocab, [&](int64_t b, int64_t e) {
      const int64_t block = n_head_rows == 1 ? e - b : 64;
      for (int64_t rb = b; rb < e; rb += block) {
        const int64_t re = std::min(e, rb + block);
        for (int64_t i = 0; i < n_head_rows; ++i) {
          k.q8_gemv(*lm_head_q8_, qb_.data() + i * wide, act_sums_[i], act_scales_[i], head_out_[i], rb, re);
        }
      }
    }, 256);
    return;
  }
  pool_.ParallelFor(c.n_vocab, [&](int64_t b, int64_t e) {
    k.dense_gemm(*lm_head_, xnb_.data(), wide, n_head_rows, head_out_.data(), b, e);
  }, 256);
}

}  // namespace trinity
