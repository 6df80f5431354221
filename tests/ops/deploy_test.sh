#!/usr/bin/env bash
# Runs deploy_test.py with the system python3 (python3-yaml) on the manifests.
set -euo pipefail
exec /usr/bin/python3 tests/ops/deploy_test.py server/fanin_server deploy/kubernetes/*.yaml
