#!/usr/bin/env bash
# The hops of one event at a fixed rate, from kernel timestamps (hops.py): runs
# SERVER (a fanin_server command line, the relay's, or "ceiling") with one subscriber under
# RATE messages/s over 1,000 connections for 4 s, records every CPU's
# scheduler and syscall tracepoints for 1 s in the middle with `perf record -a`,
# and prints the per-hop medians, wake-ups and syscalls per message.
#
#   tests/bench/e2e/hops.sh RATE "SERVER" [PERF_SECONDS]
#   e.g. RT=10 NICE=-10 tests/bench/e2e/hops.sh 1000 "bazel-bin/server/fanin_server"
#        RT=10 NICE=-10 tests/bench/e2e/hops.sh 1000 ceiling
#        RT=10 NICE=-10 tests/bench/e2e/hops.sh 1000 "bazel-bin/tests/bench/e2e/relay"
#
# RT and NICE as in ab.sh. Needs perf with tracepoints (root here). perf's own
# work lands on the same 2 cores: compare systems traced alike, not these
# figures with untraced runs.
set -euo pipefail
# shellcheck source=tests/bench/e2e/session.sh
source "$(dirname "$0")/session.sh"  # NICE, RT
cd "$(dirname "$0")/../../.."
rate="${1:?usage: hops.sh RATE SERVER [PERF_SECONDS]}"
server="${2:?usage: hops.sh RATE SERVER [PERF_SECONDS]}"
secs="${3:-1}"
bazel build -c opt //tests/bench/e2e:loadgen //tests/bench/e2e:subscriber \
  //tests/bench/e2e:ceiling //tests/bench/e2e:relay >/dev/null 2>&1
bin="$(bazel info -c opt bazel-bin 2>/dev/null)/tests/bench/e2e"
w="$(mktemp -d)"
trap 'rm -rf "$w"' EXIT
if [ "$server" = ceiling ]; then
  "${rt[@]}" "$bin/ceiling" --ready_file="$w/ready" --connections=1000 --rate="$rate" \
    --duration=4 --message_bytes=64 >"$w/server.out" 2>&1 &
else
  # shellcheck disable=SC2086  # the server command is meant to be split
  "${rt[@]}" $server --listen=default=127.0.0.1:0 --grpc_address=127.0.0.1:0 \
    --ready_file="$w/ready" 2>"$w/server.err" &
fi
sp=$!
for _ in $(seq 1 600); do [ -s "$w/ready" ] && break; sleep 0.05; done
grpc="$(awk '$1=="grpc"{print $2}' "$w/ready")"
"${rt[@]}" "$bin/subscriber" --server="$grpc" --message_bytes=64 --timeout=60 \
  --expect_connections="$([ "$server" = ceiling ] && echo 0 || echo 1000)" \
  --ready_file="$w/sub.ready" >"$w/sub.out" 2>&1 &
if [ "$server" != ceiling ]; then
  listen="$(awk '$1=="listen"{print $NF}' "$w/ready")"
  for _ in $(seq 1 600); do [ -s "$w/sub.ready" ] && break; sleep 0.05; done
  "${rt[@]}" "$bin/loadgen" --target="$listen" --connections=1000 --message_bytes=64 \
    --rate="$rate" --duration=4 --source_base="127.$((60 + RANDOM % 100)).$((RANDOM % 250)).1" \
    --source_count=50 --start_delay=0.5 >"$w/gen.out" 2>&1 &
fi
sleep 2
events="sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,exceptions:page_fault_user"
for s in sendto sendmsg read recvmsg epoll_wait poll ppoll select pselect6 clock_nanosleep; do
  events="$events,syscalls:sys_enter_$s,syscalls:sys_exit_$s"
done
perf record -q -a -e "$events" -o "$w/perf.data" -- sleep "$secs" >/dev/null 2>&1
for _ in $(seq 1 1200); do grep -q '"done"' "$w/sub.out" && break; sleep 0.05; done
perf script -i "$w/perf.data" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null >"$w/perf.txt"
kill "$sp" 2>/dev/null || true
wait "$sp" 2>/dev/null || true
python3 tests/bench/e2e/hops.py "$w/perf.txt" "$sp" "$([ "$server" = ceiling ] && echo ceiling || echo fanin)"
grep -h '"done"' "$w/sub.out" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print("subscriber (whole run, traced second included): p50 %.0f µs, p99 %.0f µs, %d messages" % (d["p50_us"], d["p99_us"], d["messages"]))'
