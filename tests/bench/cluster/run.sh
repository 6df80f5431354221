#!/usr/bin/env bash
# Cluster-mode benchmark: builds fanin_server, the e2e load generator and
# subscriber and the cluster programs with -c opt, then runs run.py (one
# nats-server on a free port for the whole run; see its docstring and
# docs/BENCHMARKS.md, "Cluster mode").
#
#   tests/bench/cluster/run.sh [run.py flags]
#   e.g. tests/bench/cluster/run.sh --rounds=3 --nice=-10
#        tests/bench/cluster/run.sh --parts=write --storage=memory
#        tests/bench/cluster/run.sh --parts=groups --rounds=3 --nice=-10
#
# Set FANIN_BAZEL_OUTPUT_BASE to build in your own Bazel output base (shared machines).
set -euo pipefail
cd "$(dirname "$0")/../../.."
command -v nats-server >/dev/null || { echo "run.sh: nats-server is not installed" >&2; exit 2; }

bazel_cmd=(bazel)
[ -n "${FANIN_BAZEL_OUTPUT_BASE:-}" ] && bazel_cmd+=(--output_base="$FANIN_BAZEL_OUTPUT_BASE")
cache=(--disk_cache="${HOME:-/root}/.cache/fanin-bazel-disk")

"${bazel_cmd[@]}" build -c opt "${cache[@]}" //server:fanin_server //tests/bench/e2e:loadgen \
  //tests/bench/e2e:subscriber //tests/bench/cluster:jetstream_floor //tests/bench/cluster:cross_write \
  //proto:fanin_py_grpc
bin_dir="$("${bazel_cmd[@]}" info -c opt bazel-bin 2>/dev/null)"
exec /usr/bin/python3 tests/bench/cluster/run.py --bin_dir="$bin_dir" "$@"
