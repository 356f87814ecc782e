#!/usr/bin/env bash
# Aggregate throughput of several nodes behind HAProxy against one node, side by side: one
# single-threaded node (directly, and behind HAProxy) and NODES single-threaded nodes behind HAProxy,
# each with one slot, measured in interleaved rounds under the same closed-loop load
# (`trinity bench --load`, the C++ load client: completions, output tokens from the server's usage).
#
#   bash bench/cluster_bench.sh [ROUNDS] [NODES]        (defaults 3 and 2; needs haproxy, build/trinity)
#   env: TRINITY (binary), MODEL (default: the built-in model), REQUESTS (32), CONCURRENCY (4),
#        MAX_TOKENS (128), CTX (256), STREAM (1; 0 = non-streaming requests, cheaper for the client)
#
# The client and HAProxy share the cores with the nodes, so what they spend is taken from the
# nodes: the C++ client spends a fraction of what the Python one did (bench/RESULTS.md).
#
# A benchmark, not a test: the ratio depends on what else the machine runs. Results: bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
NODES=${2:-2}
TRINITY=${TRINITY:-build/trinity}
MODEL=${MODEL:-models/trinity-tiny.gguf}
REQUESTS=${REQUESTS:-32}
CONCURRENCY=${CONCURRENCY:-4}
MAX_TOKENS=${MAX_TOKENS:-128}
CTX=${CTX:-256}
STREAM=${STREAM:-1}
WORK=$(mktemp -d /tmp/trinity-cluster-bench.XXXXXX)
ONE=(deploy/cluster.sh --dir "$WORK/one" --trinity "$TRINITY")
MANY=(deploy/cluster.sh --dir "$WORK/many" --trinity "$TRINITY")
trap '"${ONE[@]}" stop > /dev/null 2>&1 || true; "${MANY[@]}" stop > /dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

"${ONE[@]}" start 1 --port 0 --parallel 1 --threads 1 -- -m "$MODEL" -c "$CTX"
"${MANY[@]}" start "$NODES" --port 0 --parallel 1 --threads 1 -- -m "$MODEL" -c "$CTX"
direct="http://127.0.0.1:$(cat "$WORK/one/node1.port")"
one_lb=$(cat "$WORK/one/url")
many_lb=$(cat "$WORK/many/url")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: $REQUESTS completions (stream=$STREAM) x $MAX_TOKENS tokens, $CONCURRENCY clients; model $MODEL; $ROUNDS rounds"
load() {  # load URL CONCURRENCY REQUESTS -> one JSON document
  local flags=(bench --load "$1" --route completions --concurrency "$2" --requests "$3" --max-tokens "$MAX_TOKENS"
               --json --no-progress)
  [ "$STREAM" = 0 ] && flags+=(--no-stream)
  "$TRINITY" "${flags[@]}"
}
load "$direct" 2 8 > /dev/null  # warm-up
: > "$WORK/results.jsonl"
for r in $(seq "$ROUNDS"); do
  for setup in "1 node, direct|$direct" "1 node, HAProxy|$one_lb" "$NODES nodes, HAProxy|$many_lb"; do
    out=$(load "${setup#*|}" "$CONCURRENCY" "$REQUESTS") || { echo "${setup%%|*}: the load failed: $out" >&2; exit 1; }
    python3 -c 'import json, sys; j = json.loads(sys.argv[3]); print(json.dumps({"round": int(sys.argv[1]), "setup": sys.argv[2], **j["levels"][0]}))' \
      "$r" "${setup%%|*}" "$out" >> "$WORK/results.jsonl"
  done
  python3 - "$WORK/results.jsonl" "$r" <<'PY'
import json, sys
rows = [x for x in map(json.loads, open(sys.argv[1])) if x["round"] == int(sys.argv[2])]
tps = [x["output_tok_per_s"] for x in rows]
print(f"round {sys.argv[2]}: " + ", ".join(f"{x['setup']} {x['output_tok_per_s']:.0f} tok/s" for x in rows) +
      f"; {rows[2]['setup'].split(',')[0]} / 1 node = {tps[2] / tps[0]:.2f}x (direct), {tps[2] / tps[1]:.2f}x (HAProxy)",
      flush=True)
PY
done
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
setups = list(dict.fromkeys(x["setup"] for x in rows))
print()
print("| setup | output tok/s (median of rounds) | req/s | TTFT p50 / p99 ms | TPOT p50 ms | end-to-end p50 / p99 ms |")
print("|---|---|---|---|---|---|")
for name in setups:
    rs = [x for x in rows if x["setup"] == name]
    med = lambda f: statistics.median(f(x) for x in rs)
    ttft = "-" if rs[0]["ttft_ms"]["n"] == 0 else f"{med(lambda x: x['ttft_ms']['p50']):.1f} / {med(lambda x: x['ttft_ms']['p99']):.1f}"
    tpot = "-" if rs[0]["tpot_ms"]["n"] == 0 else f"{med(lambda x: x['tpot_ms']['p50']):.2f}"
    print(f"| {name} | {med(lambda x: x['output_tok_per_s']):.0f} | {med(lambda x: x['requests_per_s']):.2f} | {ttft} | "
          f"{tpot} | {med(lambda x: x['e2e_ms']['p50']):.0f} / {med(lambda x: x['e2e_ms']['p99']):.0f} |")
print()
rounds = sorted({x["round"] for x in rows})
tps = {(x["round"], x["setup"]): x["output_tok_per_s"] for x in rows}
for base in setups[:2]:
    ratios = [tps[(r, setups[2])] / tps[(r, base)] for r in rounds]
    print(f"{setups[2]} / {base}, per round: " + ", ".join(f"{v:.2f}x" for v in ratios) +
          f"; median {statistics.median(ratios):.2f}x")
PY
