#!/usr/bin/env bash
# Side-by-side A/B of fanin_server command lines under the same load: rounds of
# A, B, (C, ...) alternated, each one run of loadgen (1,000 connections, 64-byte
# messages, as fast as it can for 4 s) into the server with K lossless C++
# subscribers, as run.py starts them. One line per run: messages/s, CPU of the
# load generator, the server and the subscribers, events per batch, checks.
#
#   tests/bench/e2e/ab.sh ROUNDS SUBSCRIBERS "SERVER A" "SERVER B" ...
#   e.g. tests/bench/e2e/ab.sh 5 1 "bazel-bin/server/fanin_server --loops=1" \
#                                  "bazel-bin/server/fanin_server --loops=2"
#
# Server paths are taken as given (copy binaries aside to compare builds).
# PER_SEND=16 sends 16 messages per send(). RATE=1000 sends that many messages
# per second in total (open loop, as run.py's latency runs) instead of as fast
# as it can; RT=10 runs every process at SCHED_FIFO 10 (as run.py's latency
# runs do); NICE=-10 puts the whole A/B in a session (autogroup) of its own at
# that nice, as run.py --nice does. Each line also has p99 and p99.9 (µs) of
# the first subscriber. Builds the harness with -c opt.
set -euo pipefail
# shellcheck source=tests/bench/e2e/session.sh
source "$(dirname "$0")/session.sh"  # NICE, RT
cd "$(dirname "$0")/../../.."
rate="${RATE:-0}"
rounds="${1:?usage: ab.sh ROUNDS SUBSCRIBERS SERVER...}"
nsub="${2:?usage: ab.sh ROUNDS SUBSCRIBERS SERVER...}"
shift 2
bazel build -c opt //tests/bench/e2e:loadgen //tests/bench/e2e:subscriber >/dev/null 2>&1
bin="$(bazel info -c opt bazel-bin 2>/dev/null)/tests/bench/e2e"
per_send="${PER_SEND:-1}"
for r in $(seq 1 "$rounds"); do
  for server in "$@"; do
    w="$(mktemp -d)"
    # shellcheck disable=SC2086  # the server command is meant to be split
    "${rt[@]}" $server --listen=default=127.0.0.1:0 --grpc_address=127.0.0.1:0 \
      --ready_file="$w/ready" 2>"$w/server.err" &
    sp=$!
    for _ in $(seq 1 600); do [ -s "$w/ready" ] && break; sleep 0.05; done
    grpc="$(awk '$1=="grpc"{print $2}' "$w/ready")"
    listen="$(awk '$1=="listen"{print $NF}' "$w/ready")"
    for i in $(seq 1 "$nsub"); do
      "${rt[@]}" "$bin/subscriber" --server="$grpc" --expect_connections=1000 --message_bytes=64 \
        --timeout=60 --ready_file="$w/sub$i.ready" >"$w/sub$i.out" 2>&1 &
    done
    for i in $(seq 1 "$nsub"); do
      for _ in $(seq 1 600); do [ -s "$w/sub$i.ready" ] && break; sleep 0.05; done
    done
    c0="$(awk '{print $14+$15}' "/proc/$sp/stat")"
    "${rt[@]}" "$bin/loadgen" --target="$listen" --connections=1000 --message_bytes=64 --rate="$rate" \
      --duration=4 --source_base="127.$((30 + r)).$((RANDOM % 250)).1" --source_count=50 \
      --messages_per_send="$per_send" --start_delay=0.5 >"$w/gen.out" 2>&1
    for i in $(seq 1 "$nsub"); do
      for _ in $(seq 1 1200); do grep -q '"done"' "$w/sub$i.out" && break; sleep 0.05; done
    done
    c1="$(awk '{print $14+$15}' "/proc/$sp/stat")"
    kill "$sp"; wait "$sp" 2>/dev/null || true
    /usr/bin/python3 - "$server" "$w" "$nsub" "$((c1 - c0))" <<'PY'
import json, os, statistics, sys
server, w, n, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def done(path):
    return [json.loads(l) for l in open(path) if l.startswith("{") and '"done"' in l][0]
g = done(f"{w}/gen.out")
subs = [done(f"{w}/sub{i}.out") for i in range(1, n + 1)]
ok = all(d["complete"] and d["errors"] == 0 and d["messages"] == g["sent_messages"]
         for d in subs)
hz = 100  # /proc/<pid>/stat ticks
words = server.split()
label = " ".join([os.path.basename(words[0])] + words[1:])
print(f"{label:36s} msgs/s {min(d['messages_per_s'] for d in subs) / 1e3:6.1f}k "
      f"gen_cpu {g['cpu_s']:.2f} srv_cpu {ticks / hz:.2f} "
      f"sub_cpu {sum(d.get('cpu_s', 0) for d in subs):.2f} "
      f"srv_us/msg {ticks / hz * 1e6 / g['sent_messages']:.2f} "
      f"ev/batch {subs[0]['events'] / max(1, subs[0]['batches']):.0f} "
      f"p50_us {statistics.median(d['p50_us'] for d in subs):.0f} "
      f"p99_us {subs[0]['p99_us']:.0f} p999_us {subs[0]['p999_us']:.0f} "
      f"{'ok' if ok else 'FAILED (loss, errors or incomplete)'}", flush=True)
PY
    rm -rf "$w"
  done
done
