#!/usr/bin/env bash
# Converter round trip: a synthetic Hugging Face checkpoint (packed uint8 weights with
# weight_scale, and bf16 master weights) -> `trinity convert` -> GGUF; the engine's logits on the
# GGUF must match the independent reference's on the original checkpoint directory. Then
# TQ2_0 -> I2_S: `trinity convert` of a llama.cpp-style file gives the same logits again.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
REF=tools/reference
rm -rf "$WORK"; mkdir -p "$WORK"
TOKENS=128000,791,4062,14198,39935,35308,927,279,16053,5679,13,1102,574,279,1888,315,3115,11,433,574
source tests/e2e/lib/compare.sh

"$PY" $REF/make_hf_checkpoint.py "$WORK/hf-packed" --shape tiny --seed 11 > /dev/null
"$TRINITY" convert "$WORK/hf-packed" -o "$WORK/packed.gguf" 2> /dev/null
check hf-packed "$WORK/packed.gguf" 128256 "" "$WORK/hf-packed"

"$PY" $REF/make_hf_checkpoint.py "$WORK/hf-bf16" --shape tiny --seed 12 --bf16 > /dev/null
"$TRINITY" convert "$WORK/hf-bf16" -o "$WORK/bf16.gguf" 2> /dev/null
check hf-bf16 "$WORK/bf16.gguf" 128256 "" "$WORK/hf-bf16"

# llama.cpp layout (architecture bitnet, TQ2_0, relu2 named in the metadata) -> I2_S.
"$PY" $REF/make_hf_checkpoint.py "$WORK/hf-tq" --shape tiny --seed 13 --gguf "$WORK/tq2.gguf" --gguf-type tq2_0 > /dev/null
"$TRINITY" convert "$WORK/tq2.gguf" -o "$WORK/tq2-i2s.gguf" 2> /dev/null
"$TRINITY" info "$WORK/tq2-i2s.gguf" | grep -q "I2_S x28"
check tq2-to-i2s "$WORK/tq2-i2s.gguf" 128256 "" "$WORK/tq2.gguf"

# A file that is not a model is refused with a message, and a non-zero exit.
head -c 1000 "$WORK/packed.gguf" > "$WORK/truncated.gguf"
if "$TRINITY" info "$WORK/truncated.gguf" 2> "$WORK/err.txt"; then echo "FAIL: info accepted a truncated file"; exit 1; fi
grep -q "truncated.gguf" "$WORK/err.txt"
echo "convert_reference: conversions agree with the reference"
