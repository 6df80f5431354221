#!/usr/bin/env bash
# TLS on raw listeners, one run: ingest of 64 B and 1 KiB messages over TLS
# into fanin against fanin's own plaintext figure and the TLS floor (a bare
# OpenSSL epoll reader); handshakes/s against the floor; memory per idle TLS
# connection. Everything on loopback, on this machine's cores.
#   setsid nice -n -10 bash tests/bench/tls/run.sh [SECONDS] [CONNECTIONS] [PER_WRITE]
# (setsid + nice: a scheduling group of its own on a machine shared with
# builds, as tests/bench/e2e/run.sh --nice does; see docs/BENCHMARKS.md.)
set -euo pipefail
cd "$(dirname "$0")/../../.."
S="${1:-10}"
N="${2:-100}"
PER_WRITE="${3:-16}"
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

rate() {  # name size target bytes_fn [--plain]
  local name="$1" size="$2" target="$3" fn="$4"; shift 4
  local before after
  before="$($fn)"
  "$B" load --target="$target" --connections="$N" --size="$size" --per_write="$PER_WRITE" \
    --seconds="$S" "$@" > /dev/null
  after="$($fn)"
  python3 -c "print('%-28s %6d B  %12.0f msgs/s' % ('$name', $size, ($after-$before)/$size/$S))"
}

echo "ingest, $N connections, $PER_WRITE messages per write, ${S}s each"
for size in 64 1024; do
  rate "TLS floor (bare OpenSSL)" "$size" "$floor_addr" floor_bytes
  rate "fanin TLS" "$size" "$tls_addr" fanin_bytes
  rate "fanin plain" "$size" "$plain_addr" fanin_bytes --plain
done

echo "handshakes/s, 8 at a time, ${S}s each"
for who in floor fanin; do
  if [ "$who" = floor ]; then t="$floor_addr"; fn=floor_hs; else t="$tls_addr"; fn=fanin_hs; fi
  before="$($fn)"
  "$B" handshakes --target="$t" --parallel=8 --seconds="$S" > /dev/null
  after="$($fn)"
  python3 -c "print('%-28s %8.0f handshakes/s' % ('$who', ($after-$before)/$S))"
done

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
