#!/usr/bin/env bash
# trinity bench / run --task end to end on a tiny model: the JSON interfaces other tools rely on
# (bench --json, bench --engine --json, run --task --json), the seed's three tables, the SVG chart,
# the overhead comparison, config-declared tasks, and clear errors for bad input.
# Args: $1 trinity binary, $2 python3, $3 work dir; model: $TRINITY_TEST_MODEL (else the built-in).
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
MODEL=${TRINITY_TEST_MODEL:-models/trinity-tiny.gguf}
rm -rf "$WORK"; mkdir -p "$WORK"
fail() { echo "FAIL: $*"; exit 1; }

cat > "$WORK/small.json" <<'JSON'
{"name": "small", "requests": [
  {"task": "generation", "input": "The future of AI is"},
  {"task": "qa", "input": "What is the golden ratio?"},
  {"task": "sentiment", "input": "I love how efficient BitNet is!"},
  {"task": "topic", "input": "Bitcoin mining consumes enormous amounts of electricity."},
  {"task": "summarize", "input": "Machine learning models require large amounts of data.", "max_tokens": 2}
]}
JSON

# bench --json: one document, results / summary / by_task.
"$TRINITY" bench -m "$MODEL" -c 256 -t 2 --suite "$WORK/small.json" --max-tokens 3 --repeat 2 --json \
  --plot "$WORK/chart.svg" > "$WORK/bench.json"
"$PY" - "$WORK/bench.json" <<'PYEOF'
import json, math, sys
d = json.load(open(sys.argv[1]))
assert set(d) >= {"results", "summary", "by_task"}, d.keys()
rs = d["results"]
assert len(rs) == 10, len(rs)
for r in rs:
    for k in ("task", "input", "output", "prompt_tokens", "generated_tokens", "ttft_ms", "total_ms", "tok_per_s"):
        assert k in r, (k, r)
    assert r["prompt_tokens"] > 0 and r["total_ms"] > 0 and r["ttft_ms"] <= r["total_ms"] + 1e-6, r
    if r["task"] in ("generation", "qa", "summarize", "topic"):
        assert r["generated_tokens"] <= 3, r
    if r["task"] == "sentiment":
        assert r["label"] in ("positive", "negative", "neutral"), r
        assert r["output"] == r["label"], r
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-6, r
        assert set(r["probabilities"]) == {"positive", "negative", "neutral"}, r
    if r["task"] == "topic":
        assert " " not in r["output"], r
s = d["summary"]
assert s["requests"] == 10
assert s["generated_tokens"] == sum(r["generated_tokens"] for r in rs)
assert abs(s["total_ms"] - sum(r["total_ms"] for r in rs)) < 1e-6
tps = [r["tok_per_s"] for r in rs]
assert abs(s["min_tok_per_s"] - min(tps)) < 1e-9 and abs(s["max_tok_per_s"] - max(tps)) < 1e-9
assert abs(s["tokens_per_minute"] - s["generated_tokens"] / s["total_ms"] * 60000) < 1e-6
assert s["ttft_p50_ms"] <= s["ttft_p90_ms"] <= s["ttft_p99_ms"]
bt = d["by_task"]
assert set(bt) == {"generation", "qa", "sentiment", "topic", "summarize"}, bt.keys()
assert all(v["requests"] == 2 for v in bt.values())
print("ok bench --json")
PYEOF
grep -q "</svg>" "$WORK/chart.svg" || fail "no SVG chart"
grep -q "Sentiment" "$WORK/chart.svg" || fail "chart lacks task names"

# The seed's three tables.
"$TRINITY" bench -m "$MODEL" -c 256 -t 2 --suite "$WORK/small.json" --max-tokens 2 > "$WORK/bench.txt"
for heading in "### Individual Results" "### Summary Statistics" "### By Task Type" "| Total Requests | 5 |" \
               "| Sentiment |" "Throughput"; do
  grep -qF "$heading" "$WORK/bench.txt" || fail "bench tables lack '$heading'"
done
echo "ok bench tables"

# --engine --json: exactly the documented keys.
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 --json > "$WORK/engine.json"
"$PY" - "$WORK/engine.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"pp_tok_per_s", "tg_tok_per_s", "bytes_per_token", "kv_bytes_per_token", "depth", "read_gbps",
                  "roofline_pct", "threads", "lm_head", "kv_cache", "model_file_bytes", "peak_rss_bytes",
                  "weights", "huge_page_bytes", "tg_alternated_tok_per_s", "read_alternated_gbps",
                  "roofline_alternated_pct", "prefetch", "prefetch_on_calls", "prefetch_off_calls"}, d
assert d["depth"] == 0 and d["kv_bytes_per_token"] > 0  # tg's mean position is n / 2 = 2
assert d["lm_head"] == "file" and d["kv_cache"] == "f32" and d["model_file_bytes"] > 0 and d["peak_rss_bytes"] > 0
assert d["pp_tok_per_s"] > 0 and d["tg_tok_per_s"] > 0 and d["bytes_per_token"] > 0 and d["read_gbps"] > 0
assert abs(d["roofline_pct"] - d["tg_tok_per_s"] * d["bytes_per_token"] / (d["read_gbps"] * 1e9) * 100) < 1e-6
assert d["tg_alternated_tok_per_s"] > 0 and d["read_alternated_gbps"] > 0
assert abs(d["roofline_alternated_pct"]
           - d["tg_alternated_tok_per_s"] * d["bytes_per_token"] / (d["read_alternated_gbps"] * 1e9) * 100) < 1e-6
assert d["threads"] == 2
# The x86 paths' decode GEMVs count their calls (4 tg tokens x 2 threads x the model's GEMVs).
import platform
assert d["prefetch"] == "auto"
assert (d["prefetch_on_calls"] + d["prefetch_off_calls"] > 0) == (platform.machine() in ("x86_64", "AMD64")), d
print("ok bench --engine --json")
PYEOF
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 > "$WORK/engine.txt"
grep -q "| tg4 |" "$WORK/engine.txt" || fail "engine table"
grep -q "^alternated (a probe pass after each of 4 tg tokens): tg .* of the roofline$" "$WORK/engine.txt" \
  || fail "alternated roofline line"
grep -q "^row-stream prefetch: auto (tg's decode GEMV calls: [0-9]* with, [0-9]* without)$" "$WORK/engine.txt" \
  || fail "prefetch line"
# $TRINITY_PREFETCH forces the prefetch off (no call makes it) or fails clearly on a bad value.
TRINITY_PREFETCH=off "$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 --no-alternate --json \
  | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["prefetch"] == "off" and d["prefetch_on_calls"] == 0, d' \
  || fail "TRINITY_PREFETCH=off"
if TRINITY_PREFETCH=sometimes "$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 > "$WORK/bad.txt" 2>&1; then
  fail "TRINITY_PREFETCH=sometimes accepted"
fi
grep -q 'unknown prefetch mode "sometimes": expected auto, on or off' "$WORK/bad.txt" || fail "TRINITY_PREFETCH error: $(cat "$WORK/bad.txt")"
# --no-alternate: no second tg run, its figures 0.
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 --no-alternate --json \
  | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["roofline_alternated_pct"] == 0 == d["tg_alternated_tok_per_s"], d' \
  || fail "--no-alternate"
# --depth: the tests run after that many cached tokens, whose keys and values count as read bytes.
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -d 16 -t 2 --bw-mib 64 --json > "$WORK/depth16.json"
"$PY" - "$WORK/engine.json" "$WORK/depth16.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert b["depth"] == 16 and b["tg_tok_per_s"] > 0 and b["pp_tok_per_s"] > 0
# per cached position: the same bytes; at depth 16 the mean tg position is 18, without it 2
assert b["kv_bytes_per_token"] == a["kv_bytes_per_token"] * 9, (a, b)
assert b["bytes_per_token"] - b["kv_bytes_per_token"] == a["bytes_per_token"] - a["kv_bytes_per_token"]
print("ok bench --engine --depth")
PYEOF
# --kv-cache f16: half the cache bytes per position, the weights' bytes unchanged.
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -d 16 -t 2 --bw-mib 64 --kv-cache f16 --json > "$WORK/depth16h.json"
"$PY" - "$WORK/depth16.json" "$WORK/depth16h.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert b["kv_cache"] == "f16" and b["tg_tok_per_s"] > 0 and b["pp_tok_per_s"] > 0, b
assert 2 * b["kv_bytes_per_token"] == a["kv_bytes_per_token"], (a, b)
assert b["bytes_per_token"] - b["kv_bytes_per_token"] == a["bytes_per_token"] - a["kv_bytes_per_token"]
print("ok bench --engine --kv-cache f16")
PYEOF
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 --kv-cache q4 > /dev/null 2>&1 && fail "--kv-cache q4 accepted"
# $TRINITY_WEIGHTS places the weights: a private copy or the file's mapping; anything else is refused.
for placement in copy mmap; do
  TRINITY_WEIGHTS=$placement "$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 --json > "$WORK/w-$placement.json"
done
"$PY" - "$WORK/w-copy.json" "$WORK/w-mmap.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["weights"] == "copy" and b["weights"] == "mmap", (a, b)
assert a["bytes_per_token"] == b["bytes_per_token"] and a["tg_tok_per_s"] > 0 and b["tg_tok_per_s"] > 0
print("ok TRINITY_WEIGHTS")
PYEOF
TRINITY_WEIGHTS=ram "$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -t 2 --bw-mib 64 > "$WORK/w-bad.txt" 2>&1 \
  && fail "TRINITY_WEIGHTS=ram accepted"
grep -q "TRINITY_WEIGHTS" "$WORK/w-bad.txt" || fail "TRINITY_WEIGHTS=ram: no clear error"
"$TRINITY" bench --engine -m "$MODEL" -p 8 -n 4 -d 16 -t 2 --bw-mib 64 | grep -q "| tg4 @ d16 |" || fail "depth label"

# --overhead: both sides generate the same tokens.
"$TRINITY" bench --overhead -m "$MODEL" -c 256 -t 2 --suite "$WORK/small.json" --max-tokens 2 --json > "$WORK/over.json"
"$PY" - "$WORK/over.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["engine"]["generated_tokens"] == d["node"]["generated_tokens"], d
assert d["ratio"] > 0 and abs(d["overhead_pct"] - (1 - d["ratio"]) * 100) < 1e-9
print("ok bench --overhead")
PYEOF

# run --task: one result as JSON and as text.
"$TRINITY" run -m "$MODEL" -c 256 --task sentiment --json "The slow speed is disappointing." > "$WORK/run.json"
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["label"] in ("positive","negative","neutral") and r["task"]=="sentiment", r' "$WORK/run.json"
out=$("$TRINITY" run -m "$MODEL" -c 256 --task topic "The Eiffel Tower was built in 1889." 2>/dev/null)
[[ "$out" != *" "* ]] || fail "topic answer is not one word: '$out'"
"$TRINITY" run -m "$MODEL" -c 256 --task qa -n 2 --json "What is 2+2?" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); assert r["generated_tokens"] <= 2, r'
"$TRINITY" run -m "$MODEL" -c 256 --task sentiment --free-text -n 2 --json "Great!" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); assert "probabilities" not in r, r'
echo "ok run --task"

# Config-declared task.
cat > "$WORK/tasks.json" <<'JSON'
{"tasks": [{"name": "spam", "template": "Is this spam? {input}\nAnswer:", "max_tokens": 2, "labels": ["yes", "no"]}]}
JSON
"$TRINITY" run -m "$MODEL" -c 256 --tasks-config "$WORK/tasks.json" --task spam --json "WIN A PRIZE NOW" \
  | "$PY" -c 'import json,sys; r=json.load(sys.stdin); assert r["label"] in ("yes","no") and set(r["probabilities"])=={"yes","no"}, r'
echo "ok config task"

# Errors: non-zero exit and a clear message.
expect_error() {  # expected-substring command...
  local want=$1; shift
  if "$@" > "$WORK/err.out" 2> "$WORK/err.txt"; then fail "expected failure: $*"; fi
  grep -qF "$want" "$WORK/err.txt" || fail "'$*' said: $(cat "$WORK/err.txt") (wanted '$want')"
}
expect_error 'unknown task "poem" (known: generation, qa, sentiment, topic, summarize)' \
  "$TRINITY" run -m "$MODEL" --task poem "x"
expect_error "the input of the qa request is empty" "$TRINITY" run -m "$MODEL" --task qa "  "
expect_error "the input is too long: the qa prompt is" \
  "$TRINITY" run -m "$MODEL" -c 32 --task qa "$(printf 'word %.0s' $(seq 1 60))"
echo '{"tasks": [{"name": "x", "template": "no placeholder", "max_tokens": 2}]}' > "$WORK/bad.json"
expect_error 'bad.json: task "x": the template must contain {input}' \
  "$TRINITY" run -m "$MODEL" --tasks-config "$WORK/bad.json" --task qa "x"
echo '{"requests": [{"task": "poem", "input": "x"}]}' > "$WORK/badsuite.json"
expect_error 'requests[0]: unknown task "poem"' "$TRINITY" bench -m "$MODEL" --suite "$WORK/badsuite.json"
echo "ok errors"
