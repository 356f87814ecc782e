// The CUDA backend's entry points in a build without CUDA (TRINITY_CUDA=OFF, or AUTO without
// nvcc): no devices, and a clear error for anyone who asks for one.
#include "engine/common/error.h"
#include "engine/cuda/cuda.h"

namespace trinity::cuda {

bool Built() { return false; }
int DeviceCount() { return 0; }
std::string DeviceDescription(int) { return ""; }
double MeasureCopyGbps(int, int64_t) { return 0.0; }

std::unique_ptr<Forward> CreateForward(const Model&, const ForwardOptions&) {
  Fail("--device cuda: this trinity was built without CUDA (configure with -DTRINITY_CUDA=ON and nvcc installed)");
}

}  // namespace trinity::cuda
