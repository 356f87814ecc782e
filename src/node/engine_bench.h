// llama-bench-style engine figures (pp512 / tg128) set against this machine's memory roofline.
//
// Decoding one token reads every weight once, so tok/s can never beat
// read_bandwidth / bytes_per_token; roofline_pct says how close the engine gets.
#pragma once

#include <cstdint>

#include <string>

#include "engine/kernels/cpu.h"
#include "engine/model/context.h"
#include "engine/model/model.h"

namespace trinity::node {

struct EngineBenchOptions {
  int64_t n_prompt = 512;   // pp: tokens evaluated in one Eval
  int64_t n_gen = 128;      // tg: tokens evaluated one at a time, after `depth` tokens
  // Tokens already in the context before each pp and tg measurement (llama-bench's -d): one
  // untimed Eval first. Decode at depth d also reads the d cached keys and values per layer.
  int64_t depth = 0;
  int threads = 0;          // 0: one per available core
  int repetitions = 1;      // each figure is the mean over repetitions
  int64_t bandwidth_bytes = int64_t{512} << 20;  // read-benchmark buffer (>> last-level cache)
  Device device = Device::kCpu;
  // GPU only: also decode n_seq sequences together (one row each per step) for n_gen steps after
  // a 32-token prompt each; 0 skips it.
  int n_seq = 0;
  LmHeadFormat lm_head = LmHeadFormat::kFile;
  KvCacheType kv_cache = KvCacheType::kF32;
  // CPU: tg once more with a pass of the bandwidth probe after every token (see
  // EngineBenchResult::roofline_alternated_pct).
  bool alternate = true;
};

struct EngineBenchResult {
  double pp_tok_per_s = 0.0;
  double tg_tok_per_s = 0.0;
  uint64_t bytes_per_token = 0;  // Model::WeightBytesPerToken() + kv_bytes_per_token
  // KV-cache bytes a tg token reads on average (depth + n_gen / 2 positions, every layer).
  uint64_t kv_bytes_per_token = 0;
  double read_gbps = 0.0;        // measured memory read bandwidth, 1e9 bytes/s
  double roofline_pct = 0.0;     // tg_tok_per_s * bytes_per_token / read bandwidth * 100
  // The roofline measured side by side (CPU, `alternate`): n_gen tokens decoded again (per
  // repetition, as tg), each followed by one pass of the probe (its patterns in turn, on the same
  // threads), so decode and probe see the same moments of a machine whose bandwidth moves 2x
  // between minutes. The probe figure is the best pattern's mean over its passes; the percentage
  // sets the two means side by side (0 when not measured). read_gbps above is the best single
  // pass, at another moment.
  double tg_alternated_tok_per_s = 0.0;
  double read_alternated_gbps = 0.0;
  double roofline_alternated_pct = 0.0;
  int threads = 0;
  // The decode GEMVs' row-stream prefetch (kernels/cpu.h): the mode, and how many GEMV calls of
  // the timed tg tokens ran with and without it (every thread's share counts; CPU only).
  kernels::StreamPrefetch prefetch_mode = kernels::StreamPrefetch::kAuto;
  uint64_t prefetch_on_calls = 0;
  uint64_t prefetch_off_calls = 0;
  // On the GPU: read_gbps is the device's copy bandwidth (read + write), tg_tok_per_s includes
  // copying each token's logits to the host as Context::Eval does, tg_greedy_tok_per_s keeps them
  // on the GPU (argmax there), and roofline_pct is taken from the greedy figure.
  Device device = Device::kCpu;
  std::string device_name;
  double tg_greedy_tok_per_s = 0.0;
  int n_seq = 0;
  double tg_batch_tok_per_s = 0.0;  // aggregate over n_seq sequences
  // getrusage ru_maxrss after the run (before the bandwidth buffer is allocated), and the file size.
  uint64_t peak_rss_bytes = 0;
  uint64_t model_file_bytes = 0;
};

EngineBenchResult RunEngineBench(const Model& model, const EngineBenchOptions& options);

struct StreamsBenchResult {
  int streams = 0;
  double tok_per_s = 0.0;        // all streams together
  double mean_batch_rows = 0.0;  // rows per batched step (1 for a lone stream)
  double ms_per_step = 0.0;      // forward-pass time per step (per token for a lone stream)
  double busy_fraction = 1.0;    // of the wall time, the share spent in forward passes
};

// Aggregate decode throughput of `streams` sequences generating n_gen tokens each at the same
// time, one thread per sequence: a lone Context for one stream, contexts attached to one Batcher
// (continuous batching: each step evaluates every stream's next token at once) for more.
StreamsBenchResult RunStreamsBench(const Model& model, int streams, int64_t n_gen, int threads,
                                   LmHeadFormat lm_head = LmHeadFormat::kFile,
                                   KvCacheType kv_cache = KvCacheType::kF32);

}  // namespace trinity::node
