#pragma once

#include <cstdint>

namespace trinity {

// Memory read bandwidth, the denominator of a roofline: `threads` threads (0: one per core) read
// a `bytes` buffer (>> any cache), each its own contiguous share, in every access pattern the
// probe knows (1, 2 and 4 sequential streams per thread read side by side), three passes of each
// with the patterns taking turns, after the first touch of the buffer; the best pass wins. Then
// the same over a buffer in 2 MiB pages (where the kernel has transparent huge pages: the copied
// weights' pages), the best of both kept.
// Returns 1e9 bytes per second (0 if its own check of the sums fails).
//
// One stream per thread is not the ceiling: on a Zen 3 core, one thread read 9.5-11 GB/s as one
// stream and up to 15-17 GB/s as two or four (bench/RESULTS.md, tenth session), and the F16 LM
// head, four row streams, read faster than a one-stream probe: a roofline against the one-stream
// rate could pass 100%.
double MeasureReadGbps(int threads, int64_t bytes);

}  // namespace trinity
