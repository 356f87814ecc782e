#!/usr/bin/env bash
# A Trinity cluster on one machine: N `trinity serve` nodes on loopback with HAProxy in front,
# configured from the one template, deploy/haproxy/haproxy.cfg. For trying a cluster, for the
# tests (tests/e2e/cluster_*.sh) and for the benchmark (bench/cluster_bench.sh). `config` renders
# the same template for real hosts.
set -euo pipefail

usage() {
  cat <<'EOF'
usage:
  deploy/cluster.sh start N [options] [-- SERVE_ARGS...]   start N nodes and HAProxy in front
      --port P        HAProxy's port on 127.0.0.1 (default 8080; 0 = any free port)
      --stats-port P  HAProxy's statistics page /stats and /metrics (default 0 = any free port)
      --parallel P    slots per node (trinity serve --parallel; HAProxy maxconn) (default 1)
      --threads T     forward-pass threads per node (trinity serve -t) (default 1)
      SERVE_ARGS      passed to every `trinity serve` (e.g. -m MODEL -c 512)
  deploy/cluster.sh stop                 SIGTERM every node (they drain), then stop HAProxy
  deploy/cluster.sh status               processes and HAProxy's view of each node
  deploy/cluster.sh node I start|stop|kill
                                         restart node I on its port / SIGTERM (drain) / kill -9
  deploy/cluster.sh config [--port P] [--stats-port P] [--parallel P] HOST:PORT...
                                         print the HAProxy configuration for these nodes

options for every command:
  --dir DIR      state: configuration, logs, pids, ports (default $TRINITY_CLUSTER_DIR or
                 /tmp/trinity-cluster-$UID)
  --trinity BIN  the trinity binary (default $TRINITY, else build/trinity, else trinity on PATH)
EOF
}

die() { echo "cluster: $*" >&2; exit 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE="$HERE/haproxy/haproxy.cfg"
DIR=${TRINITY_CLUSTER_DIR:-/tmp/trinity-cluster-$(id -u)}
TRINITY_BIN=${TRINITY:-}
PORT=8080
STATS_PORT=0
PARALLEL=1
THREADS=1
READY_TIMEOUT_S=60

# Renders the template: bind addresses, maxconn = slots per node, one `server` line per node.
# render_config FRONTEND_ADDR STATS_ADDR PARALLEL HOST:PORT...
render_config() {
  local frontend=$1 stats=$2 parallel=$3
  shift 3
  local servers="" i=1
  for addr in "$@"; do
    servers+="    server node$i $addr"$'\n'
    i=$((i + 1))
  done
  SERVERS="$servers" awk -v fe="$frontend" -v st="$stats" -v par="$parallel" '
    /# @frontend/ { sub(/bind [^ ]+/, "bind " fe) }
    /# @stats/ { sub(/bind [^ ]+/, "bind " st) }
    /# @parallel/ { sub(/maxconn [0-9]+/, "maxconn " par) }
    /# @servers-begin/ { print; printf "%s", ENVIRON["SERVERS"]; skip = 1; next }
    /# @servers-end/ { skip = 0 }
    !skip { print }' "$TEMPLATE"
}

is_number() { [[ $1 =~ ^[0-9]+$ ]]; }

# A port is taken when something accepts connections on it.
port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

# A free port for HAProxy (bash only: starting python takes seconds on a loaded machine): random,
# below the kernel's range for outgoing connections, until nothing answers on it. A race with
# another process shows as HAProxy failing to bind; start then tries other ports.
free_port() {
  local low p
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
  [ "$low" -gt 12000 ] || low=32768
  for _ in $(seq 100); do
    p=$((10000 + RANDOM % (low - 10000)))
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free port found"
}

find_trinity() {
  if [ -n "$TRINITY_BIN" ]; then
    [ -x "$TRINITY_BIN" ] || die "trinity binary $TRINITY_BIN is not an executable file"
  elif [ -x "$HERE/../build/trinity" ]; then
    TRINITY_BIN="$HERE/../build/trinity"
  elif command -v trinity > /dev/null; then
    TRINITY_BIN=$(command -v trinity)
  else
    die "no trinity binary: build it (ninja -C build trinity) or give --trinity BIN"
  fi
}

need_haproxy() {
  command -v haproxy > /dev/null || die "haproxy is not installed (Debian: apt-get install haproxy)"
}

# Running: exists and is not a zombie (an exited node whose parent, gone, left it to an init that
# does not reap).
alive() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2> /dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}
pid_of() { cat "$DIR/$1.pid" 2> /dev/null || true; }
n_nodes() { cat "$DIR/nodes" 2> /dev/null || echo 0; }

# Starts node I (1-based) with the saved arguments, on PORT (0 = any free one); wait_node then
# waits until it has loaded its model and saves its port. Nodes load their models in parallel.
launch_node() {
  local i=$1 port=$2 log="$DIR/node$1.log"
  local -a args
  mapfile -t args < "$DIR/serve.args"
  if [ "$port" != 0 ] && port_in_use "$port"; then die "node $i: port $port is in use"; fi
  : > "$log"
  "$(cat "$DIR/trinity")" serve --host 127.0.0.1 --port "$port" "${args[@]}" < /dev/null >> "$log" 2>&1 &
  echo $! > "$DIR/node$i.pid"
}

wait_node() {
  local i=$1 log="$DIR/node$1.log" pid waited=0
  pid=$(pid_of "node$i")
  until grep -q "on http://" "$log"; do
    if ! alive "$pid"; then
      die "node $i failed to start ($log):"$'\n'"$(tail -n 5 "$log")"
    fi
    if [ $waited -ge $((READY_TIMEOUT_S * 10)) ]; then
      kill "$pid" 2> /dev/null || true
      die "node $i did not start within ${READY_TIMEOUT_S} s ($log)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  grep -o "on http://[0-9.]*:[0-9]*" "$log" | head -n 1 | sed 's/.*://' > "$DIR/node$i.port"
}

# HAProxy's state of each node from the statistics CSV: "node1 UP", "node2 DOWN", ... (HTTP over
# bash's /dev/tcp: no curl or python needed).
haproxy_states() {
  local addr
  addr=$(sed 's|^http://||' "$DIR/stats_url" 2> /dev/null) || return 1
  (
    exec 3<> "/dev/tcp/${addr%:*}/${addr##*:}" || exit 1
    printf 'GET /stats;csv HTTP/1.0\r\nHost: stats\r\n\r\n' >&3
    cat <&3
  ) 2> /dev/null | awk -F, '$1 == "trinity_nodes" && $2 != "BACKEND" && $2 != "FRONTEND" { split($18, s, " "); print $2, s[1] }'
}

stop_pid() {  # stop_pid NAME SIGNAL: signal a saved pid and wait for it to exit
  local name=$1 sig=$2 pid
  pid=$(pid_of "$name")
  alive "$pid" || return 0
  kill "-$sig" "$pid" 2> /dev/null || true
  for _ in $(seq 700); do alive "$pid" || return 0; sleep 0.1; done
  echo "cluster: $name did not exit within 70 s of SIG$sig; killing it" >&2
  kill -9 "$pid" 2> /dev/null || true
}

cmd_start() {
  local n=${1:-}
  is_number "$n" && [ "$n" -ge 1 ] || die "start: N must be a number of nodes >= 1 (got '${n}')"
  shift
  local -a serve_args=()
  while [ $# -gt 0 ]; do
    case $1 in
      --port) PORT=$2; shift 2 ;;
      --stats-port) STATS_PORT=$2; shift 2 ;;
      --parallel) PARALLEL=$2; shift 2 ;;
      --threads) THREADS=$2; shift 2 ;;
      --dir) DIR=$2; shift 2 ;;
      --trinity) TRINITY_BIN=$2; shift 2 ;;
      --) shift; serve_args=("$@"); break ;;
      *) die "start: unknown option $1 (see deploy/cluster.sh --help)" ;;
    esac
  done
  for v in PORT STATS_PORT PARALLEL THREADS; do is_number "${!v}" || die "start: $v must be a number (got '${!v}')"; done
  [ "$PARALLEL" -ge 1 ] || die "start: --parallel must be >= 1"
  need_haproxy
  find_trinity
  if alive "$(pid_of haproxy)"; then die "a cluster is already running in $DIR (deploy/cluster.sh stop first)"; fi
  if [ "$PORT" != 0 ] && port_in_use "$PORT"; then die "port $PORT is in use (choose another with --port, 0 = any free)"; fi
  if [ "$STATS_PORT" != 0 ] && port_in_use "$STATS_PORT"; then die "statistics port $STATS_PORT is in use (--stats-port)"; fi

  # The state directory is emptied: only when it is one (or empty), never a directory given by mistake.
  if [ -d "$DIR" ] && [ ! -f "$DIR/nodes" ] && [ -n "$(ls -A "$DIR")" ]; then
    die "$DIR is not empty and holds no cluster state: choose another --dir"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo "$TRINITY_BIN" > "$DIR/trinity"
  printf '%s\n' --parallel "$PARALLEL" -t "$THREADS" "${serve_args[@]}" > "$DIR/serve.args"
  echo 0 > "$DIR/nodes"
  trap 'echo "cluster: start failed, stopping what started" >&2; cmd_stop > /dev/null 2>&1' EXIT
  local -a addrs=()
  for i in $(seq "$n"); do
    launch_node "$i" 0
    echo "$i" > "$DIR/nodes"
  done
  for i in $(seq "$n"); do
    wait_node "$i"
    addrs+=("127.0.0.1:$(cat "$DIR/node$i.port")")
  done

  local port=$PORT stats_port=$STATS_PORT up=0
  for attempt in 1 2 3; do
    [ "$PORT" != 0 ] || port=$(free_port)
    [ "$STATS_PORT" != 0 ] || stats_port=$(free_port)
    render_config "127.0.0.1:$port" "127.0.0.1:$stats_port" "$PARALLEL" "${addrs[@]}" > "$DIR/haproxy.cfg"
    haproxy -c -q -f "$DIR/haproxy.cfg" || die "the generated $DIR/haproxy.cfg is invalid"
    : > "$DIR/haproxy.log"
    haproxy -db -f "$DIR/haproxy.cfg" < /dev/null >> "$DIR/haproxy.log" 2>&1 &
    echo $! > "$DIR/haproxy.pid"
    echo "http://127.0.0.1:$port" > "$DIR/url"
    echo "http://127.0.0.1:$stats_port" > "$DIR/stats_url"
    # Ready when HAProxy answers and has seen every node pass its health check.
    for _ in $(seq $((READY_TIMEOUT_S * 10))); do
      alive "$(pid_of haproxy)" || break
      up=$(haproxy_states 2> /dev/null | grep -c " UP$" || true)
      [ "$up" -eq "$n" ] && break 2
      sleep 0.1
    done
    if ! alive "$(pid_of haproxy)"; then
      if grep -q "Address already in use" "$DIR/haproxy.log" && { [ "$PORT" = 0 ] || [ "$STATS_PORT" = 0 ]; } &&
         [ "$attempt" -lt 3 ]; then
        echo "cluster: a port was taken meanwhile; trying others" >&2
        continue
      fi
      die "haproxy failed to start ($DIR/haproxy.log):"$'\n'"$(tail -n 5 "$DIR/haproxy.log")"
    fi
    break
  done
  PORT=$port
  STATS_PORT=$stats_port
  [ "$up" -eq "$n" ] || die "HAProxy sees $up of $n nodes up after ${READY_TIMEOUT_S} s ($DIR)"
  trap - EXIT
  echo "cluster: $n node(s) x $PARALLEL slot(s) behind HAProxy on http://127.0.0.1:$PORT" \
       "(statistics http://127.0.0.1:$STATS_PORT/stats, state in $DIR)"
  for i in $(seq "$n"); do
    echo "  node$i http://127.0.0.1:$(cat "$DIR/node$i.port") pid $(pid_of "node$i")"
  done
}

cmd_stop() {
  [ -d "$DIR" ] || { echo "cluster: nothing in $DIR"; return 0; }
  local n
  n=$(n_nodes)
  # Nodes first, all at once: each fails its health check, finishes what it holds, then exits,
  # while HAProxy still delivers their answers.
  for i in $(seq "$n"); do alive "$(pid_of "node$i")" && kill -TERM "$(pid_of "node$i")" 2> /dev/null || true; done
  for i in $(seq "$n"); do stop_pid "node$i" TERM; done
  stop_pid haproxy TERM
  echo "cluster: stopped ($DIR)"
}

cmd_status() {
  [ -f "$DIR/nodes" ] || die "no cluster in $DIR"
  local n
  n=$(n_nodes)
  echo "HAProxy: $(cat "$DIR/url" 2> /dev/null) pid $(pid_of haproxy) $(alive "$(pid_of haproxy)" && echo running || echo stopped)"
  local states
  states=$(haproxy_states 2> /dev/null || true)
  for i in $(seq "$n"); do
    local pid
    pid=$(pid_of "node$i")
    printf '  node%s http://127.0.0.1:%s pid %s %s, HAProxy: %s\n' "$i" "$(cat "$DIR/node$i.port" 2> /dev/null)" "$pid" \
      "$(alive "$pid" && echo running || echo stopped)" \
      "$(echo "$states" | awk -v s="node$i" '$1 == s { print $2 }')"
  done
}

cmd_node() {
  local i=${1:-} action=${2:-}
  [ -f "$DIR/nodes" ] || die "no cluster in $DIR"
  is_number "$i" && [ "$i" -ge 1 ] && [ "$i" -le "$(n_nodes)" ] || die "node: no node '$i' (1..$(n_nodes))"
  local pid
  pid=$(pid_of "node$i")
  case $action in
    start)
      alive "$pid" && die "node $i is running (pid $pid)"
      launch_node "$i" "$(cat "$DIR/node$i.port")"
      wait_node "$i"
      echo "cluster: node$i restarted, pid $(pid_of "node$i")" ;;
    stop) stop_pid "node$i" TERM; echo "cluster: node$i drained and stopped" ;;
    kill) alive "$pid" && kill -9 "$pid"; echo "cluster: node$i killed" ;;
    *) die "node: the action is start, stop or kill (got '$action')" ;;
  esac
}

cmd_config() {
  local -a addrs=()
  while [ $# -gt 0 ]; do
    case $1 in
      --port) PORT=$2; shift 2 ;;
      --stats-port) STATS_PORT=$2; shift 2 ;;
      --parallel) PARALLEL=$2; shift 2 ;;
      -*) die "config: unknown option $1" ;;
      *) [[ $1 =~ ^[^:[:space:]]+:[0-9]+$ ]] || die "config: '$1' is not HOST:PORT"; addrs+=("$1"); shift ;;
    esac
  done
  [ ${#addrs[@]} -gt 0 ] || die "config: give the nodes as HOST:PORT"
  is_number "$PARALLEL" && [ "$PARALLEL" -ge 1 ] || die "config: --parallel must be a number >= 1"
  [ "$STATS_PORT" != 0 ] || STATS_PORT=8404
  render_config "127.0.0.1:$PORT" "127.0.0.1:$STATS_PORT" "$PARALLEL" "${addrs[@]}"
}

# Options valid for every command may come anywhere; the rest goes to the command.
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --trinity) TRINITY_BIN=${2:?--trinity needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  start) cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  node) cmd_node "$@" ;;
  config) cmd_config "$@" ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown command '$cmd' (start, stop, status, node, config; --help)" ;;
esac
