#!/usr/bin/env python3
"""The hops of one event, from kernel timestamps: reads `perf script` output of a
fixed-rate run (hops.sh records it) and prints, per message, the time between

  send      the load generator's send() (sys_enter_sendto)
  wake      the server thread that reads it is woken (sched_wakeup)
  run       that thread returns from its wait (sys_exit of epoll_wait/poll/select)
  read      its read() returns with the message
  write     a server thread enters sendmsg() on the subscriber's gRPC socket
  sub_wake  the subscriber's thread is woken
  recv      the subscriber's recvmsg() returns

(the ceiling has no socket to read: its hops start at `run`, the return of the
pacing thread's clock_nanosleep, where it stamps the batch), with medians and
p90 over every message of the trace; and, per message, the server's thread
wake-ups by waker, its syscalls by thread name, and what the writing thread did
between the read() and the sendmsg() (syscalls, page faults).

  hops.py perf.txt SERVER_PID ceiling|fanin

perf.txt is `perf script -F comm,pid,tid,cpu,time,event,trace` of sched_switch,
sched_wakeup, raw_syscalls:sys_enter, exceptions:page_fault_user and the
send/read/recvmsg/sendmsg/wait syscall tracepoints, recorded system-wide
(hops.sh). Messages are 64 bytes (the load generator's default).
"""
import collections
import re
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
WAKE = re.compile(r"comm=(.*?) pid=(\d+)")
FD = re.compile(r"fd: (0x[0-9a-f]+)")
NR = re.compile(r"NR (\d+)")
# x86-64 numbers of the syscalls worth naming on the path.
SYSCALL_NAMES = {0: "read", 1: "write", 9: "mmap", 10: "mprotect", 11: "munmap",
                 12: "brk", 28: "madvise", 46: "sendmsg", 202: "futex", 232: "epoll_wait"}


def quantile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    path, server_pid, ceiling = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "ceiling"
    server_tids = set()
    for raw in open(path, errors="replace"):
        m = LINE.match(raw)
        if m and int(m.group(2)) == server_pid:
            server_tids.add(int(m.group(3)))
    pending = collections.deque()  # send times not yet read by the server
    read_unsent = []  # events read, no gRPC write yet
    written = []  # events written, subscriber not yet woken
    woken = []  # subscriber woken, recvmsg not yet returned
    done = []
    last_wake = {}  # tid -> time of its last sched_wakeup
    last_run = {}  # tid -> time its last wait returned
    tid_comm = {}
    on_path = {}  # server tid -> what it did since its last read() (syscalls, faults)
    wakeups = collections.Counter()  # (waker comm, wakee comm) for server wakees
    syscalls = collections.Counter()  # server thread comm -> syscalls
    grpc_fd = None
    first = last = None
    for raw in open(path, errors="replace"):
        m = LINE.match(raw)
        if not m:
            continue
        comm, _pid, tid, _cpu, t, event, rest = m.groups()
        tid, t = int(tid), float(t) * 1e6  # µs
        tid_comm[tid] = comm
        is_server = tid in server_tids
        if event == "sched:sched_wakeup":
            w = WAKE.search(rest)
            if not w:
                continue
            wcomm, wtid = w.group(1), int(w.group(2))
            last_wake[wtid] = t
            if wtid in server_tids:
                wakeups[(comm, wcomm)] += 1
            if wcomm == "subscriber" and written:
                for e in written:
                    e["sub_wake"] = t
                woken.extend(written)
                written.clear()
            continue
        if event.startswith("raw_syscalls:sys_enter"):
            if is_server:
                syscalls[comm] += 1
                nr = NR.search(rest)
                if nr and tid in on_path:
                    on_path[tid].append(SYSCALL_NAMES.get(int(nr.group(1)), nr.group(1)))
            continue
        if event == "exceptions:page_fault_user":
            if is_server and tid in on_path:
                on_path[tid].append("page fault")
            continue
        if comm == "loadgen" and event == "syscalls:sys_enter_sendto":
            pending.append({"send": t})
            first = first if first is not None else t
            continue
        if comm == "subscriber" and event == "syscalls:sys_exit_recvmsg":
            n = int(rest, 16) if rest.startswith("0x") else 0
            if n > 0 and woken:
                for e in woken:
                    e["recv"] = t
                done.extend(woken)
                woken.clear()
                last = t
            continue
        if not is_server:
            continue
        if event in ("syscalls:sys_exit_epoll_wait", "syscalls:sys_exit_poll",
                     "syscalls:sys_exit_ppoll", "syscalls:sys_exit_select",
                     "syscalls:sys_exit_pselect6", "syscalls:sys_exit_clock_nanosleep"):
            last_run[tid] = t
            # The ceiling's main thread sleeps in 20 ms steps: not a pacer.
            if ceiling and event == "syscalls:sys_exit_clock_nanosleep" and tid != server_pid:
                read_unsent.append({"send": t, "wake": last_wake.get(tid, t), "run": t,
                                    "read": t})
                first = first if first is not None else t
        elif event == "syscalls:sys_exit_read" and not ceiling:
            n = int(rest, 16) if rest.startswith("0x") and not rest.startswith("0xf") else 0
            k = n // 64
            # Paired with the most recent k sends not yet paired: robust to a
            # read perf lost (a FIFO would shift every later pair by one). In
            # one loop iteration reading several sockets the pairs may swap, the
            # set of latencies does not. A send unpaired for 5 ms lost its read.
            got = [pending.pop() for _ in range(min(k, len(pending)))][::-1]
            while pending and t - pending[0]["send"] > 5000:
                pending.popleft()
            for e in got:
                e.update(wake=last_wake.get(tid, t), run=last_run.get(tid, t), read=t)
                read_unsent.append(e)
            if k:
                on_path[tid] = []
        elif event == "syscalls:sys_enter_sendmsg":
            fd = FD.search(rest)
            if grpc_fd is None and fd and read_unsent:
                grpc_fd = fd.group(1)
            if fd and fd.group(1) == grpc_fd and read_unsent:
                between = [x for x in on_path.get(tid, []) if x != "sendmsg"]
                for e in read_unsent:
                    e["write"] = t
                    e["writer"] = tid
                    e["between"] = between
                written.extend(read_unsent)
                read_unsent.clear()
    events = [e for e in done if "write" in e and e["send"] >= first]
    n = len(events)
    if n == 0:
        print("no complete event in the trace")
        return 1
    print(f"{n} messages traced over {(last - first) / 1e6:.2f} s")
    hops = [("send", "wake", "send() -> reading thread woken"),
            ("wake", "run", "woken -> its wait returns (scheduling)"),
            ("run", "read", "wait returned -> read() returned"),
            ("read", "write", "read() -> sendmsg() to the subscriber (server's own work)"),
            ("write", "sub_wake", "sendmsg() -> subscriber woken"),
            ("sub_wake", "recv", "subscriber woken -> its recvmsg() returned"),
            ("send", "recv", "total")]
    print("| hop | p50 µs | p90 µs |")
    print("| --- | --- | --- |")
    for a, b, label in hops:
        d = [e[b] - e[a] for e in events]
        print(f"| {label} | {quantile(d, 0.5):.1f} | {quantile(d, 0.9):.1f} |")
    print()
    writers = collections.Counter(tid_comm.get(e["writer"], "?") for e in events)
    print("gRPC write started by: " + ", ".join(f"{c} {k / n:.2f}" for c, k in
                                              writers.most_common()))
    print("server thread wake-ups per message (waker -> wakee): " + ", ".join(
        f"{a} -> {b} {k / n:.2f}" for (a, b), k in wakeups.most_common()))
    print(f"  total {sum(wakeups.values()) / n:.2f}")
    extra = collections.Counter()
    slow = collections.defaultdict(list)
    for e in events:
        kinds = set(e.get("between", []))
        for x in kinds:
            extra[x] += 1
        slow["with a page fault or mprotect" if kinds & {"page fault", "mprotect"}
             else "without"].append(e["write"] - e["read"])
    print("between read() and sendmsg() on the writing thread, share of messages: " +
          (", ".join(f"{x} {k / n:.2f}" for x, k in extra.most_common()) or "nothing"))
    for label, d in sorted(slow.items()):
        print(f"  read() -> sendmsg() {label}: {len(d)} messages, p50 "
              f"{quantile(d, 0.5):.1f} µs, p90 {quantile(d, 0.9):.1f} µs")
    print("server syscalls per message by thread: " + ", ".join(
        f"{c} {k / n:.2f}" for c, k in syscalls.most_common()))
    print(f"  total {sum(syscalls.values()) / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
