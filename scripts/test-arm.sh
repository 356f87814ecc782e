#!/usr/bin/env bash
# Cross-builds the engine for 64-bit ARM Linux with Debian's aarch64 toolchain and runs the kernel
# and model tests under qemu-user (scripts/test.sh calls it; on its own it works on a fresh
# Debian 12 machine). Every test runs on the paths an ARM machine can take: NEON + dot product,
# the portable vector path (ARM cores without the dot product: Cortex-A53/A72) and the reference,
# forced with $TRINITY_CPU; detection is checked on an emulated CPU with the dot-product extension
# (qemu's "max") and one without (Cortex-A53). Then the built-in model generates greedily through
# the C API on the three ARM paths and on this machine: the texts must be identical. qemu runs ARM code 10-50x slower than the real thing: its timings mean nothing.
#
#   bash scripts/test-arm.sh          # uses ./build (the native build) for `trinity synth`
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
jobs=$(nproc)
native=build             # the native build: the `trinity` that writes the test model, c_example
build=build-arm64        # the cross build
root=$PWD/build-arm64-root  # Debian's arm64 packages, unpacked (see cmake/aarch64-linux-gnu.cmake)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

# ---- host packages: the cross toolchain and qemu-user ------------------------------------------
bash scripts/install-deps.sh
host_packages=(g++-aarch64-linux-gnu qemu-user)
missing=()
for p in "${host_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- target libraries: Debian's arm64 packages, unpacked (nothing installed) ---------------------
arm_packages=(libfmt-dev:arm64 libfmt9:arm64 libpcre2-dev:arm64 libpcre2-8-0:arm64 libgtest-dev:arm64
              nlohmann-json3-dev)  # the last is architecture-independent (headers)
if [ "$(cat "$root/.packages" 2>/dev/null)" != "${arm_packages[*]}" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  apt-cache show libfmt-dev:arm64 >/dev/null 2>&1 || $SUDO apt-get update -qq
  rm -rf "$root"
  mkdir -p "$root/debs"
  (cd "$root/debs" && apt-get download -qq "${arm_packages[@]}" 2>&1 | grep -v "unsandboxed" || true)
  for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  [ "$(ls "$root"/debs/*.deb | wc -l)" -eq ${#arm_packages[@]} ] || { echo "arm64 package download failed"; exit 1; }
  echo "${arm_packages[*]}" > "$root/.packages"
fi

# ---- native build (test model, reference generation), then the cross build ----------------------
[ -f "$native/build.ninja" ] || cmake -S . -B "$native" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$native" -j"$jobs" --target trinity_cli c_example
mkdir -p "$build"
"$native/trinity" synth --shape tiny --seed 7 -f -o "$build/synth-tiny.gguf" > /dev/null

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DTRINITY_ARM64_ROOT="$root" -DTRINITY_FRONTENDS=OFF -DTRINITY_BENCH=OFF -DTRINITY_CUDA=OFF \
  -DTRINITY_TEST_MODEL="$PWD/$build/synth-tiny.gguf" > /dev/null
arm_targets=(kernels_cpu_test engine_fast_path_test model_test quant_test tokenizer_test c_example)
cmake --build "$build" -j"$jobs" --target "${arm_targets[@]}"
built=$(date +%s)

# ---- tests under qemu ---------------------------------------------------------------------------
export TRINITY_TEST_MODEL=$PWD/$build/synth-tiny.gguf
qemu() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }   # default CPU "max": has FEAT_DotProd
step() { echo; echo "== $* ($(($(date +%s) - start)) s)"; }

step "detection: qemu max CPU -> neon, Cortex-A53 (no dot product) -> generic"
TRINITY_EXPECT_DETECTED=neon qemu "$build/tests/kernels_cpu_test" --gtest_filter='CpuDispatchTest.*' --gtest_brief=1
TRINITY_EXPECT_DETECTED=generic qemu -cpu cortex-a53 "$build/tests/kernels_cpu_test" --gtest_filter='CpuDispatchTest.*' --gtest_brief=1
TRINITY_CPU=ref qemu "$build/tests/kernels_cpu_test" --gtest_filter='CpuDispatchTest.*' --gtest_brief=1

# Every kernel on every path (ref, generic, neon), bit-identical for the integer ones. The reference
# oracle under qemu is the slow part; the shapes are the ones the native run uses.
step "kernels: ref, generic and neon against the reference"
qemu "$build/tests/kernels_cpu_test" --gtest_brief=1

# char is unsigned on AArch64: the byte-level parts (formats, BPE bytes, UTF-8) run there too. The
# tokenizer's timing tests are left out (qemu's speed is not the machine's).
step "quantisation formats and tokenizer"
qemu "$build/tests/quant_test" --gtest_brief=1
qemu "$build/tests/tokenizer_test" --gtest_brief=1 --gtest_filter='-*Throughput*:*LongRunsAreFast*'

# Every path on the built-in model (trained weights, 8k vocabulary: seconds under qemu; ref must be
# bit-identical), then neon and generic on the synthetic model the test's bounds were set on. Its
# 128k-entry F16 LM head is slow under qemu, so its ref case (the reference code again) is left
# out there.
# The 8-bit-head case runs on the synthetic model only: on the built-in model one attention
# rounding flip, amplified by the head's int8 activations, exceeds its bounds on x86 AVX-512 too.
# The f16 KV cache case runs on the built-in model only (its reference pass on the synthetic model
# costs minutes under qemu; the half kernels' exactness is kernels_cpu_test's).
step "forward pass against the reference forward pass: built-in model, every path"
TRINITY_TEST_MODEL=$PWD/models/trinity-tiny.gguf qemu "$build/tests/engine_fast_path_test" --gtest_brief=1 \
  --gtest_filter='-*Q8LmHead*'
step "forward pass against the reference forward pass: synthetic tiny model, neon and generic"
qemu "$build/tests/engine_fast_path_test" --gtest_brief=1 --gtest_filter='-*/ref:*F16KvCache*'

for path in neon generic ref; do
  step "model tests, TRINITY_CPU=$path"
  TRINITY_CPU=$path qemu "$build/tests/model_test" --gtest_brief=1
done

# Greedy generation with the built-in model through the C API: ARM (every path) against the text
# this machine generates.
step "generation: built-in model, greedy, aarch64 vs $(uname -m)"
for prompt in "Once upon a time" "The little dog"; do
  want=$("$native/c_example" models/trinity-tiny.gguf "$prompt" 48 0 2>/dev/null)
  for path in neon generic ref; do
    got=$(TRINITY_CPU=$path qemu "$build/c_example" models/trinity-tiny.gguf "$prompt" 48 0 2>/dev/null)
    if [ "$got" != "$want" ]; then
      printf 'FAIL: %s generation differs\n%s:\n%s\naarch64 %s:\n%s\n' "$path" "$(uname -m)" "$want" "$path" "$got"
      exit 1
    fi
  done
  printf 'identical on %s, aarch64 neon, generic and ref: "%s%s"\n' "$(uname -m)" "$prompt" "$want"
done

end=$(date +%s)
echo
echo "test-arm: all passed (build $((built - start)) s, tests under qemu $((end - built)) s)"
