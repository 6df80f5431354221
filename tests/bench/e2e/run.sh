#!/usr/bin/env bash
# End-to-end load harness: builds the harness, the API's python modules and (when it
# builds) fanin_server with -c opt, then runs one scenario of run.py.
#
#   tests/bench/e2e/run.sh throughput|fanout|latency|scale|pollers|python|groups|all|smoke [run.py flags]
#
# e.g. tests/bench/e2e/run.sh latency --runs=5 --rates 1000 10000
# Set FANIN_BAZEL_OUTPUT_BASE to build in your own Bazel output base (shared machines).
set -euo pipefail
cd "$(dirname "$0")/../../.."
scenario="${1:?usage: run.sh SCENARIO [run.py flags]}"
shift

bazel_cmd=(bazel)
[ -n "${FANIN_BAZEL_OUTPUT_BASE:-}" ] && bazel_cmd+=(--output_base="$FANIN_BAZEL_OUTPUT_BASE")

"${bazel_cmd[@]}" build -c opt //tests/bench/e2e:loadgen //tests/bench/e2e:floor \
  //tests/bench/e2e:ceiling //tests/bench/e2e:relay //tests/bench/e2e:subscriber \
  //proto:fanin_py_grpc
if ! "${bazel_cmd[@]}" build -c opt //server:fanin_server; then
  echo "run.sh: //server:fanin_server did not build; running the baselines only" >&2
fi
bin_dir="$("${bazel_cmd[@]}" info -c opt bazel-bin 2>/dev/null)"
exec /usr/bin/python3 tests/bench/e2e/run.py "$scenario" --bin_dir="$bin_dir" "$@"
