#!/usr/bin/env bash
# Run HERE (the development machine) before the GPU call: builds the CUDA-enabled binaries the
# device script needs and packs them, with the shared libraries they use that are not glibc's,
# into .gpu/ (in .gitignore; the device call must carry it).
#
#   bash bench/gpu/prepare.sh [BUILD_DIR]          # default: build (configured with the CUDA backend)
#   then the device tool's run: command "bash bench/gpu/run.sh", carry [".gpu"], timeout_s 540
#
# Why prebuilt: the GPU machine has nvcc, CMake and ninja but (as far as anyone has seen) not the
# Debian packages this project builds against (fmt, CLI11, PCRE2, cpp-httplib, GoogleTest), and
# it cannot download them. run.sh falls back to building there when .gpu/ is missing or its
# binaries do not start.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
if [ ! -f "$BUILD/CMakeCache.txt" ] || ! grep -q '^TRINITY_CUDA:STRING=\(AUTO\|ON\)' "$BUILD/CMakeCache.txt"; then
  cmake -S . -B "$BUILD" -G Ninja -DTRINITY_CUDA=ON
fi
grep -q 'trinity_cuda.dir/src/engine/cuda/kernels.cu' "$BUILD/build.ninja" || {
  echo "prepare.sh: $BUILD does not build the CUDA backend (nvcc not found?)" >&2; exit 1; }
cmake --build "$BUILD" -j"${JOBS:-2}" --target trinity_cli cuda_kernels_test engine_cuda_test
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
cp "$BUILD/trinity" "$BUILD/tests/cuda_kernels_test" "$BUILD/tests/engine_cuda_test" .gpu/bin/
strip --strip-unneeded .gpu/bin/* 2>/dev/null || true
# Every shared library the binaries load, except glibc's own and libstdc++/libgcc (newer there).
for b in .gpu/bin/*; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libresolv.so*|libnss_*|libutil.so*|libanl.so*|libmvec.so*|libstdc++.so*|libgcc_s.so*|libcuda.so*) ;;
    *) cp -L "$lib" .gpu/lib/ ;;
  esac
done
git rev-parse HEAD > .gpu/commit
du -sh .gpu; ls -la .gpu/bin .gpu/lib
size=$(du -sm .gpu | cut -f1)
[ "$size" -lt 56 ] || { echo "prepare.sh: .gpu is ${size} MiB; the device call carries 64 MiB with the tree" >&2; exit 1; }
