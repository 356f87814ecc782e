#!/usr/bin/env bash
# The deployment files as far as the tools here can check them, and deploy/cluster.sh's errors:
# HAProxy accepts its template and what the script renders from it; the Kubernetes manifests parse,
# probe /health, drain on termination and fit together (plus `kubectl kustomize` where kubectl is
# installed); systemd accepts the unit (`systemd-analyze verify`, where available); the script
# says clearly when haproxy is missing, a port is taken or a node does not start.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"

haproxy -c -q -f deploy/haproxy/haproxy.cfg

deploy/cluster.sh config --port 9000 --parallel 4 10.0.0.1:8080 10.0.0.2:8080 10.0.0.3:8080 > "$WORK/rendered.cfg"
haproxy -c -q -f "$WORK/rendered.cfg"
[ "$(grep -c '^ *server node[0-9]' "$WORK/rendered.cfg")" -eq 3 ]
grep -q "server node3 10.0.0.3:8080" "$WORK/rendered.cfg"
grep -q "default-server .*maxconn 4 " "$WORK/rendered.cfg"
grep -q "bind 127.0.0.1:9000 " "$WORK/rendered.cfg"
# Only the marked lines change.
[ "$(diff deploy/haproxy/haproxy.cfg "$WORK/rendered.cfg" | grep -c '^[<>]' || true)" -eq 10 ]

expect_error() {  # expect_error PATTERN COMMAND...: fails, and says PATTERN on stderr
  local pattern=$1
  shift
  if "$@" > "$WORK/out" 2> "$WORK/err"; then echo "FAIL: succeeded: $*"; exit 1; fi
  grep -q "$pattern" "$WORK/err" || { echo "FAIL: '$*' did not say '$pattern':"; cat "$WORK/err"; exit 1; }
}
CLUSTER=(deploy/cluster.sh --dir "$WORK/cluster" --trinity "$TRINITY")
expect_error "N must be a number" "${CLUSTER[@]}" start three
expect_error "not HOST:PORT" deploy/cluster.sh config localhost
mkdir -p "$WORK/notes" && touch "$WORK/notes/keep"
expect_error "holds no cluster state" deploy/cluster.sh --dir "$WORK/notes" --trinity "$TRINITY" start 1
[ -f "$WORK/notes/keep" ]
expect_error "haproxy is not installed" env PATH=/usr/bin:/bin "${CLUSTER[@]}" start 1
expect_error "is not an executable" deploy/cluster.sh --dir "$WORK/cluster" --trinity /nonexistent/trinity start 1
expect_error "node 1 failed to start" "${CLUSTER[@]}" start 1 --port 0 -- -m "$WORK/missing.gguf"
grep -q "missing.gguf" "$WORK/err"  # the node's own message comes along
# A port that is taken.
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(60)' > "$WORK/port" &
HOLDER=$!
trap 'kill $HOLDER 2> /dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
expect_error "port $(cat "$WORK/port") is in use" "${CLUSTER[@]}" start 1 --port "$(cat "$WORK/port")"
kill $HOLDER

# Kubernetes: structure and the values that must agree with each other and with the server.
"$PY" - <<'PY'
import glob, yaml
files = [f for f in sorted(glob.glob("deploy/k8s/*.yaml")) if not f.endswith("kustomization.yaml")]
docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
by_kind = {}
for d in docs:
    assert {"apiVersion", "kind", "metadata"} <= d.keys(), d
    by_kind.setdefault(d["kind"], []).append(d)
dep, = by_kind["Deployment"]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
c, = pod["spec"]["containers"]
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    assert c[probe]["httpGet"]["path"] == "/health", probe
assert c["lifecycle"]["preStop"]["exec"]["command"], "preStop"
args = c["args"]
assert args[0] == "serve" and "--timeout" in args
timeout_s = float(args[args.index("--timeout") + 1])
pre_stop_s = float(c["lifecycle"]["preStop"]["exec"]["command"][-1])
assert pod["spec"]["terminationGracePeriodSeconds"] >= pre_stop_s + timeout_s, "grace period < preStop + drain"
assert c["resources"]["requests"]["cpu"], "the HPA's CPU target needs a CPU request"
port = c["ports"][0]["containerPort"]
assert args[args.index("--port") + 1] == str(port)
for svc in by_kind["Service"]:
    assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
hpa, = by_kind["HorizontalPodAutoscaler"]
ref = hpa["spec"]["scaleTargetRef"]
assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
print("k8s manifests:", ", ".join(f"{k} x{len(v)}" for k, v in sorted(by_kind.items())))
PY
if command -v kubectl > /dev/null; then
  kubectl kustomize deploy/k8s > "$WORK/k8s.yaml"
  [ "$(grep -c '^kind:' "$WORK/k8s.yaml")" -eq 4 ]
else
  echo "kubectl not installed: skipped kubectl kustomize"
fi

# systemd: the unit as an instance, with this build's binary in place of the installed one.
if command -v systemd-analyze > /dev/null; then
  sed "s|/usr/local/bin/trinity|$(realpath "$TRINITY")|" deploy/systemd/trinity@.service > "$WORK/trinity@8081.service"
  systemd-analyze verify "$WORK/trinity@8081.service" 2>&1 | tee "$WORK/verify.log"
  [ ! -s "$WORK/verify.log" ]
else
  echo "systemd-analyze not installed: skipped the unit check"
fi
echo "cluster_config: ok"
