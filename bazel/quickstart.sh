#!/usr/bin/env bash
# The quick-start commands of README.md, and what CI calls:
#   bash bazel/quickstart.sh serve   [server flags...]  build and run fanin_server on defaults
#   bash bazel/quickstart.sh cluster [server flags...]  NATS JetStream + three fanin nodes on
#                                                       loopback (docs/CLUSTER.md); Ctrl-C stops all
#   bash bazel/quickstart.sh test    [bazel flags...]   format check + every test; "N passed, N failed"
# Each first installs whatever Debian packages are missing (quiet when none are).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  bazel-bootstrap bazel-platforms libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-grpcio python3-protobuf socat netcat-openbsd
  libevent-dev libev-dev libuv1-dev clang clang-format libclang-rt-14-dev pkg-config
  openssl libssl-dev prometheus-cpp-dev prometheus gnuplot-nox python3-yaml
  # Cluster mode: fanin_server links the NATS C client; the demo and tests run the broker.
  nats-server libnats-dev
)

ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "quickstart: installing ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# clang-format (Google base, see .clang-format) must leave every C++ file unchanged.
format_check() {
  local files
  mapfile -t files < <(find proto server client tests -name '*.cc' -o -name '*.h' | sort)
  ((${#files[@]})) || return 0
  clang-format --dry-run --Werror "${files[@]}"
}

# Counts gtest cases (and non-gtest targets as one case each) from the test.xml files of
# the tests just run, so the closing line speaks of behaviours, not build targets.
summarize() {
  local testlogs="$1"; shift
  /usr/bin/python3 - "$testlogs" "$@" <<'PY'
import glob, os, re, sys, xml.etree.ElementTree as ET
logs, extra_pass, extra_fail, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
passed, failed = extra_pass, extra_fail
for t in targets:
    base = os.path.join(logs, t.lstrip('/').replace(':', '/'))
    # A sharded test leaves one test.xml per shard (shard_K_of_N; an earlier
    # --runs_per_test left shard_K_of_N_run_R_of_M beside them, not this run's).
    paths = ([os.path.join(base, 'test.xml')] if os.path.exists(os.path.join(base, 'test.xml'))
             else sorted(p for p in glob.glob(os.path.join(base, 'shard_*_of_*', 'test.xml'))
                         if re.fullmatch(r'shard_\d+_of_\d+', os.path.basename(os.path.dirname(p)))))
    cases = []
    try:
        for path in paths:
            cases.extend(ET.parse(path).getroot().iter('testcase'))
    except Exception:
        paths = []
    if not paths:
        failed += 1
        print(f"quickstart: no results for {t}", file=sys.stderr)
        continue
    n = 0
    for c in cases:
        n += 1
        if c.find('failure') is not None or c.find('error') is not None:
            failed += 1
            print(f"quickstart: FAILED {t} {c.get('classname','')}.{c.get('name','')}", file=sys.stderr)
        else:
            passed += 1
    if n == 0:
        failed += 1
print(f"{passed} passed, {failed} failed")
PY
}

# One action cache for every checkout on this machine (CI clones afresh into
# another folder): compiled objects are reused, test results never are.
CACHE=(--disk_cache="${HOME:-/root}/.cache/fanin-bazel-disk")

# ---- cluster: one JetStream broker and three fanin nodes on loopback ----------------------

# True when nothing listens on 127.0.0.1:PORT: a bind succeeds, with SO_REUSEADDR as the
# servers use (a port in TIME_WAIT from an earlier run is free for them).
port_free() {
  /usr/bin/python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# Sets VAR to PREFERRED if that port is free and not taken by this script yet, else to a
# port the kernel picks: the demo's ports stay the same from run to run when they can.
USED_PORTS=" "
pick_port() {
  local port="$2"
  until [[ "$USED_PORTS" != *" $port "* ]] && port_free "$port"; do
    port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  done
  USED_PORTS+="$port "
  printf -v "$1" '%s' "$port"
}

# Waits up to SECONDS for CONDITION (a command) while PID lives; false if PID died first
# or time ran out.
wait_while_alive() {
  local pid="$1" deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# Sends SIGNAL to each live PID, then waits up to SECONDS for all of them to exit.
stop_pids() {
  local signal="$1" seconds="$2" deadline pid alive
  shift 2
  for pid in "$@"; do kill "-$signal" "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.2
  done
  return 1
}

cluster_demo() {
  local bin=bazel-bin/server/fanin_server cli=bazel-bin/client/fanin help
  help=$("$bin" --helpfull 2>&1 || true)  # Abseil's --helpfull exits 1
  if ! grep -q -- '--cluster_nats ' <<<"$help"; then
    echo "quickstart: this fanin_server has no cluster mode yet (no --cluster_nats flag)" >&2
    exit 1
  fi
  local nats_bin
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

  DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fanin-cluster.XXXXXX")
  NATS_PID="" NODE_PIDS=() STOPPING=0
  trap 'cluster_stop 130' INT
  trap 'cluster_stop 143' TERM HUP
  trap 'cluster_stop $?' EXIT

  # The broker: JetStream with its file store in the demo's folder, all of it on loopback
  # (its monitoring port too, which nats-server's -a flag would not cover).
  local nats_port nats_http
  pick_port nats_port 4222
  pick_port nats_http 8222
  printf '%s\n' "server_name: fanin-demo" "listen: 127.0.0.1:$nats_port" \
    "http: 127.0.0.1:$nats_http" "jetstream { store_dir: \"$DEMO_DIR/jetstream\" }" \
    >"$DEMO_DIR/nats.conf"
  # setsid: the terminal's Ctrl-C reaches only this script, which then stops the nodes
  # first (they drain through the broker) and the broker last.
  setsid "$nats_bin" -c "$DEMO_DIR/nats.conf" >"$DEMO_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  if ! wait_while_alive "$NATS_PID" 10 nc -z 127.0.0.1 "$nats_port"; then
    echo "quickstart: nats-server did not start; its log ends:" >&2
    tail -n 20 "$DEMO_DIR/nats.log" >&2
    exit 1
  fi

  # Three nodes a b c: raw ports 7071.., gRPC 50052.., metrics 9465.. when free (beside,
  # not on, the `serve` defaults). One broker holds one copy: the stream has 1 replica
  # here, 3 in production.
  local names=(a b c) i name raw grpc metrics
  local -A RAW GRPC METRICS
  for i in 0 1 2; do
    name=${names[$i]}
    pick_port raw $((7071 + i))
    pick_port grpc $((50052 + i))
    pick_port metrics $((9465 + i))
    setsid "$bin" --node_name="$name" --cluster_nats="nats://127.0.0.1:$nats_port" \
      --cluster_replicas=1 --listen="default=127.0.0.1:$raw" \
      --grpc_address="127.0.0.1:$grpc" --metrics_address="127.0.0.1:$metrics" \
      --ready_file="$DEMO_DIR/$name.ready" "$@" >"$DEMO_DIR/$name.log" 2>&1 &
    NODE_PIDS+=($!)
    # The node's log on this terminal, each line prefixed with its name. Its own session
    # too, so the drain's last lines still print after Ctrl-C; it ends with the node.
    setsid bash -c 'tail -n +1 -s 0.2 -F --pid="$1" "$2" 2>/dev/null | sed -u "s/^/$3 | /"' \
      _ "$!" "$DEMO_DIR/$name.log" "$name" &
    RAW[$name]=$raw GRPC[$name]=$grpc METRICS[$name]=$metrics
  done
  for i in 0 1 2; do
    name=${names[$i]}
    if ! wait_while_alive "${NODE_PIDS[$i]}" 30 test -e "$DEMO_DIR/$name.ready"; then
      echo "quickstart: node $name did not start serving; its log ends:" >&2
      tail -n 20 "$DEMO_DIR/$name.log" >&2
      exit 1
    fi
  done
  sleep 0.5  # the nodes' start-up lines print before the summary

  local a=127.0.0.1:${GRPC[a]}
  row() {
    printf '  %-4s %-8s %-20s %-24s %s\n' "$@"
  }
  hint() {
    printf '    %-56s # %s\n' "$@"
  }
  {
    echo
    echo "==================== fanin cluster demo ===================="
    echo "  broker nats://127.0.0.1:$nats_port (JetStream; monitoring http://127.0.0.1:$nats_http/jsz)"
    echo
    row node pid "raw clients (nc)" "gRPC (fanin --server=)" metrics
    for i in 0 1 2; do
      name=${names[$i]}
      row "$name" "${NODE_PIDS[$i]}" "127.0.0.1:${RAW[$name]}" "127.0.0.1:${GRPC[$name]}" \
        "http://127.0.0.1:${METRICS[$name]}/metrics"
    done
    echo
    echo "  In other terminals, from $(pwd):"
    hint "$cli --server=$a nodes" "the members and their state"
    hint "$cli --server=$a watch" "every node's events, through node a"
    hint "nc 127.0.0.1 ${RAW[b]}" "a raw client held by node b: type lines"
    hint "nc 127.0.0.1 ${RAW[c]}" "another, held by node c"
    hint "$cli --server=$a list" "the connections, whichever node holds them"
    hint "$cli --server=$a write ID 'hi'" "reaches the node that holds ID"
    hint "kill ${NODE_PIDS[1]}" "node b drains (its clients CLOSED) and LEFT"
    echo
    echo "  Logs and the JetStream store: $DEMO_DIR"
    echo "  Ctrl-C stops the nodes (each drains), then the broker, and removes that folder."
    echo "============================================================"
    echo
  }

  # Until Ctrl-C; say when a process ends on its own.
  local -A gone
  local live rc
  while sleep 1; do
    if ! kill -0 "$NATS_PID" 2>/dev/null; then
      echo "quickstart: nats-server exited; its log ends:" >&2
      tail -n 10 "$DEMO_DIR/nats.log" >&2
      exit 1
    fi
    live=0
    for i in 0 1 2; do
      if kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
        live=$((live + 1))
      elif [ -z "${gone[$i]:-}" ]; then
        gone[$i]=1
        rc=0
        wait "${NODE_PIDS[$i]}" 2>/dev/null || rc=$?
        echo "quickstart: node ${names[$i]} (pid ${NODE_PIDS[$i]}) exited with status $rc" >&2
      fi
    done
    ((live > 0)) || exit 1
  done
}

# Nodes first (SIGTERM: each drains, publishing its connections' CLOSED events through the
# broker), then the broker, then the folder. A second Ctrl-C makes the nodes exit at once
# (fanin_server's second signal).
cluster_stop() {
  local status="$1"
  ((STOPPING)) && return
  STOPPING=1
  # Cleanup goes on whatever fails in it, and a signal now must not end the script: the
  # trap only forwards it (a plain command, no function call inside a trap's function).
  set +e
  trap 'kill -TERM "${NODE_PIDS[@]}" 2>/dev/null' INT
  trap '' TERM HUP
  trap - EXIT
  if ((${#NODE_PIDS[@]})); then
    echo "quickstart: stopping nodes a b c (they drain; Ctrl-C again cuts it short)" >&2
    stop_pids TERM 25 "${NODE_PIDS[@]}" || stop_pids KILL 5 "${NODE_PIDS[@]}"
  fi
  if [ -n "$NATS_PID" ]; then
    stop_pids TERM 10 "$NATS_PID" || stop_pids KILL 5 "$NATS_PID"
  fi
  sleep 0.5  # the log tails print the nodes' last lines
  rm -rf "$DEMO_DIR"
  echo "quickstart: cluster stopped; $DEMO_DIR removed" >&2
  exit "$status"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  serve)
    ensure_packages
    bazel build "${CACHE[@]}" //server:fanin_server //client:fanin
    echo "quickstart: watch events with: bazel-bin/client/fanin watch" >&2
    exec bazel-bin/server/fanin_server "$@"
    ;;
  cluster)
    ensure_packages
    bazel build "${CACHE[@]}" //server:fanin_server //client:fanin
    cluster_demo "$@"
    ;;
  test)
    ensure_packages
    fmt_pass=0 fmt_fail=0
    if format_check; then fmt_pass=1; else fmt_fail=1; echo "quickstart: clang-format check failed (run: clang-format -i <file>)" >&2; fi
    status=0
    bazel test "${CACHE[@]}" --nocache_test_results "$@" //... || status=$?
    mapfile -t targets < <(bazel query 'tests(//...)' 2>/dev/null)
    summarize "$(bazel info "$@" bazel-testlogs 2>/dev/null)" "$fmt_pass" "$fmt_fail" "${targets[@]}"
    ((fmt_fail == 0)) || status=1
    exit "$status"
    ;;
  *)
    echo "usage: bash bazel/quickstart.sh serve|cluster [fanin_server flags] | test [bazel flags]" >&2
    exit 2
    ;;
esac
