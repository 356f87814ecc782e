// An inference context: one sequence's KV cache plus the scratch buffers of the forward pass.
// A context attached to a Batcher (engine/model/batcher.h) holds only its KV cache: its Eval calls
// are evaluated in the batcher's shared steps together with other sequences' tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/common/lazy_buffer.h"
#include "engine/common/thread_pool.h"
#include "engine/cuda/cuda.h"
#include "engine/kernels/cpu.h"
#include "engine/model/model.h"

namespace trinity {

class Batcher;
// The LM head's weights: the file's (F16 for 2B-4T; exact to the reference up to float summation
// order) or an 8-bit copy (Model::LmHeadQ8: half the bytes, int8 activations, integer dot
// products; changes the logits slightly, so off by default).
enum class LmHeadFormat { kFile = 0, kQ8 = 1 };
const char* LmHeadFormatName(LmHeadFormat format);
// "file" (also "f16", "default") | "q8" -> format; throws trinity::Error otherwise.
LmHeadFormat ParseLmHeadFormat(const std::string& name);

// The KV cache's element type. kF32 (default): keys and values as computed, so the fast path
// matches the reference to float rounding. kF16: rounded to IEEE half (round to nearest even)
// as they are stored; half the memory per cached position and half the bytes a decode step reads
// at depth (the attention kernels convert back exactly). Changes the logits slightly; CPU only.
enum class KvCacheType { kF32 = 0, kF16 = 1 };
const char* KvCacheTypeName(KvCacheType type);  // "f32" | "f16"
// "f32" | "f16" -> type; throws trinity::Error otherwise.
KvCacheType ParseKvCacheType(const std::string& name);

// Where the forward pass runs. kAuto: the GPU when this build has CUDA and a device is present
// (and the reference pass is not asked for), else the CPU.
enum class Device { kCpu, kCuda, kAuto };
const char* DeviceName(Device device);  // "cpu" | "cuda" | "auto"
Device ParseDevice(const std::string& name);  // throws trinity::Error for anything else
Device ResolveDevice(Device device);          // kAuto -> kCpu or kCuda

struct ContextOptions {
  // A constructor rather than an aggregate, so ContextOptions{n_ctx, n_threads} stays warning-free
  // (-Wmissing-field-initializers) as fields are added.
  ContextOptions(int64_t n_ctx_ = 0, int n_threads_ = 0, bool reference_ = false)
      : n_ctx(n_ctx_), n_threads(n_threads_), reference(reference_) {}

  int64_t n_ctx = 0;    // 0: the model's training context, at most 4096
  int n_threads = 0;    // 0: one per available core
  // The plain reference forward pass (one token at a time, scalar kernels of kernels/ref.h): the
  // oracle. Otherwise the fast path: kernels::ActiveCpuPath() (best the CPU runs, lowered by
  // $TRINITY_CPU), prompts evaluated in batches of up to kMaxBatch tokens.
  bool reference = false;
  // Forces a kernel path for the fast path (tests); unset: kernels::ActiveCpuPath().
  std::optional<kernels::CpuPath> cpu_path;
  // Continuous batching: Eval goes through this batcher's shared forward steps (its threads and
  // kernel path; n_threads and cpu_path here are ignored). Must outlive the context. Fast path only.
  Batcher* batcher = nullptr;
  // kCuda: the whole model on the GPU (engine/cuda/cuda.h), same Eval contract; throws
  // trinity::Error when built without CUDA or with no device. The library default is the CPU
  // (deterministic for tests and embedders); the CLI's --device defaults to auto.
  Device device = Device::kCpu;
  // The LM head's weights (both the reference and the fast path honour it).
  LmHeadFormat lm_head = LmHeadFormat::kFile;
  // The KV cache's element type (both passes honour it; a batched context keeps its own).
  KvCacheType kv_cache = KvCacheType::kF32;
};

class Context {
 public:
  Context(const Model& model, ContextOptions options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Runs `tokens` at positions n_past() .. n_past()+n-1, appending them to the KV cache, and
  // returns the logits of the last one (n_vocab floats, valid until the next call). When
  // `all_logits` is given it receives the logits of every token, [n][n_vocab].
  // Throws trinity::Error for an out-of-range token or when the context would overflow.
  std::span<const float> Eval(std::span<const int32_t> tokens, std::vector<float>* all_logits = nullptr);

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  void Reset() { n_past_ = 0; }
  // Forgets every position from n on (n <= n_past()).
  void Truncate(int64_t n);
  // Batched contexts: tells the batcher this sequence has no further tokens coming soon (its
  // request ended), so the next step does not wait for it. Does nothing without a batcher.
  void Idle();
  const Model& model() const { return model_; }
  ThreadPool& pool() { return pool_; }
  // The kernel path in use ("ref" on the reference pass).
  kernels::CpuPath cpu_path() const { return kernels_->path; }
  // Bytes of KV cache one cached position holds (keys and values of every layer); decoding at
  // position p reads p of them.
  uint64_t KvBytesPerPosition() const;
  KvCacheType kv_cache() const { return kv_cache_; }
  // Where Eval runs (never kAuto).
  Device device() const { return gpu_ ? Device::kCuda : Device::kCpu; }
  // The GPU forward pass when device() is kCuda (batched decode, greedy on the GPU), else null.
  cuda::Forward* gpu() { return gpu_.get(); }

  // Prompt tokens evaluated together by the fast path: each weight matrix is streamed once per
  // batch instead of once per token.
  static constexpr int64_t kMaxBatch = 64;

 private:
  friend class Batcher;
  // One row of a fast-path forward pass: one token of sequence `seq` at position `pos`; the row's
  // logits go to `logits` (n_vocab floats) when it is non-null.
  struct Row {
    Context* seq;
    int32_t token;
    int64_t pos;
    float* logits;
  };
  struct ComputeOnly {};
  // The batcher's compute context: scratch and threads, no KV cache of its own; attention rows of
  // up to n_ctx positions.
  Context(const Model& model, ContextOptions options, ComputeOnly);

  void Allocate(bool kv_cache, bool compute);
  // The LM head the CPU reads (the 8-bit one, or Model::StreamedLmHead) and the token
  // embeddings (that head's copy when tied): lm_head_q8_ or lm_head_, and token_embd_.
  void ChooseHeads(LmHeadFormat lm_head);
  void EvalToken(int32_t token, int64_t pos);  // reference path
  // Fast path: n <= kMaxBatch tokens at positions pos .. pos+n-1. Writes every token's logits to
  // all_logits + t*n_vocab when all_logits is non-null (and the last one's to logits_); else, when
  // last_logits, the last token's to logits_ (a prompt's last batch: earlier batches of a long
  // prompt skip the LM head, 656 MB read per batch on the 2B-4T shape).
  void EvalBatch(const int32_t* tokens, int64_t n, int64_t pos, float* all_logits, bool last_logits);
  // Fast path: n <= kMaxBatch rows, from any contexts of this model whose n_ctx <= this one's.
  // Rows of one sequence must be in position order and continue that sequence's cache; each
  // row's K/V are written to its sequence's cache before any row attends.
  void EvalRows(const Row* rows, int64_t n);
  // Maps this sequence's KV-cache pages (every layer, K and V) up to position `end` (exclusive)
  // ahead of use, kKvPrefaultPositions at a time, so decode steps do not page-fault them one by one.
  void PrefaultKv(int64_t end);
  static constexpr int64_t kKvPrefaultPositions = 128;
  // From this many positions on, the cache asks for 2 MiB pages (LazyBuffer::AdviseHugePages):
  // decode at depth reads the whole cache every token, and from 4 KiB pages one thread read it
  // 2.5x slower (2B-4T, depth 3072, Zen 5; bench/RESULTS.md, thirteenth session). Not from the
  // start: a huge page per layer for K and V holds 819 positions of 2B-4T, so a short request
  // would make 120 MB resident where it uses a few hundred KB; past 1024 positions the rounding
  // costs at most that on top of >= 157 MB in use.
  static constexpr int64_t kKvHugePagesFrom = 1024;
  // Position `pos` of layer il's caches = k, v (n_embd_kv floats each; rounded on an f16 cache).
  void StoreKv(int64_t il, int64_t pos, const float* k, const float* v);
  // Layer il's caches, (n_ctx, n_embd_kv) each, of the cache type in use.
  const float* KCache(int64_t il) const { return k_cache_.data() + il * n_ctx_ * config_.n_embd_kv(); }
  const float* VCache(int64_t il) const { return v_cache_.data() + il * n_ctx_ * config_.n_embd_kv(); }
  const uint16_t* KHalf(int64_t il) const { return k_half_.data() + il * n_ctx_ * config_.n_embd_kv(); }
  const uint16_t* VHalf(int64_t il) const { return v_half_.data() + il * n_ctx_ * config_.n_embd_kv(); }
  void Linear(const TernaryWeight& w, const float* x, float* y);  // y = W x with int8-quantised x
  // logits (n_vocab) = LM head . xn (n_embd, already output-normed), rows split over the threads.
  void LmHead(const float* xn, float* logits);

  const Model& model_;
  ModelConfig config_;
  int64_t n_ctx_;
  int64_t n_past_ = 0;
  ThreadPool pool_;
  Batcher* batcher_ = nullptr;

  // KV cache: (n_layer, n_ctx, n_embd_kv) each, in k_cache_/v_cache_ (kF32) or as IEEE half bits
  // in k_half_/v_half_ (kF16; the other pair stays empty). Pages are mapped as positions are
  // first written, so memory grows with the positions a sequence reaches, not with n_ctx.
  KvCacheType kv_cache_ = KvCacheType::kF32;
  LazyBuffer<float> k_cache_, v_cache_;
  LazyBuffer<uint16_t> k_half_, v_half_;
  int64_t kv_prefaulted_ = 0;  // positions [0, kv_prefaulted_) are mapped (PrefaultKv)
  bool kv_huge_pages_ = false;  // AdviseHugePages done (kKvHugePagesFrom reached)
  // Scratch: x (n_embd) residual stream, xn (max(n_embd, n_ff)) normed input, q (n_embd),
  // att (n_embd), gate/up (n_ff), act_q (max(n_embd, n_ff)) int8, scores (n_threads * n_ctx);
  // the new key and value (n_embd_kv) are in kb_/vb_ below.
  std::vector<float> x_, xn_, q_, att_, tmp_, gate_, up_, scores_, logits_;
  std::vector<int8_t> act_q_;

  // Fast path. Batched scratch, kMaxBatch rows each: xb_ (n_embd) residual, xnb_ (wide) normed
  // input, qb_ (wide) int8 activations with act_scales_/act_sums_, qh_/attb_/tmpb_ (n_embd),
  // gateb_/upb_ (n_ff); kb_/vb_ (n_embd_kv) new keys and values before they go to the caches;
  // rope_cs_ (kMaxBatch, n_rot/2, {cos, sin}); rope_freq_ (n_rot/2); rows_/head_rows_ the rows
  // of a step and those of them that want logits, head_out_ where those logits go.
  const kernels::CpuKernels* kernels_;
  bool reference_ = false;
  std::vector<float> xb_, qh_, attb_, tmpb_, gateb_, upb_, kb_, vb_, rope_cs_, act_scales_;
  // Decode attention's partial results per work item (attention_decode): outputs, then m and l.
  std::vector<float> part_o_, part_ml_;
  LazyBuffer<float> xnb_;  // page-aligned: the batched LM head loads its rows as whole cache lines
  std::vector<Row> rows_;
  std::vector<int64_t> head_rows_;
  std::vector<float*> head_out_;
  const kernels::Q8View* lm_head_q8_ = nullptr;  // set when options.lm_head == kQ8
  const kernels::DenseView* lm_head_ = nullptr;  // else: Model::StreamedLmHead()
  // Token embeddings: with tied embeddings and the streamed head, that copy (lookups from the
  // released mapping would fault back 64 KB around each row: ~200 MB after 3072 tokens).
  const kernels::DenseView* token_embd_ = nullptr;
  // Page-aligned (mmap), so every activation row (wide bytes, a multiple of 64 for the shapes we
  // run) starts on a cache line: the GEMM kernels' 64-byte activation loads split across two
  // lines otherwise (8-token GEMM 0.67 -> 0.52 ms in kernels_bench).
  LazyBuffer<int8_t> qb_;
  std::vector<int32_t> act_sums_;
  std::vector<double> rope_freq_;

  // GPU path: Eval forwards to it (sequence 0); the CPU buffers above stay empty.
  std::unique_ptr<cuda::Forward> gpu_;
};

}  // namespace trinity
