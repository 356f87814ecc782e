// Runtime dispatch: detection once (cpuid on x86, hardware capabilities on AArch64), the
// reference table, and the $TRINITY_CPU and $TRINITY_PREFETCH overrides.
#include <atomic>
#include <cstdlib>

#include "engine/common/error.h"
#include "engine/kernels/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TRINITY_X86 1
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace trinity::kernels {

namespace {

#ifdef TRINITY_X86
uint64_t Xgetbv() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuPath Detect() {
#ifdef TRINITY_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return CpuPath::kGeneric;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return CpuPath::kGeneric;
  const uint64_t xcr0 = Xgetbv();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;     // SSE + AVX state saved by the OS
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return CpuPath::kGeneric;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31), vnni = c & (1u << 11);
  if (ymm_state && zmm_state && avx2 && fma && f16c && avx512f && avx512bw && avx512vl && vnni) return CpuPath::kAvx512;
  if (ymm_state && avx2 && fma && f16c) return CpuPath::kAvx2;
#elif defined(__aarch64__) && defined(__APPLE__)
  return CpuPath::kNeon;  // every arm64 Mac (M1 = ARMv8.5-A on) has the dot-product instructions
#elif defined(__aarch64__) && defined(__linux__)
  constexpr unsigned long kHwcapAsimdDp = 1ul << 20;  // HWCAP_ASIMDDP (asm/hwcap.h): sdot/udot
  if (getauxval(AT_HWCAP) & kHwcapAsimdDp) return CpuPath::kNeon;  // e.g. Cortex-A53/A72: no
#endif
  return CpuPath::kGeneric;
}

float RefQuantize(const float* x, int64_t n, int8_t* q, int32_t* q_sum) {
  const float a = QuantizeActivations(x, n, q);
  int32_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += q[i];
  *q_sum = s;
  return a;
}

void RefGemv(const TernaryView& w, const int8_t* q, int32_t, float act_scale, float* y, int64_t row_begin,
             int64_t row_end) {
  TernaryMatVec(w, q, act_scale, y, row_begin, row_end);
}

void RefGemm(const TernaryView& w, const int8_t* q, int64_t q_stride, const int32_t*, const float* act_scales,
             int64_t n_tok, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  for (int64_t t = 0; t < n_tok; ++t) TernaryMatVec(w, q + t * q_stride, act_scales[t], y + t * y_stride, row_begin, row_end);
}

void RefQ8Gemv(const Q8View& w, const int8_t* q, int32_t, float act_scale, float* y, int64_t row_begin,
               int64_t row_end) {
  Q8MatVec(w, q, act_scale, y, row_begin, row_end);
}

}  // namespace

const char* CpuPathName(CpuPath path) {
  switch (path) {
    case CpuPath::kRef: return "ref";
    case CpuPath::kAvx2: return "avx2";
    case CpuPath::kAvx512: return "avx512";
    case CpuPath::kNeon: return "neon";
    case CpuPath::kGeneric: return "generic";
  }
  return "?";
}

CpuPath ParseCpuPath(const std::string& name) {
  if (name == "ref") return CpuPath::kRef;
  if (name == "avx2") return CpuPath::kAvx2;
  if (name == "avx512") return CpuPath::kAvx512;
  if (name == "neon") return CpuPath::kNeon;
  if (name == "generic") return CpuPath::kGeneric;
  Fail("unknown CPU path \"{}\": expected ref, generic, avx2, avx512 or neon", name);
}

CpuPath DetectCpuPath() {
  static const CpuPath detected = Detect();
  return detected;
}

// The x86 paths nest (an AVX-512 machine runs AVX2); the reference and the portable path run
// everywhere.
bool CpuPathSupported(CpuPath path) {
  const CpuPath best = DetectCpuPath();
  return path == CpuPath::kRef || path == CpuPath::kGeneric || path == best ||
         (path == CpuPath::kAvx2 && best == CpuPath::kAvx512);
}

CpuPath ActiveCpuPath() {
  static const CpuPath active = [] {
    CpuPath best = DetectCpuPath();
    if (const char* env = std::getenv("TRINITY_CPU"); env != nullptr && *env != '\0') {
      const CpuPath forced = ParseCpuPath(env);
      if (CpuPathSupported(forced)) best = forced;
    }
    return best;
  }();
  return active;
}

const char* StreamPrefetchName(StreamPrefetch mode) {
  switch (mode) {
    case StreamPrefetch::kAuto: return "auto";
    case StreamPrefetch::kOn: return "on";
    case StreamPrefetch::kOff: return "off";
  }
  return "?";
}

StreamPrefetch ParseStreamPrefetch(const std::string& name) {
  if (name == "auto") return StreamPrefetch::kAuto;
  if (name == "on") return StreamPrefetch::kOn;
  if (name == "off") return StreamPrefetch::kOff;
  Fail("unknown prefetch mode \"{}\": expected auto, on or off", name);
}

namespace {

std::atomic<StreamPrefetch>& PrefetchMode() {
  static std::atomic<StreamPrefetch> mode = [] {
    const char* env = std::getenv("TRINITY_PREFETCH");
    return env != nullptr && *env != '\0' ? ParseStreamPrefetch(env) : StreamPrefetch::kAuto;
  }();
  return mode;
}

// The call counts in one cache line per thread (up to kCountSlots threads; more share slots), so
// that decode's threads do not pass one line back and forth on every GEMV call.
constexpr int kCountSlots = 16;
struct alignas(64) CallCountSlot {
  std::atomic<uint64_t> calls[2] = {0, 0};  // [0]: without, [1]: with
};
CallCountSlot call_counts[kCountSlots];
std::atomic<int> next_count_slot{0};

}  // namespace

StreamPrefetch GetStreamPrefetch() { return PrefetchMode().load(std::memory_order_relaxed); }

void SetStreamPrefetch(StreamPrefetch mode) { PrefetchMode().store(mode, std::memory_order_relaxed); }

StreamPrefetchCalls StreamPrefetchCallCounts() {
  StreamPrefetchCalls total;
  for (const CallCountSlot& slot : call_counts) {
    total.on += slot.calls[1].load(std::memory_order_relaxed);
    total.off += slot.calls[0].load(std::memory_order_relaxed);
  }
  return total;
}

void CountStreamPrefetchCall(bool prefetched) {
  thread_local CallCountSlot& slot = call_counts[next_count_slot.fetch_add(1, std::memory_order_relaxed) % kCountSlots];
  slot.calls[prefetched ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
}

const CpuKernels& RefKernels() {
  static const CpuKernels table = [] {
    CpuKernels k;
    k.path = CpuPath::kRef;
    k.quantize = RefQuantize;
    k.ternary_gemv = RefGemv;
    k.ternary_gemm = RefGemm;
    k.dense_gemv = DenseMatVec;
    k.dense_gemm = [](const DenseView& w, const float* x, int64_t x_stride, int64_t n_x, float* const* ys,
                      int64_t row_begin, int64_t row_end) {
      for (int64_t i = 0; i < n_x; ++i) DenseMatVec(w, x + i * x_stride, ys[i], row_begin, row_end);
    };
    k.q8_gemv = RefQ8Gemv;
    k.attention = Attention;
    k.attention_f16 = Attention;
    return k;
  }();
  return table;
}

const CpuKernels& GetCpuKernels(CpuPath path) {
  if (!CpuPathSupported(path)) Fail("this CPU cannot run the {} kernels (best: {})", CpuPathName(path), CpuPathName(DetectCpuPath()));
  switch (path) {
#ifdef TRINITY_X86
    case CpuPath::kAvx512: return Avx512Kernels();
    case CpuPath::kAvx2: return Avx2Kernels();
#endif
#ifdef __aarch64__
    case CpuPath::kNeon: return NeonKernels();
#endif
    case CpuPath::kGeneric: return GenericKernels();
    default: break;
  }
  return RefKernels();
}

}  // namespace trinity::kernels
