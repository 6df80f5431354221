#!/usr/bin/env bash
# The cluster benchmark on a small load, every part once (run.py --smoke): one
# nats-server, standalone fanin, one, two and three cluster nodes, the JetStream
# floor and cross_write. Fails when any count disagrees or a check trips.
set -euo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
exec /usr/bin/python3 "$root/tests/bench/cluster/run.py" --smoke --bin_dir="$root" \
  --out="$TEST_TMPDIR/results"
