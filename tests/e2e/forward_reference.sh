#!/usr/bin/env bash
# The engine's forward pass against the independent float64 Python reference
# (tools/reference/bitnet_ref.py), on synthetic tiny models in every weight format Trinity reads:
# teacher-forced logits within tolerance, and greedy tokens identical for 32 steps.
#
# Tolerance: both sides compute the trained numerics (int8 per-token activations, integer
# ternary dot products); the engine keeps f32 where the reference keeps f64. The differences are
# float rounding (~1e-5 relative) unless an activation lands within float error of a rounding
# boundary and its int8 code flips by one, which moves a logit by far less than 0.05 on these
# models (logit std ~8). So: max |diff| <= 0.05 and mean |diff| <= 1e-3, argmax identical.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
REF=tools/reference
rm -rf "$WORK"; mkdir -p "$WORK"
TOKENS=128000,791,4062,14198,39935,35308,927,279,16053,5679,13,1102,574,279,1888,315,3115,11,433,574,279,12047,315,3115,13,578,18338,374,264,1296,315,279,6500,13,220,16,17,18,0,128009

check() {  # name model vocab [loose]
  local name=$1 model=$2 vocab=$3 loose=${4:-}
  local atol=0.05 mean=1e-3 agree=1.0
  # The reference generator puts embedding values on coarse grids (exact in f16/bf16; Q8_0 and Q6_K
  # are q*d): their ratios make exact .5 ties in the
  # activation quantisation common: float64 and float32 then round a tie differently, which is
  # the legitimate one-step flip described above, and it propagates through the KV cache. Their
  # dequantisation is checked exactly in quant_test; here the check is statistical.
  if [ -n "$loose" ]; then atol=2.0; mean=0.25; agree=0.9; fi
  "$TRINITY" logits -m "$model" --tokens "$TOKENS" -o "$WORK/$name.engine.bin" 2>/dev/null
  "$PY" $REF/bitnet_ref.py "$model" --tokens "$TOKENS" -o "$WORK/$name.ref.bin" > /dev/null
  "$PY" $REF/compare_logits.py "$WORK/$name.ref.bin" "$WORK/$name.engine.bin" --vocab "$vocab" --atol $atol \
    --min-argmax-agree $agree > "$WORK/$name.cmp.json" || { echo "FAIL logits $name: $(cat "$WORK/$name.cmp.json")"; exit 1; }
  "$PY" - "$WORK/$name.cmp.json" $mean <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["mean_abs"] <= float(sys.argv[2]), r
PYEOF
  if [ -n "$loose" ]; then echo "ok $name (statistical): $(cat "$WORK/$name.cmp.json")"; return; fi
  # Greedy: 32 steps from a short prompt, both sides.
  local prompt=128000,791,4062,14198
  local ref_tokens eng_tokens
  ref_tokens=$("$PY" $REF/bitnet_ref.py "$model" --tokens $prompt -o "$WORK/$name.g.bin" --greedy 32 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  eng_tokens=$("$TRINITY" run -m "$model" --prompt-tokens $prompt -n 32 --temp 0 --ignore-eos --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  if [ "$ref_tokens" != "$eng_tokens" ]; then echo "FAIL greedy $name: ref $ref_tokens engine $eng_tokens"; exit 1; fi
  echo "ok $name: $(cat "$WORK/$name.cmp.json")"
}

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
