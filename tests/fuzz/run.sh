#!/usr/bin/env bash
# Builds every libFuzzer target in tests/fuzz with --config=fuzz and runs each
# for a bounded number of executions, starting from its seed corpus (copied:
# the tree's corpus only changes by hand). Prints one line per target and a
# closing "N passed, N failed".
#   bash tests/fuzz/run.sh                 # 20000 runs each (what CI does)
#   bash tests/fuzz/run.sh --runs=2000000  # a longer run
#   bash tests/fuzz/run.sh --max_total_time=600 tokens
# A crash leaves its input in $FANIN_FUZZ_OUT (default /tmp/fanin-fuzz/<target>).
set -uo pipefail
cd "$(dirname "$0")/../.."

limit="-runs=20000"
targets=()
for arg in "$@"; do
  case "$arg" in
    --runs=*) limit="-runs=${arg#--runs=}" ;;
    --max_total_time=*) limit="-max_total_time=${arg#--max_total_time=}" ;;
    -*) echo "usage: run.sh [--runs=N|--max_total_time=S] [target...]" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(ls tests/fuzz/corpus)
fi

labels=()
for t in "${targets[@]}"; do labels+=("//tests/fuzz:${t}_fuzzer"); done
if ! bazel build --disk_cache="${HOME:-/root}/.cache/fanin-bazel-disk" --config=fuzz "${labels[@]}"; then
  echo "fuzz: build failed"
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi
bin="$(bazel info --config=fuzz bazel-bin 2>/dev/null)/tests/fuzz"
out_root="${FANIN_FUZZ_OUT:-/tmp/fanin-fuzz}"
pass=0 fail=0
for t in "${targets[@]}"; do
  work="$out_root/$t"
  rm -rf "$work" && mkdir -p "$work/corpus"
  cp tests/fuzz/corpus/"$t"/* "$work/corpus/"
  log="$work/log"
  if (cd "$work" && "$bin/${t}_fuzzer" "$limit" -print_final_stats=1 corpus > "$log" 2>&1); then
    pass=$((pass + 1)); verdict=ok
  else
    fail=$((fail + 1)); verdict="FAILED (see $log and $work/crash-*)"
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz: $t $verdict executions=${execs:-?} ${done_line#*DONE}"
done
echo "${pass} passed, ${fail} failed"
((fail == 0))
