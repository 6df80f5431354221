#!/usr/bin/python3
"""Cluster-mode benchmark: fanin nodes on one nats-server, beside standalone fanin
and bare libnats programs under the same load, in one run.

Usually started through run.sh, which builds everything with -c opt first:

    tests/bench/cluster/run.sh [--rounds=3] [--storage=file] [--nice=-10]

Parts (ingest, latency and write by default; groups only when asked, e.g.
--parts=groups or --parts=ingest,latency,write,groups):

- ingest: 1,000 connections x 64-byte messages as fast as the load generator can
  (tests/bench/e2e/loadgen) into standalone fanin, into one cluster node, and into
  three cluster nodes (the connections spread over them), each time to one lossless
  C++ subscriber (tests/bench/e2e/subscriber) on the (first) node; beside the
  JetStream floor (jetstream_floor: js_PublishAsync of the cluster round's event
  count, one message per event and packed as many per message as fanin packed;
  and fanin's own synchronous publish protocol without fanin). Rounds alternate
  the systems; figures are medians over the rounds.
- latency: 1,000 connections at --rate messages/s into node A of two; one
  subscriber on node B (the figure) and one on A, beside standalone fanin under
  the same load. Every process SCHED_FIFO --latency_rt, nats-server included.
- write: cross_write on two nodes: Write on node B for node A's connection until
  the bytes reach the raw client, the same Write on A, and the bare NATS
  request-reply round trip, interleaved in one process.
- groups (not in the default parts: about 25 s per round): 999 connections
  spread over three nodes at max rate, (a) one plain lossless subscriber on each
  node (each sees every event) against (b) one lossless worker-pool group "bench"
  with one member on each node (the members split the connections); rounds
  alternate the two. A group run ends as the e2e groups scenario does: when
  ListGroups on every node shows the group holding no connection and nothing
  queued. Figures: messages/s of the three subscribers or members together, the
  three nodes' CPU per event, connections per member, and the checks (every
  message sent delivered once across the members, each connection whole and in
  order on one member). Run it with
      tests/bench/cluster/run.sh --parts=groups --rounds=3 --nice=-10

--fanin_b=PATH[=LABEL] runs every cluster measurement a second time with another
fanin_server binary, alternated with the built one (the A/B of a server change).

One nats-server (-js, a free port, its store in the work directory) serves the
whole run and is stopped at the end; every cluster round uses a cluster name of
its own (a fresh stream) and deletes its streams afterwards. Every wait is
bounded. A round that loses, duplicates or reorders anything is reported as
such, never dropped from the figures.
"""

import argparse
import importlib.util
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "e2e_run", os.path.join(HERE, "..", "e2e", "run.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
Proc, HarnessError, wait_file, cpu_seconds = (e2e.Proc, e2e.HarnessError, e2e.wait_file,
                                              e2e.cpu_seconds)
wait_members_read = e2e.wait_members_read


def nats_server_path():
    """Debian installs it in /usr/sbin, which a test's PATH may lack."""
    for path in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if path and os.access(path, os.X_OK):
            return path
    raise HarnessError("nats-server is not installed (apt-get install nats-server)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs, timeout=15):
    for p in procs:
        if p is not None:
            p.stop(timeout=timeout)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(v, digits=0):
    if v != v:  # NaN
        return "n/a"
    return e2e.fmt(v, digits)


def spread(vals, digits=0):
    """median (min–max)"""
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{fmt(median(vals), digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"


# ---------------------------------------------------------------- the broker

class Broker:
    """One nats-server with JetStream for the whole run."""

    def __init__(self, work):
        self.store = os.path.join(work, "js")
        for attempt in range(5):
            self.port = free_port()
            self.proc = Proc("nats-server", [nats_server_path(), "-js", "-a", "127.0.0.1", "-p",
                                             str(self.port), "-sd", self.store], work)
            Proc.live.remove(self.proc)  # not stopped by anyone's stop_all
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.p.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    time.sleep(0.05)
            self.proc.stop()
        raise HarnessError(f"nats-server did not start: {e2e.tail(self.proc.stderr_path)}")

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def realtime(self, prio):
        """Every thread of the broker to SCHED_FIFO prio (0: back to normal)."""
        policy = ["-f", str(prio)] if prio else ["-o", "0"]
        subprocess.run(["chrt", "-a"] + policy[:1] + ["-p", policy[1], str(self.pid)],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------- the harness

class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin_dir
        self.work = tempfile.mkdtemp(prefix="fanin-cluster-bench-")
        self.seq = 0
        self.loadgens = 0
        self.clusters = 0
        self.failed = 0
        self.broker = Broker(self.work)
        self.fanin = os.path.join(self.bin, "server", "fanin_server")
        # Cluster measurements run once per variant: (label, fanin_server binary).
        self.variants = [("", self.fanin)]
        if args.fanin_b:
            path, _, label = args.fanin_b.partition("=")
            self.variants.append((label or os.path.basename(path), path))

    def path(self, name):
        self.seq += 1
        return os.path.join(self.work, f"{self.seq:04d}-{name}")

    def exe(self, part, name):
        return os.path.join(self.bin, "tests", "bench", part, name)

    def new_cluster(self):
        self.clusters += 1
        return f"bench{self.clusters}"

    # -- processes

    def start_server(self, name, cluster=None, node=None, binary=None):
        ready = self.path(f"{name}.ready")
        argv = [binary or self.fanin, "--listen=default=127.0.0.1:0",
                "--grpc_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                f"--ready_file={ready}"]
        if cluster:
            argv += [f"--cluster_nats={self.broker.url}", f"--cluster_name={cluster}",
                     f"--node_name={node}", f"--cluster_storage={self.a.storage}"]
        argv += list(self.a.fanin_flag)
        proc = Proc(name, argv, self.work)
        text = wait_file(ready, 60, proc)
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "grpc":
                proc.grpc = parts[1]
            elif parts and parts[0] == "listen":
                proc.listen = parts[-1]
        with open(proc.stderr_path) as f:
            m = re.search(r'metrics="?([0-9.:]+)', f.read())
        proc.metrics = m.group(1) if m else None
        return proc

    def subscriber(self, server, expect, name="sub", cdf=None, group="", progress=None):
        ready = self.path(f"{name}.ready")
        argv = [self.exe("e2e", "subscriber"), f"--server={server.grpc}",
                f"--expect_connections={expect}", "--message_bytes=64", "--timeout=150",
                f"--ready_file={ready}"]
        if cdf:
            argv.append(f"--latency_cdf={cdf}")
        if group:
            argv.append(f"--group={group}")
        if progress:
            argv.append(f"--progress_file={progress}")
        proc = Proc(name, argv, self.work)
        wait_file(ready, 30, proc)
        return proc

    def loadgen(self, server, conns, rate, index_base=0):
        self.loadgens += 1
        base = f"127.{100 + self.loadgens % 150}.{self.loadgens // 150 % 250}.1"
        argv = [self.exe("e2e", "loadgen"), f"--target={server.listen}",
                f"--connections={conns}", "--message_bytes=64", f"--rate={rate}",
                f"--duration={self.a.duration}", f"--source_base={base}",
                f"--source_count={max(1, min(conns // 20, 1000))}",
                f"--index_base={index_base}", f"--start_delay={self.a.start_delay}"]
        return Proc("loadgen", argv, self.work)

    def metrics(self, server):
        if not server.metrics:
            return {}
        try:
            with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
        return out

    def delete_cluster(self, cluster):
        names = f"{cluster}_events,KV_{cluster}_nodes,KV_{cluster}_ids"
        subprocess.run([self.exe("cluster", "jetstream_floor"), f"--nats={self.broker.url}",
                        f"--delete_streams={names}"], check=False, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stub(self, addr):
        """A python gRPC stub (//proto:fanin_py_grpc); only the groups part needs it."""
        proto = os.path.join(self.bin, "proto")
        if proto not in sys.path:
            sys.path.insert(0, proto)
        import grpc  # pylint: disable=import-outside-toplevel
        from fanin.v1 import fanin_pb2, fanin_pb2_grpc  # pylint: disable=import-outside-toplevel
        channel = grpc.insecure_channel(addr)
        return fanin_pb2, fanin_pb2_grpc.FanInStub(channel), channel

    # -- one groups run each

    def groups_run(self, grouped):
        """Three nodes, the connections spread over them at max rate; one plain
        subscriber per node (grouped False) or one member of group "bench" per node."""
        cluster = self.new_cluster()
        servers, subs, gens, channels = [], [], [], []
        conns = self.a.group_connections
        try:
            servers = [self.start_server(f"node{i}", cluster, f"n{i}") for i in range(3)]
            progress = [self.path(f"member{i}.progress") for i in range(3)]
            subs = [self.subscriber(s, 0 if grouped else conns,
                                    f"member{i}" if grouped else f"sub{i}",
                                    group="bench" if grouped else "",
                                    progress=progress[i] if grouped else None)
                    for i, s in enumerate(servers)]
            pids = [s.pid for s in servers]
            cpu0 = [cpu_seconds(p) for p in pids]
            base = 0
            for i, server in enumerate(servers):
                n = conns // 3 + (1 if i < conns % 3 else 0)
                gens.append(self.loadgen(server, n, 0, index_base=base))
                base += n
            sent = [g.wait_line("done", self.a.duration + 150) for g in gens]
            if grouped:
                stubs = []
                for s in servers:
                    pb, stub, channel = self.stub(s.grpc)
                    channels.append(channel)
                    stubs.append(stub)
                # Members do not know their share: the run ends when every node's view
                # of the group holds nothing (every connection closed and routed, nothing
                # queued); each node knows the delivered count of its own member only.
                deadline = time.monotonic() + 150
                while True:
                    views = [st.ListGroups(pb.ListGroupsRequest(group="bench"),
                                           timeout=10).groups for st in stubs]
                    views = [v[0] for v in views if v]
                    delivered = sum(m.delivered_events for g in views for m in g.members)
                    if (len(views) == 3 and delivered > 0
                            and all(g.connections == 0 and g.queued_events == 0
                                    for g in views)):
                        break
                    if time.monotonic() > deadline:
                        raise HarnessError(f"group not drained: {views}")
                    time.sleep(0.05)
                cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
                handovers = max(g.handovers for g in views)
                # What the nodes wrote may still be on its way to the members: they
                # are stopped once they have read every event written to them
                # (each node counts only its own member's writes).
                wait_members_read(progress, sum(
                    m.delivered_events for i, g in enumerate(views) for m in g.members
                    if m.node == f"n{i}"))
                for s in subs:
                    s.p.send_signal(signal.SIGTERM)
                dones = [s.wait_line("done", 60) for s in subs]
            else:
                dones = [s.wait_line("done", 150) for s in subs]
                cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
                handovers = 0
        finally:
            for channel in channels:
                channel.close()
            stop(gens + subs + servers)
            self.delete_cluster(cluster)
        sent_messages = sum(g["sent_messages"] for g in sent)
        failed = sum(g["failed_connections"] for g in sent)
        if grouped:
            total = sum(d["messages"] for d in dones)
            span = max(d["elapsed_s"] for d in dones) or float("nan")
            events = sum(d["events"] for d in dones)
            why = []
            if total != sent_messages:
                why.append(f"members received {total} of {sent_messages} messages")
            for i, d in enumerate(dones):
                if d["errors"]:
                    why.append(f"member {i}: {d['errors']} order errors: {d['first_error']}")
                if d["gaps"] or d["gap_lost"]:
                    why.append(f"member {i}: {d['gaps']} gaps, {d['gap_lost']} lost")
                if d["timed_out"]:
                    why.append(f"member {i} timed out")
            opened = sum(d["opened"] for d in dones)
            closed = sum(d["closed"] for d in dones)
            seen = sum(d["connections_seen"] for d in dones)
            if not opened == closed == seen == conns:
                why.append(f"members saw {opened} opened, {closed} closed, {seen} connections "
                           f"with data of {conns}")
            if failed:
                why.append(f"{failed} connections failed")
            status = "ok" if not why else "FAIL: " + "; ".join(why)
            messages_per_s = total / span
            per_member = [d["closed"] for d in dones]
        else:
            events = dones[0]["events"]
            messages_per_s = sum(d["messages_per_s"] for d in dones)
            bad = [c for c in (check(d, sent_messages, failed) for d in dones) if c != "ok"]
            status = "ok" if not bad else bad[0]
            per_member = [conns] * 3
        return {
            "sent": sent_messages,
            "messages_per_s": messages_per_s,
            "events": events,
            "fanin_cpu_s": sum(cpu),
            "fanin_us_per_event": sum(cpu) * 1e6 / max(1, events),
            "per_member": per_member,
            "redelivered": sum(d.get("redelivered", 0) for d in dones),
            "handovers": handovers,
            "sub_cpu_s": sum(d["cpu_s"] for d in dones),
            "check": status,
        }

    # -- one ingest run each

    def ingest_fanin(self, nodes, binary=None):
        """nodes = 0: standalone; else a fresh cluster of that many nodes."""
        cluster = self.new_cluster() if nodes else None
        servers, subs, gens = [], [], []
        conns = self.a.connections
        try:
            for i in range(max(1, nodes)):
                servers.append(self.start_server(
                    f"node{i}" if nodes else "standalone", cluster, f"n{i}", binary))
            sub = self.subscriber(servers[0], conns)
            subs.append(sub)
            pids = [s.pid for s in servers] + ([self.broker.pid] if nodes else [])
            cpu0 = [cpu_seconds(p) for p in pids]
            share = [conns // len(servers) + (1 if i < conns % len(servers) else 0)
                     for i in range(len(servers))]
            base = 0
            for server, n in zip(servers, share):
                gens.append(self.loadgen(server, n, 0, index_base=base))
                base += n
            sent = [g.wait_line("done", self.a.duration + 150) for g in gens]
            done = sub.wait_line("done", 150)
            cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
            met = [self.metrics(s) for s in servers]
        finally:
            stop(gens + subs + servers)
            if cluster:
                self.delete_cluster(cluster)
        sent_messages = sum(g["sent_messages"] for g in sent)
        events = done["events"]
        elapsed = done["elapsed_s"] or float("nan")
        r = {
            "system": "standalone" if not nodes else f"cluster x{nodes}",
            "sent": sent_messages,
            "sent_per_s": sum(g["sent_per_s"] for g in sent),
            "messages": done["messages"],
            "messages_per_s": done["messages_per_s"],
            "events": events,
            "events_per_s": events / elapsed,
            "fanin_cpu_s": sum(cpu[:len(servers)]),
            "nats_cpu_s": cpu[-1] if nodes else 0.0,
            "loadgen_cpu_s": sum(g["cpu_s"] for g in sent),
            "sub_cpu_s": done["cpu_s"],
            "p50_us": done["p50_us"],
            "published": sum(m.get("fanin_cluster_published_events_total", 0) for m in met),
            "batches": sum(m.get("fanin_cluster_publish_batches_total", 0) for m in met),
            "conflicts": sum(m.get("fanin_cluster_publish_conflicts_total", 0) for m in met),
            "retries": sum(m.get("fanin_cluster_publish_retries_total", 0) for m in met),
            "node_changes": done.get("node_changes", 0),
            "check": check(done, sent_messages, sum(g["failed_connections"] for g in sent)),
        }
        r["fanin_us_per_event"] = r["fanin_cpu_s"] * 1e6 / max(1, events)
        r["nats_us_per_event"] = r["nats_cpu_s"] * 1e6 / max(1, events)
        r["events_per_batch"] = r["published"] / r["batches"] if r["batches"] else 0
        return r

    def jetstream_floor(self, events, per_message, mode):
        stream = f"floor{self.seq}"
        self.seq += 1
        argv = [self.exe("cluster", "jetstream_floor"), f"--nats={self.broker.url}",
                f"--stream={stream}", f"--storage={self.a.storage}", f"--events={events}",
                "--event_bytes=64", f"--events_per_message={per_message}", f"--mode={mode}"]
        nats0 = cpu_seconds(self.broker.pid)
        proc = Proc("jetstream_floor", argv, self.work)
        try:
            done = proc.wait_line("done", 300)
            nats = cpu_seconds(self.broker.pid) - nats0
        finally:
            stop([proc])
        return {
            "system": f"floor {mode} {per_message}/msg",
            "events": done["events"],
            "events_per_s": done["events_per_s"],
            "messages_per_s": done["messages_per_s"],
            "fanin_cpu_s": done["cpu_s"],
            "nats_cpu_s": nats,
            "events_per_batch": per_message,
            "fanin_us_per_event": done["cpu_s"] * 1e6 / done["events"],
            "nats_us_per_event": nats * 1e6 / done["events"],
            "check": "ok" if done["ok"] else
                     f"FAIL: stored {done['stored_messages']} of {done['messages']}, "
                     f"{done['async_errors']} async errors",
        }


def check(done, sent, failed_connections):
    why = []
    if done["messages"] != sent:
        why.append(f"received {done['messages']} of {sent} messages")
    if done["errors"]:
        why.append(f"{done['errors']} order errors: {done['first_error']}")
    if done.get("seq_jumps"):
        why.append(f"{done['seq_jumps']} seq jumps")
    if done["gap_lost"] or done["gaps"]:
        why.append(f"{done['gaps']} gaps, {done['gap_lost']} lost")
    if not done["complete"]:
        why.append("incomplete (timed out)")
    if failed_connections:
        why.append(f"{failed_connections} connections failed")
    return "ok" if not why else "FAIL: " + "; ".join(why)


def attempt(b, what, fn, *args):
    """Runs one measurement; a harness error is reported and counted, not fatal."""
    try:
        r = fn(*args)
    except HarnessError as e:
        b.failed += 1
        print(f"  {what}: {e}", file=sys.stderr, flush=True)
        return None
    if r.get("check", "ok") != "ok":
        b.failed += 1
    return r


def checks(runs):
    bad = [r["check"] for r in runs if r["check"] != "ok"]
    return "ok" if not bad else f"{len(bad)}/{len(runs)} runs: {bad[0]}"


# ---------------------------------------------------------------- the parts

def part_ingest(b, rep):
    a = b.a
    rep.add(f"### Ingest: {a.connections} connections x 64 B, load generator as fast as it "
            f"can for {a.duration} s, one lossless subscriber; storage {a.storage}")
    rep.add()
    results = {}

    def keep(key, r):
        if r is not None:
            r["round"] = rnd
            results.setdefault(key, []).append(r)
            print(f"  round {rnd + 1}: {key}: {r.get('messages_per_s', 0) / 1e3:.1f}k msgs/s, "
                  f"{r['events_per_s'] / 1e3:.1f}k events/s, {r['check']}", file=sys.stderr,
                  flush=True)

    for rnd in range(a.rounds):
        # Standalone before the cluster in even rounds and after it in odd ones, so a
        # drift in the machine's load hits both alike; the floors repeat the cluster
        # round's event count and packing, so they follow it.
        fanin_order = ["standalone", "cluster x1"] if rnd % 2 == 0 else ["cluster x1",
                                                                         "standalone"]
        c1 = None
        for s in fanin_order:
            if s == "standalone":
                keep(s, attempt(b, s, b.ingest_fanin, 0))
                continue
            for label, binary in b.variants:
                r = attempt(b, s, b.ingest_fanin, 1, binary)
                keep(s + (f" [{label}]" if label else ""), r)
                if not label:
                    c1 = r
        if c1 is not None:
            per = max(1, round(c1["events_per_batch"]))
            for mode, n in (("async", 1), ("async", per), ("sync", per)):
                keep(f"floor {mode} {'1' if n == 1 else 'N'}",
                     attempt(b, "floor", b.jetstream_floor, c1["events"], n, mode))
        if a.three:
            keep("cluster x3", attempt(b, "cluster x3", b.ingest_fanin, 3))
    rep.raw["ingest"] = results

    rep.add("| system | messages/s at the subscriber | events/s | fanin (floor) CPU µs/event "
            "| nats-server CPU µs/event | together µs/event | together µs per 64-B message "
            "| events per JetStream message | publish conflicts | check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    labels = {
        "standalone": "standalone fanin",
        "cluster x1": "cluster, 1 node",
    }
    for v, _ in b.variants[1:]:
        labels[f"cluster x1 [{v}]"] = f"cluster, 1 node, {v}"
    labels.update({
        "cluster x3": "cluster, 3 nodes (load spread)",
        "floor async 1": "JetStream floor: async publish, 1 event/message",
        "floor async N": "JetStream floor: async publish, N events/message",
        "floor sync N": "fanin's publish protocol without fanin: sync, N events/message",
    })
    for key, label in labels.items():
        runs = results.get(key)
        if not runs:
            continue
        fanin = not key.startswith("floor")
        together = [r["fanin_us_per_event"] + r["nats_us_per_event"] for r in runs]
        per_message = [r["fanin_cpu_s"] + r["nats_cpu_s"] for r in runs]
        per_message = [c * 1e6 / (r["messages"] if fanin else r["events"])
                       for c, r in zip(per_message, runs)]
        def col(field, digits=0):
            return spread([r[field] for r in runs], digits)

        standalone = key == "standalone"
        rep.add(f"| {label} | {col('messages_per_s') if fanin else 'n/a'} | "
                f"{col('events_per_s')} | {col('fanin_us_per_event', 2)} | "
                f"{'–' if standalone else col('nats_us_per_event', 2)} | "
                f"{fmt(median(together), 2)} | {fmt(median(per_message), 2)} | "
                f"{'–' if standalone else col('events_per_batch', 1)} | "
                f"{col('conflicts') if key.startswith('cluster') else ''} | {checks(runs)} |")
    rep.add()

    def ratio(x, y, field):
        """Ratio of medians, and the median of the per-round ratios."""
        by_round = {r["round"]: r[field] for r in y}
        pairs = [r[field] / by_round[r["round"]] for r in x if r["round"] in by_round]
        return (median([r[field] for r in x]) / median([r[field] for r in y]), median(pairs))

    st = results.get("standalone")
    for v, _ in b.variants:
        c1 = results.get("cluster x1" + (f" [{v}]" if v else ""))
        if not (st and c1):
            continue
        m, pm = ratio(c1, st, "messages_per_s")
        e, pe = ratio(c1, st, "events_per_s")
        lossless = all(r["check"] == "ok" for r in c1)
        met = m >= 0.5 and lossless
        rep.add(f"- cluster (1 node{', ' + v if v else ''}) / standalone: messages/s "
                f"**{m:.2f}x** (per-round pairs {pm:.2f}x), events/s {e:.2f}x ({pe:.2f}x); "
                f"zero loss: {'yes' if lossless else 'NO'} (target >= 0.5x, zero loss: "
                f"{'met' if met else 'MISSED'})")
    retries = [r.get("retries", 0) for k, runs in results.items() if k.startswith("cluster")
               for r in runs]
    if retries:
        rep.add(f"- publishes retried after the broker did not answer in time "
                f"(fanin_cluster_publish_retries_total), all cluster runs: {sum(retries):.0f}")
    c1, c3 = results.get("cluster x1"), results.get("cluster x3")
    for key in ("floor async 1", "floor async N", "floor sync N"):
        fl = results.get(key)
        if c1 and fl:
            e, pe = ratio(c1, fl, "events_per_s")
            rep.add(f"- cluster (1 node) / {labels[key]}: events/s {e:.2f}x (per-round pairs "
                    f"{pe:.2f}x)")
    if c3 and c1:
        e, pe = ratio(c3, c1, "events_per_s")
        m, pm = ratio(c3, c1, "messages_per_s")
        rep.add(f"- three nodes / one node: events/s {e:.2f}x ({pe:.2f}x), messages/s "
                f"{m:.2f}x ({pm:.2f}x); publish conflicts per three-node run "
                f"{spread([r['conflicts'] for r in c3])} of "
                f"{spread([r['batches'] for r in c3])} batches")


def part_latency(b, rep):
    a = b.a
    rep.add(f"### Latency: {a.connections} connections, {a.rate} messages/s for "
            f"{a.duration} s, socket write to subscriber receipt; every process "
            + (f"SCHED_FIFO {a.latency_rt} (nats-server too)" if a.latency_rt else
               "normally scheduled"))
    rep.add()
    results = {}
    Proc.rt = a.latency_rt
    b.broker.realtime(a.latency_rt)
    try:
        for rnd in range(a.rounds):
            order = ["standalone"] + [v for v in b.variants]
            if rnd % 2:
                order.reverse()
            for s in order:
                r = attempt(b, f"latency {s}", latency_run, b, s)
                if r is None:
                    continue
                for key, v in r.items():
                    results.setdefault(key, []).append(v)
                    print(f"  round {rnd + 1}: {key}: p50 {v['p50_us']:.0f} µs, p99 "
                          f"{v['p99_us']:.0f} µs, {v['check']}", file=sys.stderr, flush=True)
    finally:
        Proc.rt = 0
        b.broker.realtime(0)
    rep.raw["latency"] = results
    rep.add("| where | p50 µs | p99 µs | p99.9 µs | max µs | check |")
    rep.add("| --- | --- | --- | --- | --- | --- |")
    labels = {"standalone": "standalone fanin (subscriber on the same server)"}
    for label, _ in b.variants:
        suffix = f" [{label}]" if label else ""
        labels["cluster A" + suffix] = ("cluster: subscriber on node A (the node the load "
                                        "enters)" + (f", {label}" if label else ""))
        labels["cluster B" + suffix] = ("cluster: subscriber on node B (another node)"
                                        + (f", {label}" if label else ""))
    for key, label in labels.items():
        runs = results.get(key)
        if runs:
            rep.add(f"| {label} | {spread([r['p50_us'] for r in runs])} | "
                    f"{spread([r['p99_us'] for r in runs])} | "
                    f"{spread([r['p999_us'] for r in runs])} | "
                    f"{spread([r['max_us'] for r in runs])} | {checks(runs)} |")
    rep.add()
    other = results.get("cluster B")
    if other:
        p50, p99 = median([r["p50_us"] for r in other]), median([r["p99_us"] for r in other])
        met = p50 <= 1000 and p99 <= 5000
        rep.add(f"- socket write -> subscriber on another node at {a.rate}/s: p50 {p50:.0f} µs, "
                f"p99 {p99:.0f} µs (target p50 <= 1 ms, p99 <= 5 ms: "
                f"{'met' if met else 'MISSED'})")


def latency_run(b, system):
    """system: "standalone" or a (label, binary) variant for two cluster nodes."""
    conns = b.a.connections
    name = b.new_cluster() if system != "standalone" else None
    servers, subs, gen = [], [], None
    try:
        if name:
            label, binary = system
            servers = [b.start_server("nodeA", name, "a", binary),
                       b.start_server("nodeB", name, "b", binary)]
            subs = [b.subscriber(servers[1], conns, "subB"),
                    b.subscriber(servers[0], conns, "subA")]
            suffix = f" [{label}]" if label else ""
            keys = ["cluster B" + suffix, "cluster A" + suffix]
        else:
            servers = [b.start_server("standalone")]
            subs = [b.subscriber(servers[0], conns, "sub")]
            keys = ["standalone"]
        gen = b.loadgen(servers[0], conns, b.a.rate)
        sent = gen.wait_line("done", b.a.duration + 150)
        dones = [s.wait_line("done", 150) for s in subs]
    finally:
        stop([gen] + subs + servers)
        if name:
            b.delete_cluster(name)
    out = {}
    for key, d in zip(keys, dones):
        out[key] = {k: d[k] for k in ("p50_us", "p99_us", "p999_us", "max_us", "messages")}
        out[key]["check"] = check(d, sent["sent_messages"], sent["failed_connections"])
    return out


def part_groups(b, rep):
    a = b.a
    n = a.group_connections
    rep.add(f"### Worker-pool groups across nodes: {n} connections x 64 B spread over three "
            f"nodes, load generator as fast as it can for {a.duration} s; one plain lossless "
            "subscriber on each node against a lossless group of one member on each node; "
            f"storage {a.storage}")
    rep.add()
    results = {}
    for rnd in range(a.rounds):
        order = [False, True] if rnd % 2 == 0 else [True, False]
        for grouped in order:
            key = "group" if grouped else "plain"
            r = attempt(b, f"groups {key}", b.groups_run, grouped)
            if r is None:
                continue
            results.setdefault(key, []).append(r)
            print(f"  round {rnd + 1}: {key}: {r['messages_per_s'] / 1e3:.1f}k msgs/s, "
                  f"{r['fanin_us_per_event']:.2f} µs/event, per member {r['per_member']}, "
                  f"{r['check']}", file=sys.stderr, flush=True)
    rep.raw["groups"] = results
    rep.add("| case | messages/s at the subscribers (total) | server CPU µs/event (3 nodes) "
            "| connections per subscriber/member | events redelivered | subscribers' CPU s "
            "| check |")
    rep.add("| --- | --- | --- | --- | --- | --- | --- |")
    labels = {"plain": "3 plain subscribers, one per node (each sees all)",
              "group": "group of 3, one member per node (split)"}
    for key, label in labels.items():
        runs = results.get(key)
        if not runs:
            continue
        splits = sorted({" / ".join(str(x) for x in r["per_member"]) for r in runs})
        rep.add(f"| {label} | {spread([r['messages_per_s'] for r in runs])} | "
                f"{spread([r['fanin_us_per_event'] for r in runs], 2)} | {'; '.join(splits)} | "
                f"{sum(r['redelivered'] for r in runs)} | "
                f"{spread([r['sub_cpu_s'] for r in runs], 2)} | {checks(runs)} |")
    rep.add()
    plain, group = results.get("plain"), results.get("group")
    if plain and group:
        ratio = (median([r["fanin_us_per_event"] for r in group])
                 / median([r["fanin_us_per_event"] for r in plain]))
        rep.add(f"- server CPU per event, group of 3 across nodes / 3 plain subscribers: "
                f"{ratio:.2f}x")


def part_write(b, rep):
    a = b.a
    rep.add(f"### Cross-node Write: {a.write_samples} samples of each kind per round, "
            f"{a.write_bytes} B per Write, one every {a.write_interval_ms} ms, interleaved in "
            "one process; " + (f"every process SCHED_FIFO {a.latency_rt}" if a.latency_rt
                               else "normally scheduled"))
    rep.add()
    results = {}
    Proc.rt = a.latency_rt
    b.broker.realtime(a.latency_rt)
    try:
        for rnd in range(a.rounds):
            variants = b.variants if rnd % 2 == 0 else list(reversed(b.variants))
            for label, binary in variants:
                r = attempt(b, "cross write", write_run, b, binary)
                if r is None:
                    continue
                suffix = f" [{label}]" if label else ""
                for key in ("cross_arrive", "cross_rpc", "local_arrive", "local_rpc",
                            "nats_request_reply", "nats_request_reply_asap"):
                    results.setdefault(key + suffix, []).append(r[key])
                print(f"  round {rnd + 1}{suffix}: cross write p50 "
                      f"{r['cross_arrive']['p50_us']:.0f} µs, NATS request-reply p50 "
                      f"{r['nats_request_reply_asap']['p50_us']:.0f} µs (default options "
                      f"{r['nats_request_reply']['p50_us']:.0f} µs)", file=sys.stderr, flush=True)
    finally:
        Proc.rt = 0
        b.broker.realtime(0)
    rep.raw["write"] = results
    rep.add("| what | p50 µs | p90 µs | p99 µs | p99.9 µs |")
    rep.add("| --- | --- | --- | --- | --- |")
    labels = {
        "cross_arrive": "Write on node B for node A's connection: bytes at the raw client",
        "cross_rpc": "the same: Write RPC returned on B",
        "local_arrive": "Write on node A (the owner): bytes at the raw client",
        "local_rpc": "the same: Write RPC returned on A",
        "nats_request_reply_asap": "bare NATS request-reply, responder with SendAsap",
        "nats_request_reply": "bare NATS request-reply, libnats default options",
    }
    for v, _ in b.variants[1:]:
        for key in ("cross_arrive", "cross_rpc", "local_arrive", "local_rpc"):
            labels[f"{key} [{v}]"] = f"{labels[key]}, {v}"
    for key, label in labels.items():
        runs = results.get(key)
        if runs:
            rep.add(f"| {label} | " + " | ".join(
                spread([r[q] for r in runs]) for q in ("p50_us", "p90_us", "p99_us", "p999_us"))
                + " |")
    rep.add()
    for v, _ in b.variants:
        suffix = f" [{v}]" if v else ""
        cross = results.get("cross_arrive" + suffix)
        rr = results.get("nats_request_reply_asap" + suffix)
        rr_default = results.get("nats_request_reply" + suffix)
        if not (cross and rr and rr_default):
            continue
        c = median([r["p50_us"] for r in cross])
        for name, base in (("SendAsap responder", rr), ("default-options responder",
                                                        rr_default)):
            n = median([r["p50_us"] for r in base])
            paired = median([x["p50_us"] / y["p50_us"] for x, y in zip(cross, base)])
            rep.add(f"- cross-node Write{', ' + v if v else ''} p50 / bare NATS request-reply "
                    f"p50 ({name}, same rounds): {c:.0f} / {n:.0f} µs = **{c / n:.2f}x** "
                    f"(per-round pairs {paired:.2f}x)"
                    + (f" (target <= 2x: {'met' if c / n <= 2 else 'MISSED'})"
                       if base is rr else ""))


def write_run(b, binary=None):
    name = b.new_cluster()
    servers, proc = [], None
    try:
        servers = [b.start_server("nodeA", name, "a", binary),
                   b.start_server("nodeB", name, "b", binary)]
        proc = Proc("cross_write", [
            b.exe("cluster", "cross_write"), f"--owner={servers[0].grpc}",
            f"--owner_listen={servers[0].listen}", f"--asker={servers[1].grpc}",
            f"--nats={b.broker.url}", f"--samples={b.a.write_samples}",
            f"--interval_ms={b.a.write_interval_ms}", f"--write_bytes={b.a.write_bytes}"],
            b.work)
        done = proc.wait_line("done", 120 + b.a.write_samples * 0.05)
    finally:
        stop([proc] + servers)
        b.delete_cluster(name)
    return done


# ---------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin_dir", required=True, help="bazel-bin of a -c opt build")
    p.add_argument("--parts", default="ingest,latency,write")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--duration", type=float, default=4, help="seconds of load per run")
    p.add_argument("--start_delay", type=float, default=0.5)
    p.add_argument("--rate", type=int, default=1000, help="latency: messages/s")
    p.add_argument("--storage", choices=["file", "memory"], default="file",
                   help="--cluster_storage of every node and the floor's stream")
    p.add_argument("--no_three", dest="three", action="store_false",
                   help="ingest: leave out the three-node rounds")
    p.add_argument("--group_connections", type=int, default=999,
                   help="groups: connections (spread over the three nodes)")
    p.add_argument("--write_samples", type=int, default=1000)
    p.add_argument("--write_interval_ms", type=float, default=1)
    p.add_argument("--write_bytes", type=int, default=16)
    p.add_argument("--latency_rt", type=int, default=10,
                   help="SCHED_FIFO priority of every process in the latency and write "
                        "parts (0 = normal scheduling)")
    p.add_argument("--nice", type=int, default=0,
                   help="as run.py of tests/bench/e2e: a session of its own whose autogroup "
                        "gets this nice (negative needs root), so builds beside it do not "
                        "take the measurement's time slices")
    p.add_argument("--fanin_b", default="",
                   help="PATH[=LABEL]: a second fanin_server binary; every cluster "
                        "measurement (ingest on one node, latency, write) also runs with it, "
                        "alternated with the built one (A/B of a server change)")
    p.add_argument("--fanin_flag", action="append", default=[],
                   help="extra fanin_server flag, repeatable")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long self-check of every part: small loads, one round; "
                        "fails when a count disagrees")
    a = p.parse_args()
    if a.smoke:
        a.rounds, a.connections, a.duration, a.rate = 1, 30, 0.5, 600
        a.write_samples, a.latency_rt, a.start_delay = 50, 0, 0.1
    if a.nice and os.getsid(0) != os.getpid():
        os.execvp("setsid", ["setsid", "--wait", sys.executable] + sys.argv)
    if a.nice:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(a.nice))
        except OSError as e:
            print(f"cannot set the autogroup's nice: {e}", file=sys.stderr)
    b = Bench(a)
    rep = e2e.Report(a.out)
    rep.add(f"Machine: {e2e.machine_text()}. Rounds: {a.rounds} (median, min–max). "
            f"nats-server {nats_version()}, JetStream {a.storage} storage. "
            f"Autogroup nice {a.nice}.")
    if a.smoke:
        rep.add("Smoke run: tiny loads, one round; the figures and verdicts below mean "
                "nothing, only the checks do.")
    rep.add()
    status = 0
    parts = {"ingest": part_ingest, "latency": part_latency, "write": part_write,
             "groups": part_groups}
    try:
        for name in a.parts.split(","):
            start = time.monotonic()
            try:
                parts[name](b, rep)
            except HarnessError as e:
                rep.add(f"{name}: ERROR {e}")
                status = 1
            rep.add(f"({name}: {time.monotonic() - start:.0f} s)")
            rep.add()
    finally:
        b.broker.stop()
        Proc.stop_all()
        if not a.smoke:
            # A groups-only run keeps the recorded full run's results beside it.
            rep.save("cluster-groups" if a.parts == "groups" else "cluster")
        if b.failed or status:
            print(f"work directory kept: {b.work}", file=sys.stderr)
        else:
            shutil.rmtree(b.work, ignore_errors=True)
    if b.failed:
        print(f"{b.failed} runs failed their checks or did not finish", file=sys.stderr)
        status = 1
    return status


def nats_version():
    try:
        out = subprocess.run([nats_server_path(), "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return out.strip().split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError, HarnessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
