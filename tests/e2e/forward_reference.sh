#!/usr/bin/env bash
# The engine's forward pass against the independent float64 Python reference
# (tools/reference/bitnet_ref.py), on synthetic tiny models in every weight format Trinity reads:
# teacher-forced logits within tolerance, and greedy tokens identical for 32 steps.
#
# Tolerances and the comparison itself: tests/e2e/lib/compare.sh.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
REF=tools/reference
rm -rf "$WORK"; mkdir -p "$WORK"
TOKENS=128000,791,4062,14198,39935,35308,927,279,16053,5679,13,1102,574,279,1888,315,3115,11,433,574,279,12047,315,3115,13,578,18338,374,264,1296,315,279,6500,13,220,16,17,18,0,128009

source tests/e2e/lib/compare.sh

# Microsoft I2_S (trinity synth), then the same random model in the other formats (written by
# the reference's own GGUF writer, so the engine's readers are checked against independent code).
check synth-i2s "$TRINITY_TEST_MODEL" 128256
for fmt in i2_s tq2_0 tq1_0 f16; do
  "$PY" $REF/make_hf_checkpoint.py "$WORK/hf-$fmt" --shape tiny --seed 3 --gguf "$WORK/tiny-$fmt.gguf" --gguf-type $fmt > /dev/null
  check "tiny-$fmt" "$WORK/tiny-$fmt.gguf" 128256
done
# TQ2_0 whose blocks carry different scales (every other block's f16 d doubled, by adding one
# to its exponent): the engine must keep per-block scales instead of one per tensor.
cp "$WORK/tiny-tq2_0.gguf" "$WORK/tiny-tq2-mixed.gguf"
"$PY" - "$WORK/tiny-tq2-mixed.gguf" <<'PYEOF'
import sys
sys.path.insert(0, "tools/reference")
import gguf_py
path = sys.argv[1]
f = gguf_py.GGUFFile(path)
patches = []
for name in ("blk.0.ffn_up.weight", "blk.2.attn_q.weight"):
    t = f.tensors[name]
    start = f.data_offset + t.offset
    nblocks = t.ne[0] * t.ne[1] // 256
    patches += [start + 66 * b + 64 for b in range(0, nblocks, 2)]
f.close()
with open(path, "r+b") as out:
    for pos in patches:
        out.seek(pos); d = int.from_bytes(out.read(2), "little")
        out.seek(pos); out.write(((d + 0x400) & 0xFFFF).to_bytes(2, "little"))
PYEOF
check tiny-tq2-mixed "$WORK/tiny-tq2-mixed.gguf" 128256

for embd in f32 q8_0 q6_k; do
  "$PY" $REF/make_hf_checkpoint.py "$WORK/hf-e$embd" --shape tiny --seed 4 --gguf "$WORK/tiny-e$embd.gguf" --gguf-type i2_s --gguf-embd $embd > /dev/null
  check "tiny-embd-$embd" "$WORK/tiny-e$embd.gguf" 128256 loose
done
echo "forward_reference: all formats agree"
