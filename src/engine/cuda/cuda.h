// The CUDA backend's C++ interface: no CUDA header crosses it, so the rest of the engine (and a
// build without CUDA) compiles against this file alone.
//
// A Forward holds the whole model on one GPU (ternary weights in their I2_S bytes, norms, the
// embedding / LM head) and the KV caches of n_seq sequences, and computes the same function as
// Context's CPU fast path (context.cc): int8 per-token activations with round-half-even, ternary
// weights with a per-tensor (or per-128-block) scale, RMSNorm, NEOX RoPE, GQA attention,
// attn_sub_norm, relu^2 gate*up, ffn_sub_norm, the F16/F32 LM head. Integer matmuls are
// bit-identical to the CPU; attention, the norms' sums and the LM head sum floats in another
// order, so logits agree to rounding (tests/engine_cuda_test.cc states the tolerance).
//
// Every batch of work is a list of rows, each (token, sequence, position): a prompt chunk is rows
// of one sequence at consecutive positions, a batched decode step is one row per sequence. The
// same kernels serve both; a one-row-per-sequence decode of n rows is replayed from a CUDA graph.
//
// Built without CUDA (TRINITY_CUDA=OFF or no nvcc), DeviceCount() is 0 and CreateForward throws
// trinity::Error("... built without CUDA ...").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace trinity {
class Model;
}

namespace trinity::cuda {

// True when this build contains the CUDA backend.
bool Built();
// CUDA devices usable by this process: 0 without CUDA, without a driver or without a GPU.
int DeviceCount();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)", or "" when there is none.
std::string DeviceDescription(int device = 0);

// Device-to-device copy bandwidth of `bytes` (best of several copies), counting bytes read plus
// bytes written, in 1e9 bytes/s: the memory roofline a decode step is measured against. 0 when
// there is no device.
double MeasureCopyGbps(int device, int64_t bytes);

struct ForwardOptions {
  int64_t n_ctx = 0;       // positions per sequence (required)
  int n_seq = 1;           // sequences with a KV cache each (batched decode)
  int64_t max_rows = 512;  // rows per kernel batch (prompt chunk); batched decode needs n_seq <= max_rows
  bool graphs = true;      // replay decode steps from CUDA graphs
  int device = 0;
};

class Forward {
 public:
  virtual ~Forward() = default;

  // Runs n tokens of sequence `seq` at positions pos .. pos+n-1 (its cache must hold pos
  // positions; they are appended). Host outputs, each optional: last_logits (n_vocab floats) the
  // last token's logits, all_logits ([n][n_vocab]) every token's, greedy (1 int) the last token's
  // argmax computed on the GPU (lowest id on ties, as Sampler's greedy path).
  virtual void Eval(int seq, const int32_t* tokens, int64_t n, int64_t pos, float* last_logits, float* all_logits,
                    int32_t* greedy) = 0;

  // One decode step for n sequences at once: row i is token tokens[i] of sequence seqs[i] at
  // position pos[i] (distinct sequences). Host outputs, each optional: logits [n][n_vocab],
  // greedy [n] argmax ids.
  virtual void Decode(int64_t n, const int32_t* tokens, const int32_t* seqs, const int64_t* pos, float* logits,
                      int32_t* greedy) = 0;

  // Waits for the GPU (timings), returns the number of CUDA graphs built so far (tests).
  virtual void Synchronize() = 0;
  virtual int graphs_built() const = 0;
  // Bytes of device memory this Forward holds (weights + caches + scratch).
  virtual uint64_t device_bytes() const = 0;
};

// Uploads `model` (which must outlive the Forward) to the GPU. Throws trinity::Error when built
// without CUDA, when there is no device, or when the model's shape is outside what the kernels
// handle (head_dim a multiple of 32 up to 256, n_embd and n_ff multiples of 128).
std::unique_ptr<Forward> CreateForward(const Model& model, const ForwardOptions& options);

}  // namespace trinity::cuda
