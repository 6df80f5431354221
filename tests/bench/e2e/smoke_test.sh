#!/usr/bin/env bash
# Keeps the harness from rotting: loadgen + floor, the ceiling with the C++ and the
# python subscriber, and fanin_server when it is built, on a small load (seconds);
# fails when any count disagrees or a check trips (run.py smoke).
set -euo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
exec /usr/bin/python3 "$root/tests/bench/e2e/run.py" smoke --bin_dir="$root" \
  --out="$TEST_TMPDIR/results" --plots="$TEST_TMPDIR/plots"
