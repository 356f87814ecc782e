// Best-of-N single-call rates of the decode GEMVs, for a shared machine (bench/RESULTS.md): Google
// Benchmark's means carry every preemption by other processes, while the fastest of a few hundred
// single calls (each ~0.1-3 ms, mostly shorter than a scheduler slice) shows what the kernel does
// when it has the core. Cold: cycles over 512 MiB of copies; hot: one matrix, L2/L3 resident.
//
//   gemv_best_bench read PATH [reps]                 one-thread read bandwidth, 2 MiB chunks
//   gemv_best_bench tern PATH reps n_in n_out        ternary GEMV, cold      (PATH: 0 ref, 1 avx2, 2 avx512)
//   gemv_best_bench hot PATH reps n_in n_out         ternary GEMV, hot
//   gemv_best_bench f16|f16hot|q8|q8hot PATH reps    LM-head slice 2560 x 8192 (hot: x 256)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>
#include <string>
#include "engine/kernels/cpu.h"
#include "engine/common/fp16.h"
using namespace trinity::kernels;
using Clock = std::chrono::steady_clock;
int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: see the top of bench/gemv_best_bench.cc\n");
    return 2;
  }
  std::string what = argv[1];
  int path = atoi(argv[2]);
  const CpuKernels& k = GetCpuKernels(static_cast<CpuPath>(path));
  const size_t cold = size_t{512} << 20;
  int reps = argc > 3 ? atoi(argv[3]) : 300;
  if (what == "read") {
    std::vector<uint64_t> buf(cold / 8, 1);
    double best = 1e9;
    size_t chunk = (2 << 20) / 8;
    for (int rep = 0; rep < reps; ++rep) {
      size_t off = (rep * chunk) % (buf.size() - chunk);
      auto t0 = Clock::now();
      uint64_t a=0,b=0,c=0,d=0; const uint64_t* p = buf.data()+off;
      for (size_t i = 0; i < chunk; i += 4) a+=p[i],b+=p[i+1],c+=p[i+2],d+=p[i+3];
      double s = std::chrono::duration<double>(Clock::now()-t0).count();
      if (a+b+c+d == 42) printf("x");
      best = std::min(best, s);
    }
    printf("read 2MiB chunks: best %.2f GB/s\n", chunk*8/best/1e9);
    return 0;
  }
  if (what == "tern") {
    int64_t n_in = atoi(argv[4]), n_out = atoi(argv[5]);
    size_t one = n_in * n_out / 4;
    size_t copies = cold / one;
    std::vector<uint8_t> codes(one * copies);
    std::mt19937 rng(1);
    for (size_t j = 0; j < one; ++j) codes[j] = rng() & 0xff & 0xaa;
    for (size_t c = 1; c < copies; ++c) memcpy(codes.data() + c * one, codes.data(), one);
    std::vector<int8_t> q(n_in + 64); for (auto& v : q) v = rng();
    std::vector<float> y(n_out);
    double best = 1e9, sum = 0;
    for (int rep = 0; rep < reps; ++rep) {
      TernaryView v; v.codes = codes.data() + (rep % copies) * one; v.n_in = n_in; v.n_out = n_out; v.scale = 1;
      auto t0 = Clock::now();
      k.ternary_gemv(v, q.data(), 0, 1.0f, y.data(), 0, n_out);
      double s = std::chrono::duration<double>(Clock::now()-t0).count();
      best = std::min(best, s); sum += s;
    }
    printf("tern %ldx%ld path %d: best %.2f GB/s  mean %.2f GB/s\n", n_in, n_out, path, one/best/1e9, one*reps/sum/1e9);
    return 0;
  }
  if (what == "hot") {  // same matrix repeatedly (L2/L3): compute ceiling
    int64_t n_in = atoi(argv[4]), n_out = atoi(argv[5]);
    size_t one = n_in * n_out / 4;
    std::vector<uint8_t> codes(one); std::mt19937 rng(1);
    for (auto& c : codes) c = rng() & 0xaa;
    std::vector<int8_t> q(n_in + 64); for (auto& v : q) v = rng();
    std::vector<float> y(n_out);
    TernaryView v; v.codes = codes.data(); v.n_in = n_in; v.n_out = n_out; v.scale = 1;
    double best = 1e9;
    for (int rep = 0; rep < reps; ++rep) {
      auto t0 = Clock::now();
      k.ternary_gemv(v, q.data(), 0, 1.0f, y.data(), 0, n_out);
      best = std::min(best, std::chrono::duration<double>(Clock::now()-t0).count());
    }
    printf("hot tern %ldx%ld path %d: best %.2f GB/s\n", n_in, n_out, path, one/best/1e9);
    return 0;
  }
  if (what == "f16" || what == "f16hot" || what == "q8" || what == "q8hot") {
    bool hot = what.find("hot") != std::string::npos;
    bool q8 = what[0] == 'q';
    int64_t n_in = 2560, n_rows = hot ? 256 : 8192;
    size_t rb = q8 ? n_in : 2 * n_in;
    size_t one = rb * n_rows;
    size_t copies = hot ? 1 : cold / one;
    std::vector<uint8_t> w(one * copies);
    std::mt19937 rng(1);
    for (size_t j = 0; j < w.size(); j += 2) { uint16_t h = trinity::Fp32ToFp16((rng() % 200) * 0.01f - 1); memcpy(&w[j], &h, 2); }
    if (q8) for (auto& b : w) b = b | 1;
    std::vector<float> x(n_in, 0.3f), y(n_rows), sc(n_rows, 0.01f);
    std::vector<int8_t> q(n_in); for (auto& v : q) v = rng();
    double best = 1e9, sum = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const uint8_t* base = w.data() + (rep % copies) * one;
      auto t0 = Clock::now();
      if (q8) { Q8View v{base, n_in, n_rows, rb, sc.data()}; k.q8_gemv(v, q.data(), 0, 1.0f, y.data(), 0, n_rows); }
      else { DenseView v{trinity::TensorType::kF16, base, n_in, n_rows, rb}; k.dense_gemv(v, x.data(), y.data(), 0, n_rows); }
      double s = std::chrono::duration<double>(Clock::now()-t0).count();
      best = std::min(best, s); sum += s;
    }
    printf("%s path %d: best %.2f GB/s mean %.2f GB/s\n", what.c_str(), path, one/best/1e9, one*reps/sum/1e9);
    return 0;
  }
  return 2;
}
