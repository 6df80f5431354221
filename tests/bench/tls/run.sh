#!/usr/bin/env bash
# TLS on raw listeners, one run: ingest of 64 B and 1 KiB messages over TLS
# into fanin against fanin's own plaintext figure and the TLS floor (a bare
# OpenSSL epoll reader); handshakes/s against the floor; memory per idle TLS
# connection. Everything on loopback, on this machine's cores.
#   setsid nice -n -10 bash tests/bench/tls/run.sh [SECONDS] [CONNECTIONS] [PER_WRITE] [ROUNDS]
# Each figure is measured ROUNDS times, interleaved across the systems (so
# load from other work on the machine hits all alike); medians (min-max).
# (setsid + nice: a scheduling group of its own on a machine shared with
# builds, as tests/bench/e2e/run.sh --nice does; see docs/BENCHMARKS.md.)
set -euo pipefail
cd "$(dirname "$0")/../../.."
S="${1:-10}"
N="${2:-100}"
PER_WRITE="${3:-16}"
ROUNDS="${4:-3}"
bazel build --disk_cache="${HOME:-/root}/.cache/fanin-bazel-disk" -c opt \
  //tests/bench/tls:tls_bench //server:fanin_server //client:fanin >&2
B=bazel-bin/tests/bench/tls/tls_bench
dir="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$dir/k.pem" -out "$dir/c.pem" -days 1 -subj /CN=localhost 2>/dev/null

json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# The floor.
"$B" floor --listen=127.0.0.1:0 --cert="$dir/c.pem" --key="$dir/k.pem" > "$dir/floor.out" &
floor_pid=$!
until [ -s "$dir/floor.out" ]; do sleep 0.1; done
floor_addr="$(json "$(head -1 "$dir/floor.out")" listen)"
floor_bytes() { sleep 1.1; json "$(tail -1 "$dir/floor.out")" bytes; }
floor_hs() { sleep 1.1; json "$(tail -1 "$dir/floor.out")" handshakes; }

# fanin: one loop (the default on 2 cores), a TLS and a plain listener.
"bazel-bin/server/fanin_server" --listen=tls=127.0.0.1:0 --listen=plain=127.0.0.1:0 \
  --listen_tls=tls="$dir/c.pem,$dir/k.pem" --grpc_address=127.0.0.1:0 \
  --ready_file="$dir/ready" --log_level=error --history_bytes=67108864 &
fanin_pid=$!
until [ -s "$dir/ready" ]; do sleep 0.1; done
grpc="$(awk '/^grpc/ {print $2}' "$dir/ready")"
tls_addr="$(awk '$2=="tls" {print $3}' "$dir/ready")"
plain_addr="$(awk '$2=="plain" {print $3}' "$dir/ready")"
stat_field() { bazel-bin/client/fanin --server="$grpc" stats -o json > "$dir/s.json"; python3 -c "import json;print(json.load(open('$dir/s.json')).get('$1','0'))"; }
fanin_bytes() { stat_field bytes_received; }
fanin_hs() { stat_field tls_handshakes; }

results="$dir/results"
measure() {  # label size target bytes_fn [--plain]
  local label="$1" size="$2" target="$3" fn="$4"; shift 4
  local before after
  before="$($fn)"
  "$B" load --target="$target" --connections="$N" --size="$size" --per_write="$PER_WRITE" \
    --seconds="$S" "$@" > /dev/null
  after="$($fn)"
  echo "$label $size $(( (after - before) / size ))" >> "$results"
}
hs() {  # label target count_fn
  local before after
  before="$($3)"
  "$B" handshakes --target="$2" --parallel=8 --seconds="$S" > /dev/null
  after="$($3)"
  echo "$1 0 $(( after - before ))" >> "$results"
}
for r in $(seq 1 "$ROUNDS"); do
  for size in 64 1024; do
    measure floor "$size" "$floor_addr" floor_bytes
    measure fanin_tls "$size" "$tls_addr" fanin_bytes
    measure fanin_plain "$size" "$plain_addr" fanin_bytes --plain
  done
  hs floor_handshakes "$floor_addr" floor_hs
  hs fanin_handshakes "$tls_addr" fanin_hs
done
python3 - "$results" "$S" "$N" "$PER_WRITE" "$ROUNDS" <<'PY'
import statistics, sys
path, secs, n, per_write, rounds = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
runs = {}
for line in open(path):
    label, size, count = line.split()
    runs.setdefault((label, int(size)), []).append(int(count) / secs)
def fmt(v):
    return "%.0f (%.0f-%.0f)" % (statistics.median(v), min(v), max(v))
print(f"ingest: {n} TLS/plain connections, {per_write} messages per write, {secs:.0f} s per run, "
      f"median of {rounds} interleaved runs (min-max), messages/s read by the receiver")
print("| message | TLS floor | fanin TLS | fanin plain | fanin TLS / floor | fanin TLS / fanin plain |")
print("| --- | --- | --- | --- | --- | --- |")
for size in (64, 1024):
    f, t, p = (runs[(k, size)] for k in ("floor", "fanin_tls", "fanin_plain"))
    mf, mt, mp = (statistics.median(x) for x in (f, t, p))
    print(f"| {size} B | {fmt(f)} | {fmt(t)} | {fmt(p)} | {mt/mf:.2f}x | {mt/mp:.2f}x |")
f, t = runs[("floor_handshakes", 0)], runs[("fanin_handshakes", 0)]
print(f"\nhandshakes/s (8 at a time): floor {fmt(f)}, fanin {fmt(t)}: "
      f"{statistics.median(t)/statistics.median(f):.2f}x")
PY

echo "memory per idle connection (fresh server each), 2000 connections held"
kill "$fanin_pid"; wait "$fanin_pid" 2>/dev/null || true
for kind in tls plain; do
  rm -f "$dir/ready2"
  "bazel-bin/server/fanin_server" --listen=tls=127.0.0.1:0 --listen=plain=127.0.0.1:0 \
    --listen_tls=tls="$dir/c.pem,$dir/k.pem" --grpc_address=127.0.0.1:0 \
    --ready_file="$dir/ready2" --log_level=error &
  mem_pid=$!
  until [ -s "$dir/ready2" ]; do sleep 0.1; done
  sleep 1
  t="$(awk -v k="$kind" '$2==k {print $3}' "$dir/ready2")"
  before="$(rss_kib "$mem_pid")"
  extra=(); [ "$kind" = plain ] && extra=(--plain)
  "$B" load --target="$t" --connections=2000 --idle --seconds=8 "${extra[@]}" > "$dir/idle.out" &
  idle_pid=$!
  sleep 6
  during="$(rss_kib "$mem_pid")"
  wait "$idle_pid"
  python3 -c "print('%-28s %6.1f KiB each (RSS %d -> %d KiB)' % ('fanin $kind idle', ($during-$before)/2000.0, $before, $during))"
  kill "$mem_pid"; wait "$mem_pid" 2>/dev/null || true
done
