#!/usr/bin/env bash
# Runs deploy_test.py with the system python3 (python3-yaml) on every manifest, with
# Debian's nats-server (quickstart installs it) for the NATS config check.
set -euo pipefail
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' | sort)
nats_server=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || echo /usr/sbin/nats-server)
exec /usr/bin/python3 tests/ops/deploy_test.py server/fanin_server "$nats_server" "${manifests[@]}"
