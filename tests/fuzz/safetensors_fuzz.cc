// libFuzzer target for the safetensors reader: any input must parse or throw trinity::Error,
// never crash, hang or read past the end. A seed: any small *.safetensors file, e.g. one written
// by tools/reference/make_hf_checkpoint.py --shape micro.
#include <cstdint>

#include "engine/common/error.h"
#include "engine/convert/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = trinity::convert::SafetensorsFile::FromMemory(data, size, "fuzz.safetensors");
    // Touch what the converter would: every tensor's first and last byte, float decoding.
    uint64_t sum = 0;
    for (const auto& t : file->tensors()) {
      if (t.size_bytes > 0) sum += t.data[0] + t.data[t.size_bytes - 1];
      if (t.n_elements() <= 4096) {
        try {
          sum += static_cast<uint64_t>(trinity::convert::ReadFloats(t, file->path()).size());
        } catch (const trinity::Error&) {
        }
      }
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const trinity::Error&) {
  }
  return 0;
}
