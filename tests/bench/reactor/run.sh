#!/usr/bin/env bash
# Builds the reactor benchmark with -c opt and runs it; extra arguments go to the binary:
#   bash tests/bench/reactor/run.sh                     # the full table: N = 100, 1,000, 10,000; A = 1, 100
#   bash tests/bench/reactor/run.sh --n=100 --rounds=5  # a quicker look
#
# On a shared machine other processes' time slices land in the wall times, so the run is under
# SCHED_FIFO (chrt -f 10) when allowed: the benchmark then keeps its core (the kernel still leaves
# 5% of it to others) and the wall clock measures its own work; the same for every
# implementation. BENCH_SCHED=other runs it as a normal process.
# BENCH_OUTPUT_BASE picks the Bazel output base (default: a private one, its own Bazel server).
set -euo pipefail
cd "$(dirname "$0")/../../.."
output_base="${BENCH_OUTPUT_BASE:-${HOME}/.cache/bazel-ob-bench}"
bazel_cmd=(bazel --output_base="${output_base}")
# --symlink_prefix=/ : no bazel-* links in the checkout, which others share.
"${bazel_cmd[@]}" build -c opt --symlink_prefix=/ //tests/bench/reactor:reactor_bench >&2
bin="$("${bazel_cmd[@]}" info -c opt bazel-bin 2>/dev/null)/tests/bench/reactor/reactor_bench"
if [[ "${BENCH_SCHED:-fifo}" == fifo ]] && chrt -f 10 true 2>/dev/null; then
  exec chrt -f 10 "${bin}" "$@"
fi
exec "${bin}" "$@"
