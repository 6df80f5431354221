#!/usr/bin/env bash
# Runs dashboard_test.py with the system python3 and Debian's promtool (package prometheus).
set -euo pipefail
exec /usr/bin/python3 tests/ops/dashboard_test.py deploy/grafana/fanin.json server/metrics.cc \
  "$(command -v promtool || echo /usr/bin/promtool)"
