#!/usr/bin/python3
"""End-to-end load harness driver: floor, gRPC ceiling and fanin under one load.

Usually started through run.sh, which builds everything with -c opt first:

    tests/bench/e2e/run.sh throughput|fanout|latency|scale|pollers|python|groups|all|smoke

Each scenario starts the systems under test, the load generator and the
subscribers as separate processes on loopback, repeats every measurement
--runs times and prints a markdown table of medians (min-max) per scenario; the
tables and raw JSON go to --out (default tests/bench/e2e/results) and PNG plots
to tests/bench/e2e/plots. Every wait is bounded in time. Correctness checks stay
on in every run: a run that loses, duplicates or reorders a message is reported
as such, never dropped from the figures.
"""

import argparse
import collections
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- processes

class Proc:
    """A child process whose stdout JSON lines are collected by a thread."""

    live = []
    started = 0
    nice = 0  # applied to every child alike (run.py --nice)
    rt = 0  # SCHED_FIFO priority for every child alike, 0 = none (latency runs)

    def __init__(self, name, argv, workdir):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        Proc.started += 1
        self.stderr_path = os.path.join(workdir, f"{Proc.started:05d}-{name}.stderr")
        self.stderr = open(self.stderr_path, "w")
        nice, rt = Proc.nice, Proc.rt

        def setup():
            if nice:
                os.nice(nice)
            if rt:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))

        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr,
                                  text=True, preexec_fn=setup if nice or rt else None)
        Proc.live.append(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()

    @property
    def pid(self):
        return self.p.pid

    def wait_line(self, event, timeout):
        """Returns the first JSON line with "event": event, waiting up to timeout s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for obj in self.lines:
                    if obj.get("event") == event:
                        return obj
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.reader.is_alive()):
                    raise HarnessError(f"{self.name}: no '{event}' line within {timeout}s "
                                       f"(exit {self.p.poll()}); see {self.stderr_path}: "
                                       f"{tail(self.stderr_path)}")
                self.cond.wait(min(left, 0.1))

    def lines_of(self, event):
        with self.cond:
            return [o for o in self.lines if o.get("event") == event]

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name}: still running after {timeout}s")

    def stop(self, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.reader.join(timeout=5)
        self.stderr.close()
        if self in Proc.live:
            Proc.live.remove(self)

    @classmethod
    def stop_all(cls):
        for p in list(cls.live):
            p.stop(timeout=3)


def tail(path, n=400):
    try:
        with open(path) as f:
            return f.read()[-n:].strip().replace("\n", " | ")
    except OSError:
        return ""


def wait_file(path, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
        if proc is not None and proc.p.poll() is not None:
            raise HarnessError(f"{proc.name} exited ({proc.p.returncode}) before writing "
                               f"{path}: {tail(proc.stderr_path)}")
        time.sleep(0.01)
    raise HarnessError(f"{path} did not appear within {timeout}s")


def wait_members_read(progress_files, written, timeout=60):
    """Waits until a group's member subscribers (their --progress_file) have
    received together as many events as the server wrote to them (`written`,
    the sum of ListGroups' delivered_events; none can receive more than was
    written to it), so stopping them loses nothing still on its way."""
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        got = []
        for path in progress_files:
            try:
                with open(path) as f:
                    got.append(int(f.read().strip() or 0))
            except (OSError, ValueError):
                got.append(0)
        if sum(got) >= written:
            return
        time.sleep(0.01)  # polling the files, bounded by the deadline
    raise HarnessError(f"members received {got} of the {written} events written to them")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise HarnessError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------- harness

class Harness:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self.work = tempfile.mkdtemp(prefix="fanin-e2e-")
        self.seq = 0
        self.loadgens = 0
        self.failed_runs = 0
        self.fanin_bin = os.path.join(self.bin, "server", "fanin_server")
        self.proto_dir = os.path.join(self.bin, "proto")
        self._stub = None

    def path(self, name):
        self.seq += 1
        return os.path.join(self.work, f"{self.seq:04d}-{name}")

    def exe(self, name):
        return os.path.join(self.bin, "tests", "bench", "e2e", name)

    def has_fanin(self):
        return os.access(self.fanin_bin, os.X_OK)

    # -- pieces

    def loadgen(self, target, conns, rate, duration, hold=0, per_send=1, start_delay=0):
        # Fresh source addresses for every run, about 20 connections each: from
        # one address, connect() searches ephemeral ports past earlier runs'
        # TIME_WAIT and 19,000 connections took 11 s instead of about 1.
        self.loadgens += 1
        base = f"127.{10 + self.loadgens % 240}.{self.loadgens // 240 % 250}.1"
        argv = [self.exe("loadgen"), f"--target={target}", f"--connections={conns}",
                f"--message_bytes={self.args.message_bytes}", f"--rate={rate}",
                f"--duration={duration}", f"--source_base={base}",
                f"--source_count={max(1, min(conns // 20, 1000))}",
                f"--messages_per_send={per_send}", f"--start_delay={start_delay}"]
        if hold:
            argv.append(f"--hold={hold}")
        return Proc("loadgen", argv, self.work)

    def subscriber(self, server, expect, py=False, name="sub", cdf=None, group="",
                   progress=None):
        ready = self.path(f"{name}.ready")
        if py:
            argv = ["/usr/bin/python3", os.path.join(HERE, "subscriber.py"),
                    f"--proto_dir={self.proto_dir}"]
        else:
            argv = [self.exe("subscriber")]
            if cdf:
                argv.append(f"--latency_cdf={cdf}")
        argv += [f"--server={server}", f"--expect_connections={expect}",
                 f"--message_bytes={self.args.message_bytes}", "--timeout=150",
                 f"--ready_file={ready}"]
        if self.args.max_batch_events:
            argv.append(f"--max_batch_events={self.args.max_batch_events}")
        if group:
            argv.append(f"--group={group}")
        if progress:
            argv.append(f"--progress_file={progress}")
        proc = Proc(name, argv, self.work)
        proc.ready_file = ready
        return proc

    def start_fanin(self, poller, extra=()):
        if not self.has_fanin():
            raise HarnessError(f"{self.fanin_bin} is not built")
        return self.start_server("fanin_server", [self.fanin_bin, f"--poller={poller}"]
                                 + list(self.args.fanin_flag) + list(extra))

    def start_server(self, name, argv):
        """fanin_server, or the relay (which takes its address flags and writes the
        same ready file): (process, {"grpc": addr, "listen": addr})."""
        ready = self.path(f"{name}.ready")
        argv = argv[:1] + ["--listen=default=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
                           f"--ready_file={ready}"] + argv[1:]
        proc = Proc(name, argv, self.work)
        text = wait_file(ready, 30, proc)
        addrs = {}
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "grpc":
                addrs["grpc"] = parts[1]
            elif parts and parts[0] == "listen":
                addrs.setdefault("listen", parts[-1])
        if "grpc" not in addrs or "listen" not in addrs:
            raise HarnessError(f"{name} ready file lacks grpc/listen lines: {text!r}")
        return proc, addrs

    def stub(self, addr):
        sys.path.insert(0, self.proto_dir)
        import grpc  # pylint: disable=import-outside-toplevel
        from fanin.v1 import fanin_pb2, fanin_pb2_grpc  # pylint: disable=import-outside-toplevel
        channel = grpc.insecure_channel(addr)
        return fanin_pb2, fanin_pb2_grpc.FanInStub(channel), channel

    # -- one measurement each

    def hold_idle(self, target, idle, duration):
        """`idle` connections that send nothing and close after the load is done."""
        if not idle:
            return None
        gen = self.loadgen(target, idle, 0, 0, hold=duration + 3)
        gen.wait_line("connected", 60)
        return gen

    def run_floor(self, conns, rate, duration, cdf=None, per_send=1, idle=0):
        ready = self.path("floor.ready")
        argv = [self.exe("floor"), f"--ready_file={ready}",
                f"--expect_connections={conns + idle}",
                f"--message_bytes={self.args.message_bytes}", "--timeout=150"]
        if cdf:
            argv.append(f"--latency_cdf={cdf}")
        floor = Proc("floor", argv, self.work)
        try:
            target = wait_file(ready, 10, floor).split()[-1]
            self.hold_idle(target, idle, duration)
            gen = self.loadgen(target, conns, rate, duration, per_send=per_send,
                               start_delay=self.args.start_delay if rate else 0)
            sent = gen.wait_line("done", duration + 120)
            done = floor.wait_line("done", 60)
            cpu = done["cpu_s"]  # it exits right after: it measures itself
        finally:
            Proc.stop_all()
        return summarize("floor", sent, [done], cpu, done["messages"])

    def run_ceiling(self, conns, rate, duration, subscribers=1, py=False, cdf=None,
                    per_send=1):
        ready = self.path("ceiling.ready")
        ceiling = Proc("ceiling", [self.exe("ceiling"), f"--ready_file={ready}",
                                   f"--connections={conns}", f"--rate={rate}",
                                   f"--duration={duration}",
                                   f"--messages_per_event={per_send}",
                                   f"--message_bytes={self.args.message_bytes}",
                                   f"--batch_events={self.args.ceiling_batch}"], self.work)
        try:
            addr = wait_file(ready, 10, ceiling).split()[-1]
            cpu0 = cpu_seconds(ceiling.pid)
            subs = [self.subscriber(addr, 0, py=py, name=f"sub{i}",
                                    cdf=cdf if i == 0 else None)
                    for i in range(subscribers)]
            results = [s.wait_line("done", duration + 60) for s in subs]
            deadline = time.monotonic() + 10
            while len(ceiling.lines_of("stream_done")) < subscribers:
                if time.monotonic() > deadline:
                    raise HarnessError("ceiling did not report every stream")
                time.sleep(0.01)
            cpu = cpu_seconds(ceiling.pid) - cpu0
            streams = ceiling.lines_of("stream_done")
        finally:
            Proc.stop_all()
        sent = {"sent_messages": sum(s["events"] for s in streams) * per_send / subscribers,
                "failed_connections": 0,
                "sent_per_s": statistics.mean(s["events_per_s"] for s in streams) * per_send}
        # Each stream carries its own events: loss is checked per stream total.
        r = summarize("ceiling", sent, results, cpu, sum(s["events"] for s in streams))
        r["lost"] = (sum(s["events"] for s in streams) * per_send
                     - sum(x["messages"] for x in results))
        r["ok"] = ok(r)
        return r

    def run_fanin(self, conns, rate, duration, poller="epoll", subscribers=1, py=False,
                  cdf=None, per_send=1, idle=0, relay=False):
        if relay:
            server, addrs = self.start_server("relay", [self.exe("relay")])
        else:
            server, addrs = self.start_fanin(poller)
        try:
            subs = [self.subscriber(addrs["grpc"], conns + idle, py=py, name=f"sub{i}",
                                    cdf=cdf if i == 0 else None)
                    for i in range(subscribers)]
            for s in subs:
                wait_file(s.ready_file, 30, s)
            self.hold_idle(addrs["listen"], idle, duration)
            cpu0 = cpu_seconds(server.pid)
            gen = self.loadgen(addrs["listen"], conns, rate, duration, per_send=per_send,
                               start_delay=self.args.start_delay if rate else 0)
            sent = gen.wait_line("done", duration + 150)
            results = [s.wait_line("done", 150) for s in subs]
            cpu = cpu_seconds(server.pid) - cpu0
        finally:
            Proc.stop_all()
        return summarize("relay" if relay else f"fanin/{poller}", sent, results, cpu,
                         results[0]["events"] if results else 0)

    def run_group(self, conns, duration, members, poller="epoll"):
        """One group of `members` subscriber processes reading `conns` connections at
        max rate. Members do not know how many connections they get: the run ends
        when the server's group holds nothing more (every connection closed and
        routed, nothing queued), then each member is stopped and reports."""
        server, addrs = self.start_fanin(poller)
        pb, stub, channel = self.stub(addrs["grpc"])
        try:
            progress = [self.path(f"member{i}.progress") for i in range(members)]
            subs = [self.subscriber(addrs["grpc"], 0, name=f"member{i}", group="bench",
                                    progress=progress[i])
                    for i in range(members)]
            for s in subs:
                wait_file(s.ready_file, 30, s)
            cpu0 = cpu_seconds(server.pid)
            gen = self.loadgen(addrs["listen"], conns, 0, duration)
            sent = gen.wait_line("done", duration + 150)
            deadline = time.monotonic() + 150
            while True:
                g = stub.ListGroups(pb.ListGroupsRequest(group="bench"), timeout=10).groups[0]
                delivered = sum(m.delivered_events for m in g.members)
                if g.connections == 0 and g.queued_events == 0 and delivered > 0:
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"group not drained: {g}")
                time.sleep(0.05)
            cpu = cpu_seconds(server.pid) - cpu0
            # What the server wrote may still be on its way to the members: each is
            # stopped once they have read as many events as the server wrote to them.
            wait_members_read(progress, delivered)
            for s in subs:
                s.p.send_signal(signal.SIGTERM)
            results = [s.wait_line("done", 60) for s in subs]
        finally:
            channel.close()
            Proc.stop_all()
        total = sum(r["messages"] for r in results)
        span = max(r["elapsed_s"] for r in results)
        r = summarize(f"group/{members}", sent, results, cpu, sum(x["events"] for x in results))
        r["messages_per_s"] = total / span if span > 0 else 0
        r["lost"] = sent["sent_messages"] - total
        r["closed"] = sum(x["closed"] for x in results)
        r["complete"] = r["closed"] == conns
        r["per_member"] = [x["closed"] for x in results]
        r["cpu_us_per_message"] = cpu * 1e6 / max(1, total)
        r["ok"] = ok(r)
        return r

    def run_system(self, system, conns, rate, duration, **kw):
        if system == "floor":
            kw.pop("subscribers", None)
            kw.pop("py", None)
            kw.pop("poller", None)
            return self.run_floor(conns, rate, duration, **kw)
        if system == "ceiling":
            kw.pop("poller", None)
            # In rate mode the ceiling paces each stream at the load generator's rate.
            return self.run_ceiling(conns, rate, duration, **kw)
        if system == "relay":
            kw.pop("poller", None)
            return self.run_fanin(conns, rate, duration, relay=True, **kw)
        return self.run_fanin(conns, rate, duration, **kw)


def summarize(system, sent, subs, cpu, events):
    """One run's figures; per-subscriber figures are reduced to their median."""
    msgs = [s["messages"] for s in subs]
    r = {
        "system": system,
        "sent": sent["sent_messages"],
        "sent_per_s": sent.get("sent_per_s", 0),
        "loadgen_cpu_s": sent.get("cpu_s", 0),
        "send_s": sent.get("send_s", 0),
        "failed_connections": sent.get("failed_connections", 0),
        "messages_per_s": statistics.median(s["messages_per_s"] for s in subs),
        "min_sub_messages_per_s": min(s["messages_per_s"] for s in subs),
        "p50_us": statistics.median(s["p50_us"] for s in subs),
        "p99_us": statistics.median(s["p99_us"] for s in subs),
        "p999_us": statistics.median(s["p999_us"] for s in subs),
        "errors": sum(s["errors"] for s in subs),
        "first_error": next((s["first_error"] for s in subs if s["first_error"]), ""),
        "lost": sum(max(0, sent["sent_messages"] - m) for m in msgs),
        "gap_lost": sum(s.get("gap_lost", 0) for s in subs),
        "complete": all(s.get("complete", True) for s in subs),
        "rejected": max((s.get("rejected", 0) for s in subs), default=0),
        "subscribers": len(subs),
        "cpu_s": cpu,
        "events": events,
        "cpu_us_per_event": cpu * 1e6 / events if events else 0,
        "cpu_us_per_message": cpu * 1e6 / max(1, msgs[0] if msgs else 1),
        # All subscriber processes together (C++ subscribers report it).
        "sub_cpu_s": sum(s.get("cpu_s", 0) for s in subs),
        "batches": subs[0].get("batches", subs[0].get("reads", 0)),
    }
    r["ok"] = ok(r)
    return r


def ok(r):
    return (r["errors"] == 0 and r["lost"] == 0 and r["gap_lost"] == 0
            and r["complete"] and r["failed_connections"] == 0)


# ---------------------------------------------------------------- reporting

def med(runs, key):
    vals = [r[key] for r in runs]
    return statistics.median(vals), min(vals), max(vals)


def fmt(v, digits=0):
    if v >= 1e6 and digits == 0:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4 and digits == 0:
        return f"{v / 1e3:.0f}k"
    return f"{v:.{digits}f}"


def fmt_range(runs, key, digits=0):
    m, lo, hi = med(runs, key)
    if len(runs) == 1:
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def check_text(runs):
    bad = [r for r in runs if not r["ok"]]
    if not bad:
        return "ok"
    r = bad[0]
    why = []
    if r["lost"]:
        why.append(f"lost {r['lost']}")
    if r["errors"]:
        why.append(f"{r['errors']} seq errors: {r['first_error']}")
    if r["gap_lost"]:
        why.append(f"gap lost {r['gap_lost']}")
    if not r["complete"]:
        why.append("incomplete")
    if r["failed_connections"]:
        why.append(f"{r['failed_connections']} conns failed")
    return f"FAIL in {len(bad)}/{len(runs)} runs: " + "; ".join(why)


class Report:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.lines = []
        self.raw = {}

    def add(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    def save(self, name):
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"{name}.md"), "w") as f:
            f.write("\n".join(self.lines) + "\n")
        with open(os.path.join(self.out_dir, f"{name}.json"), "w") as f:
            json.dump(self.raw, f, indent=1)


def machine_text():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, shared and "
            f"noisy; load average at start {load[0]:.1f}")


def gnuplot(script):
    if not shutil.which("gnuplot"):
        print("gnuplot missing: no plot", file=sys.stderr)
        return
    subprocess.run(["gnuplot"], input=script, text=True, check=False, timeout=60)


# ---------------------------------------------------------------- scenarios

def repeat(h, n, system, conns, rate, duration, **kw):
    runs = []
    for i in range(n):
        try:
            r = h.run_system(system, conns, rate, duration, **kw)
            runs.append(r)
            if not r["ok"]:
                h.failed_runs += 1
                print(f"  {system} run {i + 1} failed its checks: {check_text([r])}; "
                      f"logs up to process {Proc.started} in {h.work}", file=sys.stderr,
                      flush=True)
        except HarnessError as e:
            h.failed_runs += 1
            print(f"  {system} run {i + 1}: {e}", file=sys.stderr, flush=True)
    return runs


def systems(h):
    """The baselines and fanin. The relay (relay.cc: an epoll loop that turns each
    read into an event and writes it to the gRPC stream, nothing else) is what the
    floor's socket hop and the ceiling's gRPC stream cost together: the fair
    baseline for latency, whose clock starts at the load generator's send as
    fanin's does (the ceiling's starts after its own wake-up)."""
    return ["floor", "ceiling", "relay"] + (["fanin"] if h.has_fanin() else [])


def scenario_throughput(h, rep, a):
    for per_send in (1, a.burst_messages):
        throughput_table(h, rep, a, per_send)
        rep.add()


def throughput_table(h, rep, a, per_send):
    conns, d = 1000, a.duration
    rep.add(f"### throughput: {conns} connections, {a.message_bytes}-byte messages, "
            f"{per_send} message(s) per send(), load generator as fast as possible for {d} s, "
            "1 lossless subscriber")
    rep.add()
    rep.add("| system | messages/s at subscriber | load generator sent/s | load generator "
            "CPU s / send s | CPU µs/event (server) | CPU µs/message (server) | subscriber "
            "CPU s | events | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    for run in range(a.runs):  # interleaved so drift in machine load hits all alike
        for s in systems(h):
            results.setdefault(s, []).extend(
                repeat(h, 1, s, conns, 0, d, per_send=per_send))
    for s, runs in results.items():
        if not runs:
            rep.add(f"| {s} | failed to run | | | | | | | |")
            continue
        gen = (f"{med(runs, 'loadgen_cpu_s')[0]:.2f} / {med(runs, 'send_s')[0]:.1f}"
               if s != "ceiling" else "n/a")
        rep.add(f"| {s} | {fmt_range(runs, 'messages_per_s')} | "
                f"{fmt_range(runs, 'sent_per_s')} | {gen} | "
                f"{fmt_range(runs, 'cpu_us_per_event', 2)} | "
                f"{fmt_range(runs, 'cpu_us_per_message', 2)} | "
                f"{'n/a' if s == 'floor' else format(med(runs, 'sub_cpu_s')[0], '.2f')} | "
                f"{fmt(med(runs, 'events')[0])} | {check_text(runs)} |")
    rep.raw[f"throughput/{per_send}"] = results
    ratio_lines(rep, results, "messages_per_s", 0.9, "floor")


def ratio_lines(rep, results, key, target, vs):
    rep.add()
    fan = results.get("fanin")
    if not fan:
        rep.add("fanin: not run (server not built or every run failed).")
        return
    for base in ("floor", "ceiling", "relay"):
        if results.get(base):
            ratio = med(fan, key)[0] / med(results[base], key)[0]
            tgt = f" (target ≥ {target}x: {'met' if ratio >= target else 'MISSED'})" \
                if base == vs else ""
            rep.add(f"- fanin / {base}: {ratio:.2f}x{tgt}")
    rep.add(f"- fanin zero loss, in order: {check_text(fan)}")


def scenario_fanout(h, rep, a):
    conns, d, n = 1000, a.duration, 10
    rep.add(f"### fanout: {conns} connections, max rate for {d} s, 1 vs {n} lossless "
            "subscribers (each a separate process)")
    rep.add()
    rep.add("| system | subscribers | messages/s per subscriber (median) | slowest "
            "subscriber | total messages/s | CPU µs/event (server) | CPU s of all "
            "subscribers / of the load generator | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    for run in range(a.runs):
        for s in ["ceiling"] + (["fanin"] if h.has_fanin() else []):
            for k in (1, n):
                results.setdefault(f"{s}/{k}", []).extend(
                    repeat(h, 1, s, conns, 0, d, subscribers=k))
    for key, runs in results.items():
        s, k = key.split("/")
        if not runs:
            rep.add(f"| {s} | {k} | failed to run | | | | | |")
            continue
        total = statistics.median(r["messages_per_s"] * r["subscribers"] for r in runs)
        gen = (f"{med(runs, 'loadgen_cpu_s')[0]:.2f}" if s != "ceiling" else "n/a")
        rep.add(f"| {s} | {k} | {fmt_range(runs, 'messages_per_s')} | "
                f"{fmt_range(runs, 'min_sub_messages_per_s')} | {fmt(total)} | "
                f"{fmt_range(runs, 'cpu_us_per_event', 2)} | "
                f"{med(runs, 'sub_cpu_s')[0]:.2f} / {gen} | {check_text(runs)} |")
    rep.raw["fanout"] = results
    rep.add()
    for s in ("ceiling", "fanin"):
        one, ten = results.get(f"{s}/1"), results.get(f"{s}/{n}")
        if one and ten:
            ratio = med(ten, "min_sub_messages_per_s")[0] / med(one, "messages_per_s")[0]
            tgt = (f" (target ≥ 0.8x: {'met' if ratio >= 0.8 else 'MISSED'})"
                   if s == "fanin" else "")
            rep.add(f"- {s}: slowest of {n} subscribers / single subscriber = "
                    f"{ratio:.2f}x{tgt}")


def scenario_groups(h, rep, a):
    conns, d = 1000, a.duration
    rep.add(f"### groups: {conns} connections, max rate for {d} s, one plain lossless subscriber "
            "against a worker-pool group (SubscribeRequest.group) of 1, 2 and 4 "
            "members (lossless too), each a process of its own; interleaved runs")
    rep.add()
    rep.add("| subscribers | messages/s (all members) | CPU µs/event (server) | CPU µs/message "
            "(server) | connections per member | CPU s of all subscribers / of the load "
            "generator | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- |")
    if not h.has_fanin():
        rep.add("fanin: not built.")
        return
    results = {}
    for run in range(a.runs):
        for k in (0, 1, 2, 4):
            key = "plain" if k == 0 else f"group of {k}"
            try:
                r = (h.run_fanin(conns, 0, d) if k == 0 else h.run_group(conns, d, k))
                if not r["ok"]:
                    h.failed_runs += 1
                    print(f"  {key} run {run + 1} failed its checks: {check_text([r])}",
                          file=sys.stderr, flush=True)
                results.setdefault(key, []).append(r)
            except HarnessError as e:
                h.failed_runs += 1
                print(f"  {key} run {run + 1}: {e}", file=sys.stderr, flush=True)
    for key, runs in results.items():
        split = " / ".join(str(n) for n in runs[0].get("per_member", [conns]))
        rep.add(f"| {key} | {fmt_range(runs, 'messages_per_s')} | "
                f"{fmt_range(runs, 'cpu_us_per_event', 2)} | "
                f"{fmt_range(runs, 'cpu_us_per_message', 2)} | {split} | "
                f"{med(runs, 'sub_cpu_s')[0]:.2f} / {med(runs, 'loadgen_cpu_s')[0]:.2f} | "
                f"{check_text(runs)} |")
    rep.raw["groups"] = results
    rep.add()
    plain, four = results.get("plain"), results.get("group of 4")
    if plain and four:
        ratio = med(four, "cpu_us_per_event")[0] / med(plain, "cpu_us_per_event")[0]
        rep.add(f"- server CPU per event, group of 4 / one plain subscriber: {ratio:.2f}x "
                f"(target ≤ 1.1x: {'met' if ratio <= 1.1 else 'MISSED'})")


def steal_ticks():
    """CPU time the hypervisor gave other guests (all CPUs, /proc/stat `steal`, in
    USER_HZ ticks) and the total, so a run can tell how much of the machine it lost."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def pooled_quantiles(runs, qs):
    """Quantiles (µs) of every message of the runs together, from each run's CDF file
    weighted by its message count: a steadier figure than the median of the runs'
    p99s, which flips between runs a stall of the shared machine hit and runs it
    did not. None when a run has no CDF."""
    counts = collections.Counter()
    for r in runs:
        path = r.get("cdf")
        n = r["sent"] - r["lost"]
        if not path or not os.path.exists(path) or n <= 0:
            return None
        prev = 0.0
        for line in open(path):
            parts = line.split()
            if len(parts) != 2:
                continue
            value, cum = float(parts[0]), float(parts[1])
            counts[value] += (cum - prev) * n
            prev = cum
    total = sum(counts.values())
    if total <= 0:
        return None
    out, values = [], sorted(counts)
    for q in qs:
        seen, i = 0.0, 0
        for i, v in enumerate(values):
            seen += counts[v]
            if seen >= q * total:
                break
        out.append(values[i])
    return out


def scenario_latency(h, rep, a):
    conns, d = 1000, a.duration
    rep.add(f"### latency: {conns} connections, fixed total rates, {d} s each, socket "
            "write (or ceiling batch build) to subscriber receipt; every process "
            + (f"SCHED_FIFO {a.latency_rt}" if a.latency_rt else "normally scheduled"))
    rep.add()
    rep.add("| rate msg/s | system | p50 µs | p99 µs | p99.9 µs | pooled p50 / p99 µs | "
            "messages/s | CPU µs/event | steal % (runs redone) | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    cdfs = {}
    for rate in a.rates:
        for run in range(a.runs):
            for s in systems(h):
                cdf = os.path.join(h.work, f"cdf-{s}-{rate}-{run}.txt")
                # A run the hypervisor took more than --max_steal_pct of the CPUs
                # from (other guests of the host: stalls of milliseconds that hit
                # every system alike and no in-guest priority avoids) is run again,
                # at most --steal_retries times; the table says how many were.
                for attempt in range(a.steal_retries + 1):
                    st0, tot0 = steal_ticks()
                    Proc.rt = a.latency_rt
                    try:
                        got = repeat(h, 1, s, conns, rate, d, cdf=cdf)
                    finally:
                        Proc.rt = 0
                    st1, tot1 = steal_ticks()
                    steal = 100.0 * (st1 - st0) / max(1, tot1 - tot0)
                    if got:
                        got[0]["cdf"] = cdf
                        got[0]["steal_pct"] = steal
                        got[0]["retried"] = attempt
                    if not got or steal <= a.max_steal_pct or attempt == a.steal_retries:
                        break
                results.setdefault(f"{rate}/{s}", []).extend(got)
        for s in systems(h):
            runs = results.get(f"{rate}/{s}", [])
            if not runs:
                rep.add(f"| {rate} | {s} | failed to run | | | | | | | |")
                continue
            pooled = pooled_quantiles(runs, (0.5, 0.99))
            pooled_text = f"{pooled[0]:.0f} / {pooled[1]:.0f}" if pooled else "n/a"
            for r in runs:
                r["pooled_p50_us"], r["pooled_p99_us"] = pooled or (None, None)
            rep.add(f"| {rate} | {s} | {fmt_range(runs, 'p50_us', 0)} | "
                    f"{fmt_range(runs, 'p99_us', 0)} | {fmt_range(runs, 'p999_us', 0)} | "
                    f"{pooled_text} | {fmt_range(runs, 'messages_per_s')} | "
                    f"{fmt_range(runs, 'cpu_us_per_event', 2)} | "
                    f"{fmt_range(runs, 'steal_pct', 1)} ({sum(r['retried'] for r in runs)}) | "
                    f"{check_text(runs)} |")
            # The run whose p99 is the median one stands for the system in the plot.
            ordered = sorted(runs, key=lambda r: r["p99_us"])
            cdfs[(rate, s)] = ordered[len(ordered) // 2]["cdf"]
    rep.raw["latency"] = results
    rep.add()
    for rate in a.rates:
        runs = results.get(f"{rate}/fanin")
        if runs:
            p50, p99 = med(runs, "p50_us")[0], med(runs, "p99_us")[0]
            met = p50 <= 300 and p99 <= 1000
            rep.add(f"- fanin at {rate}/s: p50 {p50:.0f} µs, p99 {p99:.0f} µs (target p50 ≤ "
                    f"300 µs, p99 ≤ 1000 µs: {'met' if met else 'MISSED'})")
            ceiling = results.get(f"{rate}/ceiling")
            floor = results.get(f"{rate}/floor")
            if ceiling:
                c50 = med(ceiling, "p50_us")[0]
                line = (f"  - p50 / the ceiling's: {p50 / c50:.2f}x (issue 16: ≤ 1.2x: "
                        f"{'met' if p50 <= 1.2 * c50 else 'MISSED'})")
                if floor:
                    f50 = med(floor, "p50_us")[0]
                    line += (f"; / (floor + ceiling), the socket hop the ceiling's clock "
                             f"leaves out added back: {p50 / (f50 + c50):.2f}x")
                rep.add(line)
            relay = results.get(f"{rate}/relay")
            if relay:
                r50, r99 = med(relay, "p50_us")[0], med(relay, "p99_us")[0]
                rep.add(f"  - / the relay's (socket read to gRPC write, nothing else): "
                        f"p50 {p50 / r50:.2f}x ({'≤' if p50 <= 1.2 * r50 else '>'} 1.2x), "
                        f"p99 {p99 / r99:.2f}x")
    for rate in a.rates:
        png = os.path.join(a.plots, f"latency_{rate}.png")
        plots = [f"'{cdfs[(rate, s)]}' using 1:2 with steps lw 2 title '{s}'"
                 for s in systems(h) if (rate, s) in cdfs]
        if not plots:
            continue
        gnuplot(f"""set terminal pngcairo size 900,560 noenhanced
set output '{png}'
set title 'Latency CDF at {rate} messages/s, {conns} connections, 64-byte messages (median run)'
set logscale x
set xlabel 'socket write to subscriber receipt (µs, log scale)'
set ylabel 'fraction of messages'
set key bottom right
set grid
plot {", ".join(plots)}
""")
        rep.add(f"- plot: {os.path.relpath(png, os.path.dirname(HERE))}")


def scenario_scale(h, rep, a):
    conns, burst = a.scale_connections, a.burst_connections
    rep.add(f"### scale: {conns} idle connections held (epoll); RSS from /proc/<pid>/status; "
            f"accept rate while the load generator connects, and draining a backlog of "
            f"{burst} connections queued while the server was stopped (SIGSTOP)")
    rep.add()
    rep.add("| system | held | RSS growth KiB | bytes per connection | accept rate under "
            "load conn/s | load generator connect rate conn/s | backlog drain conn/s | "
            "check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    for run in range(a.runs):
        for s in ["floor"] + (["fanin"] if h.has_fanin() else []):
            fn = scale_floor if s == "floor" else scale_fanin
            try:
                r = fn(h, conns)
                r["drain_per_s"] = fn(h, burst, burst=True)["accept_per_s"]
                results.setdefault(s, []).append(r)
            except HarnessError as e:
                print(f"  scale {s} run {run + 1}: {e}", file=sys.stderr, flush=True)
    for s, runs in results.items():
        ok = all(r["held"] == conns for r in runs)
        rep.add(f"| {s} | {fmt_range(runs, 'held')} | {fmt_range(runs, 'rss_kib')} | "
                f"{fmt_range(runs, 'bytes_per_conn')} | {fmt_range(runs, 'accept_per_s')} | "
                f"{fmt_range(runs, 'connect_per_s')} | {fmt_range(runs, 'drain_per_s')} | "
                f"{'ok' if ok else 'FAIL: not every connection held'} |")
    rep.raw["scale"] = results
    fan = results.get("fanin")
    rep.add()
    if fan:
        b = med(fan, "bytes_per_conn")[0]
        acc = max(med(fan, "accept_per_s")[0], med(fan, "drain_per_s")[0])
        rep.add(f"- fanin: {b:.0f} B per idle connection (target ≤ 2048: "
                f"{'met' if b <= 2048 else 'MISSED'}); accept rate {acc:.0f}/s, the better "
                f"of the two measures (target ≥ 20000: {'met' if acc >= 20000 else 'MISSED'})")
    else:
        rep.add("fanin: not run (server not built or every run failed).")


def settle_rss(pid):
    """RSS once it stops moving (at most 2 s), so lazily touched pages count."""
    last = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.1)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def connect_held(h, proc, target, conns, burst):
    """Opens `conns` idle connections; with burst, while `proc` is stopped."""
    if burst:
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        gen = h.loadgen(target, conns, 0, 0, hold=120)
        connected = gen.wait_line("connected", 60)
    finally:
        if burst:
            os.kill(proc.pid, signal.SIGCONT)
    if connected["connected"] != conns:
        raise HarnessError(f"only {connected['connected']} of {conns} connected")
    if burst and connected["max_connect_ms"] > 900:
        print(f"  warning: a connect took {connected['max_connect_ms']:.0f} ms (SYN retry: "
              "backlog overflowed)", file=sys.stderr)
    return gen, connected


def scale_floor(h, conns, burst=False):
    ready = h.path("floor.ready")
    floor = Proc("floor", [h.exe("floor"), f"--ready_file={ready}",
                           f"--expect_connections={conns}", "--timeout=150"], h.work)
    try:
        target = wait_file(ready, 10, floor).split()[-1]
        before = settle_rss(floor.pid)
        gen, connected = connect_held(h, floor, target, conns, burst)
        floor.wait_line("all_accepted", 60)
        after = settle_rss(floor.pid)
        gen.stop()
        done = floor.wait_line("done", 60)
    finally:
        Proc.stop_all()
    return {"held": done["accepted"], "rss_kib": after - before,
            "bytes_per_conn": (after - before) * 1024 / conns,
            "accept_per_s": done["accept_per_s"],
            "connect_per_s": connected["connected"] / max(1e-9, connected["connect_s"])}


def scale_fanin(h, conns, burst=False):
    server, addrs = h.start_fanin("epoll")
    try:
        pb, stub, channel = h.stub(addrs["grpc"])
        stub.GetStats(pb.GetStatsRequest(), timeout=10)  # gRPC warmed up before the baseline
        before = settle_rss(server.pid)
        gen, connected = connect_held(h, server, addrs["listen"], conns, burst)
        deadline = time.monotonic() + 60
        while True:
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
            if stats.connections_open >= conns or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        after = settle_rss(server.pid)
        opened = []
        token = ""
        for _ in range(conns // 1000 + 10):
            page = stub.ListConnections(
                pb.ListConnectionsRequest(page_size=1000, page_token=token), timeout=10)
            opened.extend(c.opened_unix_nano for c in page.connections)
            token = page.next_page_token
            if not token:
                break
        channel.close()
        gen.stop()
    finally:
        Proc.stop_all()
    span = (max(opened) - min(opened)) / 1e9 if len(opened) > 1 else 0
    return {"held": stats.connections_open, "rss_kib": after - before,
            "bytes_per_conn": (after - before) * 1024 / conns,
            "accept_per_s": (len(opened) - 1) / span if span > 0 else 0,
            "connect_per_s": connected["connected"] / max(1e-9, connected["connect_s"])}


def scenario_pollers(h, rep, a):
    d = a.poller_duration
    pollers = ["epoll", "epoll-edge", "poll", "select"]
    rep.add(f"### pollers: max rate for {d} s, 1 lossless subscriber, messages/s at the "
            f"subscriber; every connection sending, then only {a.poller_active} of them")
    rep.add()
    rep.add("| connections | floor | " + " | ".join(f"fanin {p}" for p in pollers) + " |")
    rep.add("| --- | --- | " + " | ".join("---" for _ in pollers) + " |")
    results = {}
    for conns in a.poller_connections:
        for run in range(a.runs):
            results.setdefault(f"{conns}/floor", []).extend(
                repeat(h, 1, "floor", conns, 0, d))
            if h.has_fanin():
                for p in pollers:
                    results.setdefault(f"{conns}/{p}", []).extend(
                        repeat(h, 1, "fanin", conns, 0, d, poller=p))
        cells = []
        for p in ["floor"] + pollers:
            runs = results.get(f"{conns}/{p}", [])
            if not runs:
                cells.append("not run")
            elif any(r["rejected"] for r in runs) or any(r["failed_connections"] for r in runs):
                cells.append(f"{fmt(med(runs, 'messages_per_s')[0])}, "
                             f"{max(r['rejected'] for r in runs)} rejected (FD_SETSIZE)")
            else:
                cells.append(f"{fmt_range(runs, 'messages_per_s')}"
                             f"{'' if all(r['ok'] for r in runs) else ' ' + check_text(runs)}"
                             f", {fmt(med(runs, 'cpu_us_per_event')[0], 2)} µs/ev")
        rep.add(f"| {conns} | " + " | ".join(cells) + " |")
    # Mostly idle sets: every wait of poll and select walks all the fds, epoll's
    # returns only the ready ones.
    active = a.poller_active
    for conns in a.poller_connections:
        if conns <= active:
            continue
        key = f"{conns}/{active}"
        for run in range(a.runs):
            results.setdefault(f"{key}/floor", []).extend(
                repeat(h, 1, "floor", active, 0, d, idle=conns - active))
            if h.has_fanin():
                for p in pollers:
                    results.setdefault(f"{key}/{p}", []).extend(
                        repeat(h, 1, "fanin", active, 0, d, poller=p,
                               idle=conns - active))
        cells = []
        for p in ["floor"] + pollers:
            runs = results.get(f"{key}/{p}", [])
            if not runs:
                cells.append("not run")
            else:
                cells.append(f"{fmt_range(runs, 'messages_per_s')}"
                             f"{'' if all(r['ok'] for r in runs) else ' ' + check_text(runs)}"
                             f", {fmt(med(runs, 'cpu_us_per_event')[0], 2)} µs/ev")
        rep.add(f"| {conns}, {active} sending | " + " | ".join(cells) + " |")
    rep.raw["pollers"] = results
    poller_plots(results, a.poller_connections, pollers, a.plots, h.work, a.runs)
    rep.add()
    rep.add(f"- plots: {os.path.relpath(a.plots, os.path.dirname(HERE))}/"
            "throughput_vs_connections.png, cpu_per_event_vs_connections.png")


def poller_plots(results, connections, pollers, plots, work, runs_per_point):
    """messages/s and server CPU per event against connections, one line each."""
    for key, png_name, ylabel in (
            ("messages_per_s", "throughput_vs_connections.png", "messages/s at the subscriber"),
            ("cpu_us_per_event", "cpu_per_event_vs_connections.png",
             "receiver CPU µs per event (floor: per message)")):
        poller_plot(results, connections, pollers, plots, work, runs_per_point, key,
                    png_name, ylabel)


def poller_plot(results, connections, pollers, plots, work, runs_per_point, key, png_name,
                ylabel):
    png = os.path.join(plots, png_name)
    data = os.path.join(work, f"{key}.dat")
    with open(data, "w") as f:
        for conns in connections:
            row = [str(conns)]
            for p in ["floor"] + pollers:
                runs = [r for r in results.get(f"{conns}/{p}", []) if not r["rejected"]]
                row.append(f"{med(runs, key)[0]:.3f}" if runs else "NaN")
            f.write(" ".join(row) + "\n")
    cols = ["floor"] + [f"fanin {p}" for p in pollers]
    gnuplot(f"""set terminal pngcairo size 900,560 noenhanced
set output '{png}'
set title '{ylabel.split(" (")[0]}, 64-byte messages, max rate, 1 lossless subscriber (median of {runs_per_point})'
set logscale x
set xlabel 'connections (log scale)'
set ylabel '{ylabel}'
set yrange [0:*]
set key outside right
set grid
plot {", ".join(f"'{data}' using 1:{i + 2} with linespoints lw 2 title '{c}'"
                for i, c in enumerate(cols))}
""")


def scenario_python(h, rep, a):
    conns, d = 1000, a.duration
    rep.add(f"### python: python3-grpcio subscriber, {conns} connections, {d} s")
    rep.add()
    rep.add("| load | system | messages/s | p50 µs | p99 µs | p99.9 µs | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    loads = [("10000/s", 10000), ("max", 0)]
    for label, rate in loads:
        for run in range(a.runs):
            for s in ["ceiling"] + (["fanin"] if h.has_fanin() else []):
                results.setdefault(f"{label}/{s}", []).extend(
                    repeat(h, 1, s, conns, rate, d, py=True))
        for s in ["ceiling", "fanin"]:
            runs = results.get(f"{label}/{s}")
            if runs:
                rep.add(f"| {label} | {s} | {fmt_range(runs, 'messages_per_s')} | "
                        f"{fmt_range(runs, 'p50_us')} | {fmt_range(runs, 'p99_us')} | "
                        f"{fmt_range(runs, 'p999_us')} | {check_text(runs)} |")
    rep.raw["python"] = results


def scenario_smoke(h, rep, a):
    """Seconds-long self-check: every piece runs and the counts agree."""
    conns, rate, d = 50, 2000, 1
    failures = []
    floor = h.run_floor(conns, rate, d)
    rep.add(f"floor: sent {floor['sent']} got {floor['sent'] - floor['lost']} "
            f"check {check_text([floor])}")
    if not floor["ok"] or floor["sent"] < rate * d * 0.9:
        failures.append("floor")
    for py in (False, True):
        c = h.run_ceiling(conns, 0, 0.5, py=py)
        rep.add(f"ceiling ({'python' if py else 'C++'} subscriber): {c['events']} events "
                f"check {check_text([c])}")
        if not c["ok"] or c["events"] == 0:
            failures.append(f"ceiling/{'py' if py else 'cc'}")
    c = h.run_ceiling(conns, rate, d)
    rep.add(f"ceiling paced: {c['events']} events, p50 {c['p50_us']:.0f} µs")
    if not c["ok"] or abs(c["events"] - rate * d) > rate * d * 0.1:
        failures.append("ceiling/paced")
    r = h.run_fanin(conns, rate, d, relay=True)
    rep.add(f"relay: sent {r['sent']} check {check_text([r])}")
    if not r["ok"] or r["sent"] < rate * d * 0.9:
        failures.append("relay")
    if h.has_fanin():
        f = h.run_fanin(conns, rate, d)
        rep.add(f"fanin: sent {f['sent']} check {check_text([f])}")
        if not f["ok"] or f["sent"] < rate * d * 0.9:
            failures.append("fanin")
        g = h.run_group(conns, d, 2)
        rep.add(f"group of 2: sent {g['sent']}, per member {g['per_member']} "
                f"check {check_text([g])}")
        if not g["ok"] or sorted(g["per_member"]) != [conns // 2, conns // 2]:
            failures.append("group")
    if failures:
        raise HarnessError("smoke failed: " + ", ".join(failures))


SCENARIOS = {
    "throughput": scenario_throughput,
    "fanout": scenario_fanout,
    "latency": scenario_latency,
    "scale": scenario_scale,
    "pollers": scenario_pollers,
    "python": scenario_python,
    "groups": scenario_groups,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=list(SCENARIOS) + ["all", "smoke"])
    p.add_argument("--bin_dir", required=True, help="bazel-bin of a -c opt build")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=4, help="seconds of load per run")
    p.add_argument("--poller_duration", type=float, default=3)
    p.add_argument("--message_bytes", type=int, default=64)
    p.add_argument("--rates", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--poller_connections", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--poller_active", type=int, default=100,
                   help="pollers: also run each size with only this many connections "
                        "sending and the rest idle")
    p.add_argument("--scale_connections", type=int, default=19000)
    p.add_argument("--burst_connections", type=int, default=4000,
                   help="queued while the server is stopped; below the 4096 backlog")
    p.add_argument("--ceiling_batch", type=int, default=64)
    p.add_argument("--start_delay", type=float, default=0.5,
                   help="fixed-rate runs: seconds between connecting and sending, the same "
                        "for every system, so latency is of the steady state and not of "
                        "the 1,000-connection burst (0 measures the burst too)")
    p.add_argument("--burst_messages", type=int, default=16,
                   help="messages per send() in the throughput scenario's second table")
    p.add_argument("--max_batch_events", type=int, default=0,
                   help="SubscribeRequest.max_batch_events (0: server default)")
    p.add_argument("--fanin_flag", action="append", default=[],
                   help="extra fanin_server flag, repeatable")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--plots", default=os.path.join(HERE, "plots"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--latency_rt", type=int, default=10,
                   help="SCHED_FIFO priority of every process in the fixed-rate latency runs "
                        "(0 = normal scheduling). They use little CPU; without it, compile "
                        "jobs of a shared machine add their time slices (ms) to everyone's "
                        "p99, the floor's included")
    p.add_argument("--max_steal_pct", type=float, default=100,
                   help="latency runs: redo a run whose CPU time stolen by the hypervisor "
                        "(/proc/stat steal, share of all CPUs) exceeds this percentage")
    p.add_argument("--steal_retries", type=int, default=2,
                   help="latency runs: at most this many redos per run (--max_steal_pct)")
    p.add_argument("--nice", type=int, default=0,
                   help="nice increment for every process started (negative needs root): "
                        "the same for all systems, it only keeps unrelated jobs from "
                        "preempting the measurement")
    a = p.parse_args()
    if a.nice and os.getsid(0) != os.getpid():
        # With sched_autogroup_enabled each session is one scheduling group and nice
        # only ranks tasks inside it: every compile job of a shared machine (each its
        # own session) would get as much CPU as this whole harness. So the driver
        # becomes a session of its own, which every process it starts shares (as on a
        # machine of its own), and gives that group the nice.
        os.execvp("setsid", ["setsid", "--wait", sys.executable] + sys.argv)
    if a.nice:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(a.nice))
        except OSError as e:
            print(f"cannot set the autogroup's nice: {e}", file=sys.stderr)
    Proc.nice = a.nice
    os.makedirs(a.plots, exist_ok=True)
    h = Harness(a)
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    rep = Report(a.out)
    rep.add(f"Machine: {machine_text()}. Runs per figure: {a.runs} (median, min–max). "
            f"Every process at nice {a.nice}.")
    if not h.has_fanin():
        rep.add(f"fanin_server not found at {h.fanin_bin}: baselines only.")
    rep.add()
    status = 0
    try:
        for name in names if a.scenario != "smoke" else ["smoke"]:
            start = time.monotonic()
            try:
                (scenario_smoke if name == "smoke" else SCENARIOS[name])(h, rep, a)
            except HarnessError as e:
                rep.add(f"{name}: ERROR {e}")
                status = 1
            rep.add(f"({name}: {time.monotonic() - start:.0f} s)")
            rep.add()
    finally:
        Proc.stop_all()
        if a.scenario != "smoke":
            rep.save(a.scenario)
        if a.keep or h.failed_runs:
            print(f"work directory kept: {h.work}", file=sys.stderr)
        else:
            shutil.rmtree(h.work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
