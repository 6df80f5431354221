# Sourced (not run) by ab.sh and hops.sh, first thing, with the caller's arguments:
#  - NICE=-10: re-runs the calling script in a session of its own and gives that
#    session's autogroup the nice, as run.py --nice does (with
#    sched_autogroup_enabled, nice only ranks tasks inside one session, so a plain
#    nice would still share the machine with every compile job as an equal);
#  - RT=10: sets rt=(chrt -f 10) for the caller to start its processes with
#    (SCHED_FIFO, as run.py's latency runs).
if [ -n "${NICE:-}" ] && [ -z "${FANIN_BENCH_SESSION:-}" ]; then
  exec env FANIN_BENCH_SESSION=1 setsid --wait bash "$0" "$@"
fi
if [ -n "${NICE:-}" ]; then
  echo "$NICE" >/proc/self/autogroup 2>/dev/null ||
    echo "$(basename "$0"): cannot set the autogroup's nice" >&2
fi
rt=()
if [ "${RT:-0}" != 0 ]; then rt=(chrt -f "$RT"); fi
