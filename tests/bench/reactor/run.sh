#!/usr/bin/env bash
# Builds the reactor benchmark with -c opt and runs it; extra arguments go to the binary, e.g.
#   bash tests/bench/reactor/run.sh                      # the full table (N = 100, 1,000, 10,000; A = 1, 100)
#   bash tests/bench/reactor/run.sh --n=100 --rounds=5   # a quicker look
# BENCH_OUTPUT_BASE picks the Bazel output base (default: this user's cache, own server).
set -euo pipefail
cd "$(dirname "$0")/../../.."
output_base="${BENCH_OUTPUT_BASE:-${HOME}/.cache/bazel-ob-bench}"
bazel_cmd=(bazel --output_base="${output_base}")
# --symlink_prefix=/ : no bazel-* links in the shared checkout.
"${bazel_cmd[@]}" build -c opt --symlink_prefix=/ //tests/bench/reactor:reactor_bench >&2
bin="$("${bazel_cmd[@]}" info -c opt bazel-bin 2>/dev/null)/tests/bench/reactor/reactor_bench"
exec "${bin}" "$@"
