#!/usr/bin/env bash
# The one prepared GPU check (issue 6), sized for about 5 minutes on an H100 or H200:
#   1. binaries: .gpu/ from bench/gpu/prepare.sh (carried), else a build here (16 cores, sm_90)
#   2. cuda_kernels_test: every kernel against its CPU oracle (exact for the integer paths)
#   3. engine_cuda_test on the tiny synthetic model: logits vs the CPU fast path, greedy 64
#      tokens, batched decode, Reset/Truncate
#   4. the 2B-4T shape (`trinity synth --shape 2b-4t`): the same engine test (CPU reference on
#      this machine's cores), then `trinity bench --engine --device cuda` pp512 / tg128 and
#      batched decode of 64 sequences
#      and the same with TRINITY_CUDA_PROFILE=1: GPU time per stage (logs.txt)
#      and Nsight Compute's time of every kernel of a short run (ncu, when it is there)
#   5. compute-sanitizer memcheck over the kernel tests (when there is time)
#   6. a table of the figures against the issue's targets
# Logs go to $OUT in four files (the device tool returns at most 8): summary.txt, tests.txt (every
# test log), logs.txt (machine, synth, build, memcheck), bench.json. The table is printed last.
#
# Usage, from the repository root on the device machine:  bash bench/gpu/run.sh
# Environment: SKIP_2B=1 skips step 4's correctness part; TRINITY_CUDA_NO_MMA=1 runs without the
# tensor-core GEMM (dp4a GEMV only), to tell a GEMM bug from anything else.
set -uo pipefail
START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/trinity-gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
LOGS="$OUT/logs.txt"
TESTS="$OUT/tests.txt"
TMP=$(mktemp -d)
: >"$SUMMARY"; : >"$LOGS"; : >"$TESTS"
note() { echo "== $*" | tee -a "$SUMMARY"; }
elapsed() { echo $(($(date +%s) - START)); }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$TMP/gpu.txt"
cat "$TMP/gpu.txt" >>"$LOGS"
note "commit: $(cat .gpu/commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)"

# ---- 1. binaries ---------------------------------------------------------------------------------
BIN=""
if [ -x .gpu/bin/trinity ]; then
  export LD_LIBRARY_PATH="$ROOT/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if .gpu/bin/trinity --help >/dev/null 2>"$TMP/prebuilt.txt"; then
    BIN=.gpu/bin
    note "binaries: prebuilt (.gpu/)"
  else
    note "binaries: prebuilt ones do not start here: $(head -c 300 "$TMP/prebuilt.txt")"
  fi
fi
if [ -z "$BIN" ]; then
  note "binaries: building here (-DTRINITY_CUDA=ON, sm_90)"
  if cmake -S . -B build-gpu -G Ninja -DTRINITY_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DTRINITY_BENCH=OFF \
      >"$TMP/configure.txt" 2>&1 &&
    cmake --build build-gpu -j16 --target trinity_cli cuda_kernels_test engine_cuda_test >"$TMP/build.txt" 2>&1; then
    mkdir -p build-gpu/bin && cp build-gpu/trinity build-gpu/tests/cuda_kernels_test build-gpu/tests/engine_cuda_test build-gpu/bin/
    BIN=build-gpu/bin
    note "build: ok ($(elapsed) s)"
  else
    note "build failed (logs.txt)"; tail -20 "$TMP/configure.txt" "$TMP/build.txt" 2>/dev/null
    cat "$TMP/configure.txt" "$TMP/build.txt" >>"$LOGS" 2>/dev/null
    exit 1
  fi
fi

# gtest_result NAME LOG: "passed / failed / skipped" counts from a GoogleTest log (the per-test
# lines, which end in "(N ms)"), and the log appended to tests.txt.
gtest_result() {
  local p f s
  p=$(grep -cE '^\[       OK \] .* \([0-9]+ ms\)$' "$2"); f=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$2")
  s=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$2")
  note "$1: $p passed, $f failed, $s skipped ($(elapsed) s)"
  { echo "======== $1"; cat "$2"; } >>"$TESTS"
}

# ---- 2. kernels against the CPU oracles ----------------------------------------------------------
timeout 150 "$BIN/cuda_kernels_test" >"$TMP/k.txt" 2>&1
gtest_result cuda_kernels_test "$TMP/k.txt"
grep -E '^(device:|.*Failure|.*FAILED|.*at [0-9]+:)' "$TMP/k.txt" | head -20

# ---- 3. the forward pass on the tiny synthetic model ----------------------------------------------
"$BIN/trinity" synth --shape tiny --seed 7 -f -o /tmp/synth-tiny.gguf >>"$LOGS" 2>&1
TRINITY_TEST_MODEL=/tmp/synth-tiny.gguf timeout 150 "$BIN/engine_cuda_test" >"$TMP/e1.txt" 2>&1
gtest_result "engine_cuda_test (tiny)" "$TMP/e1.txt"
grep -E 'worst|greedy steps|Failure|FAILED' "$TMP/e1.txt" | head -24

# ---- 4. 2B-4T shape: correctness, then the benchmark ----------------------------------------------
SHAPE=${SHAPE:-2b-4t}  # SHAPE=tiny: a dry run of the script's flow on a machine without a GPU
MODEL=/tmp/synth-$SHAPE.gguf
timeout 150 "$BIN/trinity" synth --shape "$SHAPE" --seed 1 -f -o "$MODEL" >>"$LOGS" 2>&1
note "synth $SHAPE: rc $? ($(elapsed) s)"
if [ -z "${SKIP_2B:-}" ] && [ "$(elapsed)" -lt 200 ]; then
  TRINITY_TEST_MODEL=$MODEL timeout 200 "$BIN/engine_cuda_test" >"$TMP/e2.txt" 2>&1
  gtest_result "engine_cuda_test ($SHAPE shape)" "$TMP/e2.txt"
  grep -E 'worst|greedy steps|Failure|FAILED' "$TMP/e2.txt" | head -12
fi
timeout 150 "$BIN/trinity" bench --engine -m "$MODEL" --device cuda -p 512 -n 128 --batch 64 --bw-mib 2048 --json \
  >"$OUT/bench.json" 2>"$TMP/bench_err.txt"
note "bench: rc $? ($(elapsed) s)"
cat "$OUT/bench.json"; tail -5 "$TMP/bench_err.txt"; cat "$TMP/bench_err.txt" >>"$LOGS"

# AB_ENV="VAR=value ...": the same benchmark again under that environment, side by side (for
# example AB_ENV=TRINITY_CUDA_GRAPHS=0 to see what the decode graph gives).
if [ -n "${AB_ENV:-}" ]; then
  env $AB_ENV timeout 150 "$BIN/trinity" bench --engine -m "$MODEL" --device cuda -p 512 -n 128 --batch 64 --bw-mib 2048 \
    --json >"$OUT/bench_ab.json" 2>>"$LOGS"
  note "bench with $AB_ENV: rc $? ($(elapsed) s)"
  python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); [print(f"{k:<22} {a[k]:>12.2f} {b[k]:>12.2f}  (default vs AB_ENV)") for k in ("pp_ms","tg_greedy_tok_per_s","tg_batch_tok_per_s")]' \
    "$OUT/bench.json" "$OUT/bench_ab.json" | tee -a "$SUMMARY"
fi

# Where the time goes: every stage timed with events (graphs off), tables on stderr.
if [ "$(elapsed)" -lt 280 ]; then
  TRINITY_CUDA_PROFILE=1 timeout 90 "$BIN/trinity" bench --engine -m "$MODEL" --device cuda -p 512 -n 32 --batch 64 \
    --bw-mib 64 --json >/dev/null 2>"$TMP/profile.txt"
  note "profile: rc $? ($(elapsed) s)"
  { echo "======== TRINITY_CUDA_PROFILE=1"; cat "$TMP/profile.txt"; } >>"$LOGS"
  grep -E '^(CUDA profile|stage|matmul|attention|lm_head|norm|rope|output|embed|argmax)' "$TMP/profile.txt" | head -60
fi

# Kernel by kernel (Nsight Compute, each kernel timed alone, cold caches): a 64-token prompt and 2
# decode steps (twice), graphs off so that every launch is its own kernel. Per kernel and grid:
# calls, mean and total us.
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ] && [ "$(elapsed)" -lt 330 ]; then
  TRINITY_CUDA_GRAPHS=0 timeout 120 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    "$BIN/trinity" bench --engine -m "$MODEL" --device cuda -p 64 -n 2 --no-warmup --bw-mib 64 --json \
    >"$TMP/ncu.csv" 2>"$TMP/ncu_err.txt"
  note "ncu: rc $? ($(elapsed) s)"
  { echo "======== ncu"; cat "$TMP/ncu_err.txt"; cat "$TMP/ncu.csv"; } >>"$LOGS"
  python3 - "$TMP/ncu.csv" <<'PY' | tee -a "$SUMMARY"
import csv, re, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
if not rows: print("ncu: no rows"); sys.exit(0)
h = rows[0]; ki = h.index("Kernel Name"); gi = h.index("Grid Size"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[1:]:
    name = re.sub(r"\(.*", "", r[ki]); name = re.sub(r"^.*::", "", name.split("<")[0]) + ("<" + r[ki].split("<", 1)[1].split(">")[0] + ">" if "<" in r[ki] else "")
    v = float(r[vi].replace(",", "")); v = v / 1e3 if r[ui] in ("ns", "nsecond") else v * 1e3 if r[ui] in ("ms", "msecond") else v
    agg[(name[:60], r[gi])][0] += 1; agg[(name[:60], r[gi])][1] += v
print(f"{'kernel (ncu, alone)':<62}{'grid':>16}{'calls':>8}{'mean us':>10}{'total us':>11}")
for (name, grid), (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:40]:
    print(f"{name:<62}{grid:>16}{n:>8}{us / n:>10.2f}{us:>11.1f}")
PY
fi

# ---- 5. memory checker over the kernels (Firecracker machines run it) -----------------------------
if command -v compute-sanitizer >/dev/null && [ "$(elapsed)" -lt 300 ]; then
  timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/cuda_kernels_test" \
    --gtest_filter='-CudaKernels.AttentionMatchesReference' >"$TMP/memcheck.txt" 2>&1
  note "memcheck (kernels but the split attention): rc $? ($(elapsed) s)"
  grep -E 'ERROR SUMMARY|Invalid' "$TMP/memcheck.txt" | head -5
  cat "$TMP/memcheck.txt" >>"$LOGS"
fi

# ---- 6. the table ----------------------------------------------------------------------------------
python3 - "$OUT/bench.json" "$TMP/gpu.txt" <<'PY' | tee -a "$SUMMARY"
import json, sys
try:
    b = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"no benchmark JSON ({e})"); sys.exit(0)
gpu = open(sys.argv[2]).read()
h200 = "H200" in gpu
tg_target = 2000 if h200 else 1500
rows = [
    ("pp512 (ms)", f"{b.get('pp_ms', 0):.2f}", "<= 15"),
    ("tg128 via Context::Eval (tok/s, logits copied)", f"{b['tg_tok_per_s']:.1f}", ""),
    ("tg128 greedy on GPU (tok/s)", f"{b['tg_greedy_tok_per_s']:.1f}", f">= {tg_target} ({'H200' if h200 else 'H100'})"),
    (f"tg128 x{b['n_seq']} sequences (aggregate tok/s)", f"{b['tg_batch_tok_per_s']:.1f}", ">= 30000"),
    ("device copy bandwidth (GB/s, r+w)", f"{b['read_gbps']:.0f}", ""),
    ("weights read per token (MB)", f"{b['bytes_per_token'] / 1e6:.0f}", ""),
    ("greedy tg vs roofline (%)", f"{b['roofline_pct']:.1f}", ""),
]
print(f"\n{b.get('device_name', '')}")
w = max(len(r[0]) for r in rows)
print(f"{'measure':<{w}}  {'value':>10}  target")
for name, value, target in rows:
    print(f"{name:<{w}}  {value:>10}  {target}")
PY
note "total $(elapsed) s"
