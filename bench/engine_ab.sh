#!/usr/bin/env bash
# Alternated engine runs of two (or more) trinity binaries on the 2B-4T shape, one line per run:
# pp512, tg64 (and its share of the roofline), one stream and eight streams of the same run.
# Alternating is the only fair comparison on a shared machine (see bench/RESULTS.md).
#   bash bench/engine_ab.sh ROUNDS OLD/trinity NEW/trinity [MODEL]
# MODEL defaults to /tmp/k/2b.gguf (trinity synth --shape 2b-4t -o /tmp/k/2b.gguf).
set -euo pipefail
rounds=${1:?rounds}; old=${2:?binary}; new=${3:?binary}; model=${4:-/tmp/k/2b.gguf}
cell() { awk -F'|' -v c="$1" '{gsub(/ /, "", $c); print $c}'; }
for _ in $(seq "$rounds"); do
  for bin in "$old" "$new"; do
    out=$("$bin" bench --engine -m "$model" -t 2 -p 512 -n 64 --streams 1,8 2>&1)
    pp=$(grep '| pp512 ' <<< "$out" | cell 7)
    tg=$(grep '| tg64 |' <<< "$out" | cell 7)
    roof=$(grep 'roofline:' <<< "$out" | sed 's/.*reaches //')
    x1=$(grep 'tg64 x1' <<< "$out" | cell 3)
    x8=$(grep 'tg64 x8' <<< "$out" | cell 3)
    ratio=$(grep 'tg64 x8' <<< "$out" | cell 5)
    step=$(grep 'tg64 x8' <<< "$out" | cell 7)
    echo "$bin pp512=$pp tg64=$tg ($roof) x1=$x1 x8=$x8 ($ratio, $step ms/step)"
  done
done
