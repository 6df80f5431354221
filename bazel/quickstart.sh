#!/usr/bin/env bash
# The two quick-start commands of README.md, and what CI calls:
#   bash bazel/quickstart.sh serve [server flags...]   build and run fanin_server on defaults
#   bash bazel/quickstart.sh test  [bazel flags...]    format check + every test; "N passed, N failed"
# Both first install whatever Debian packages are missing (quiet when none are).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  bazel-bootstrap bazel-platforms libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-grpcio python3-protobuf socat netcat-openbsd
  libevent-dev libev-dev libuv1-dev clang clang-format libclang-rt-14-dev pkg-config
  openssl prometheus-cpp-dev prometheus gnuplot-nox python3-yaml
  nats-server libnats-dev
)

ensure_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "quickstart: installing ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# clang-format (Google base, see .clang-format) must leave every C++ file unchanged.
format_check() {
  local files
  mapfile -t files < <(find proto server client tests -name '*.cc' -o -name '*.h' | sort)
  ((${#files[@]})) || return 0
  clang-format --dry-run --Werror "${files[@]}"
}

# Counts gtest cases (and non-gtest targets as one case each) from the test.xml files of
# the tests just run, so the closing line speaks of behaviours, not build targets.
summarize() {
  local testlogs="$1"; shift
  /usr/bin/python3 - "$testlogs" "$@" <<'PY'
import glob, os, sys, xml.etree.ElementTree as ET
logs, extra_pass, extra_fail, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
passed, failed = extra_pass, extra_fail
for t in targets:
    base = os.path.join(logs, t.lstrip('/').replace(':', '/'))
    # A sharded test leaves one test.xml per shard.
    paths = ([os.path.join(base, 'test.xml')] if os.path.exists(os.path.join(base, 'test.xml'))
             else sorted(glob.glob(os.path.join(base, 'shard_*_of_*', 'test.xml'))))
    cases = []
    try:
        for path in paths:
            cases.extend(ET.parse(path).getroot().iter('testcase'))
    except Exception:
        paths = []
    if not paths:
        failed += 1
        print(f"quickstart: no results for {t}", file=sys.stderr)
        continue
    n = 0
    for c in cases:
        n += 1
        if c.find('failure') is not None or c.find('error') is not None:
            failed += 1
            print(f"quickstart: FAILED {t} {c.get('classname','')}.{c.get('name','')}", file=sys.stderr)
        else:
            passed += 1
    if n == 0:
        failed += 1
print(f"{passed} passed, {failed} failed")
PY
}

# One action cache for every checkout on this machine (CI clones afresh into
# another folder): compiled objects are reused, test results never are.
CACHE=(--disk_cache="${HOME:-/root}/.cache/fanin-bazel-disk")

cmd="${1:-}"
shift || true
case "$cmd" in
  serve)
    ensure_packages
    bazel build "${CACHE[@]}" //server:fanin_server //client:fanin
    echo "quickstart: watch events with: bazel-bin/client/fanin watch" >&2
    exec bazel-bin/server/fanin_server "$@"
    ;;
  test)
    ensure_packages
    fmt_pass=0 fmt_fail=0
    if format_check; then fmt_pass=1; else fmt_fail=1; echo "quickstart: clang-format check failed (run: clang-format -i <file>)" >&2; fi
    status=0
    bazel test "${CACHE[@]}" --nocache_test_results "$@" //... || status=$?
    mapfile -t targets < <(bazel query 'tests(//...)' 2>/dev/null)
    summarize "$(bazel info "$@" bazel-testlogs 2>/dev/null)" "$fmt_pass" "$fmt_fail" "${targets[@]}"
    ((fmt_fail == 0)) || status=1
    exit "$status"
    ;;
  *)
    echo "usage: bash bazel/quickstart.sh serve [fanin_server flags] | test [bazel flags]" >&2
    exit 2
    ;;
esac
