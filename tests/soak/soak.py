#!/usr/bin/python3
"""Chaos soak of fanin_server with a checker written apart from the server.

Starts //server:fanin_server on free loopback ports with small limits, then for
--duration seconds runs a seeded random schedule of raw clients (random bytes
in random pieces, half-close, reset, idle, slow readers, from several source
addresses 127.0.0.x), subscribers (lossless and lossy, filtered, slow,
stalled, resuming), Write / Write(close_after) / CloseConnection(abort) from
several threads, SIGHUP token reloads and connection bursts past the limits.

The checker knows only what the raw clients sent and received and what the
RPCs returned. It recomputes every connection's event history from that and
holds each stream against one lossless, unfiltered reference subscriber that
started before any client. Invariant families (each one check):

  addresses   every Opened names the client's address ("ip:port"), so each
              connection is one client's
  reference   seq contiguous from 1; per connection Opened first, exactly one
              Closed last; Data concatenates to the bytes the client sent
              (a prefix unless the server saw the client's FIN)
  bytes_received  Closed.bytes_received == the connection's Data total
  lossless    every other lossless stream == the reference's matching events
              in its range, no gap, heartbeats agree
  lossy       every event == the reference's; received + sum(Gap.lost) ==
              matching reference events in range, per gap and in total
  writes      the client received exactly the OK'd Writes in order (a prefix
              after a reset or abort); Closed.bytes_sent agrees
  resume      a resume continues right after the seq, or after an exact
              HISTORY_EXPIRED gap; beyond head is OUT_OF_RANGE
  limits      per-IP and total open connections never above the flags; every
              burst past the per-IP limit got Closed(REJECTED)
  auth        the writer token always works; after SIGHUP the new reader token
              reads, cannot write, and the old one is refused
  liveness    every wait finished within its deadline
  resources   fds / threads / RSS back near the start-up baseline, GetStats
              agrees, connections_open == 0
  shutdown    SIGTERM exits 0 in time; no sanitizer report on stderr

Usage: soak.py SERVER_BINARY PROTO_PY_ROOT [--duration=S] [--seed=N]
Exit 0 when every family passed, 1 otherwise.
"""

import argparse
import collections
import errno
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

# Bounds on resources after the soak, relative to the baseline taken once the
# server is up with the checker's two channels and the reference subscriber.
FD_SLACK = 8
THREAD_SLACK = 8
RSS_SLACK_MIB = 64
RSS_SLACK_MIB_ASAN = 512  # ASan's quarantine alone may keep 256 MiB.

RPC_TIMEOUT_S = 10
CLIENT_IO_DEADLINE_S = 30  # one send or the wait for EOF
SETTLE_DEADLINE_S = 60  # end phase: clients done, reference caught up

SERVER_FLAGS = {
    "loops": 2,
    "max_connections": 40,
    "max_connections_per_ip": 8,
    "history_events": 64,
    "subscriber_queue_bytes": 64 << 10,
    "max_outbound_bytes": 64 << 10,
    "heartbeat_interval": "1s",
    "idle_timeout": "5s",
    "close_linger": "2s",
    "drain_timeout": "10s",
}
POLLERS = ["epoll", "epoll-edge", "poll", "select"]
LISTENERS = ["a", "b"]
CLIENT_IPS = ["127.0.0.%d" % x for x in range(2, 9)]
BURST_IP = "127.0.0.9"  # only bursts use it, one burst at a time

FAMILIES = ["reference", "addresses", "bytes_received", "lossless", "lossy", "writes", "resume", "limits",
            "auth", "liveness", "resources", "shutdown"]

pb = None  # fanin_pb2, imported in main()
pbg = None
grpc = None

KIND_OF_FIELD = {}  # Event oneof name -> EventKind value, filled in main()


class Report:
    """Violations by family and operation counts; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.violations = collections.defaultdict(list)
        self.ops = collections.Counter()
        self.checked = collections.Counter()

    def fail(self, family, what):
        assert family in FAMILIES, family
        with self.lock:
            self.violations[family].append(what)
            if len(self.violations[family]) <= 5:
                print("VIOLATION [%s] %s" % (family, what), flush=True)

    def op(self, kind, n=1):
        with self.lock:
            self.ops[kind] += n

    def check(self, family, n=1):
        with self.lock:
            self.checked[family] += n


R = Report()


def monotonic_deadline(seconds):
    return time.monotonic() + seconds


def wait_for(pred, seconds, step=0.02):
    """Polls pred until true or the deadline; returns its last value."""
    end = monotonic_deadline(seconds)
    while True:
        value = pred()
        if value or time.monotonic() >= end:
            return value
        time.sleep(step)  # Polling a condition, bounded by the deadline.


# --------------------------------------------------------------------------
# The server process


class Server:

    def __init__(self, binary, tmp, poller, writer_token, reader_token):
        self.tmp = tmp
        self.tokens_path = os.path.join(tmp, "tokens")
        self.write_tokens(writer_token, reader_token)
        self.ready = os.path.join(tmp, "ready")
        self.stderr_path = os.path.join(tmp, "server.stderr")
        args = [binary, "--grpc_address=127.0.0.1:0", "--poller=" + poller,
                "--ready_file=" + self.ready,
                "--auth_tokens_file=" + self.tokens_path,
                "--log_level=warning"]
        args += ["--listen=%s=127.0.0.1:0" % name for name in LISTENERS]
        args += ["--%s=%s" % kv for kv in sorted(SERVER_FLAGS.items())]
        self.args = args
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.stderr,
                                     stderr=self.stderr)
        self.pid = self.proc.pid
        with open(binary, "rb") as f:
            self.asan = b"__asan_init" in f.read()

    def write_tokens(self, writer_token, reader_token):
        tmp = self.tokens_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("# written by soak.py\nwriter %s\nreader %s\n" %
                    (writer_token, reader_token))
        os.rename(tmp, self.tokens_path)

    def wait_ready(self):

        def read():
            if self.proc.poll() is not None:
                raise SystemExit("server exited with %d before ready; stderr "
                                 "in %s" % (self.proc.returncode,
                                            self.stderr_path))
            if not os.path.exists(self.ready):
                return None
            info = {}
            with open(self.ready) as f:
                for line in f:
                    parts = line.split()
                    if parts[0] == "grpc":
                        info["grpc"] = parts[1]
                    elif parts[0] == "listen":
                        host, port = parts[2].rsplit(":", 1)
                        info[parts[1]] = (host, int(port))
            return info

        info = wait_for(read, 30)
        if not info:
            raise SystemExit("no ready file within 30 s")
        return info

    def resources(self):
        fds = len(os.listdir("/proc/%d/fd" % self.pid))
        threads = len(os.listdir("/proc/%d/task" % self.pid))
        rss_kib = 0
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        return {"fds": fds, "threads": threads, "rss_mib": rss_kib / 1024.0}

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Subscribers


def kind_of(event):
    return KIND_OF_FIELD[event.WhichOneof("kind")]


class Spec:
    """What a subscriber asked for, and how it behaves."""

    def __init__(self, name, lossless, kinds=(), listeners=(), resume=0,
                 resume_epoch="", max_batch=0, omit_payload=False,
                 max_payload=0, slow_s=0.0, stall_after=None, stall_s=0.0,
                 lifetime_s=None, token=None):
        self.name = name
        self.lossless = lossless
        self.kinds = set(kinds)
        self.listeners = set(listeners)
        self.resume = resume
        self.resume_epoch = resume_epoch
        self.max_batch = max_batch
        self.omit_payload = omit_payload
        self.max_payload = max_payload
        self.slow_s = slow_s
        self.stall_after = stall_after  # messages before the stall
        self.stall_s = stall_s
        self.lifetime_s = lifetime_s
        self.token = token

    def matches(self, event):
        if self.kinds and kind_of(event) not in self.kinds:
            return False
        if self.listeners and event.listener not in self.listeners:
            return False
        return True

    def expected(self, ref_event):
        """The reference event as this subscriber must see it."""
        if not ref_event.HasField("data") or not (self.omit_payload or
                                                  self.max_payload):
            return ref_event
        e = pb.Event()
        e.CopyFrom(ref_event)
        if self.omit_payload:
            e.data.payload = b""
        else:
            e.data.payload = e.data.payload[:self.max_payload]
        return e

    def request(self):
        return pb.SubscribeRequest(
            kinds=sorted(self.kinds), listeners=sorted(self.listeners),
            omit_payload=self.omit_payload,
            max_payload_bytes=self.max_payload,
            resume_after_seq=self.resume, resume_epoch=self.resume_epoch,
            delivery=pb.DELIVERY_LOSSLESS if self.lossless else
            pb.DELIVERY_LOSSY, max_batch_events=self.max_batch)

    def describe(self):
        parts = ["lossless" if self.lossless else "lossy"]
        if self.kinds:
            parts.append("kinds=%s" % sorted(self.kinds))
        if self.listeners:
            parts.append("listeners=%s" % sorted(self.listeners))
        if self.resume:
            parts.append("resume=%d" % self.resume)
        if self.resume_epoch:
            parts.append("epoch=%s" % self.resume_epoch)
        if self.max_batch:
            parts.append("batch=%d" % self.max_batch)
        if self.omit_payload:
            parts.append("omit_payload")
        if self.max_payload:
            parts.append("max_payload=%d" % self.max_payload)
        if self.slow_s:
            parts.append("slow=%.3fs" % self.slow_s)
        if self.stall_s:
            parts.append("stall=%.1fs@%d" % (self.stall_s, self.stall_after))
        return "%s(%s)" % (self.name, " ".join(parts))


class Subscriber:
    """One Subscribe stream read by its own thread into `items`.

    items: ("event", Event) | ("gap", Gap) | ("heartbeat", Heartbeat,
    delivered_so_far, lost_so_far). on_event, if set, runs for each event on
    the reading thread (the reference uses it).
    """

    def __init__(self, target, spec, metadata, on_event=None):
        self.spec = spec
        # No flow-control window growth: a reader that sleeps then stalls the
        # server's stream after 64 KiB instead of being buffered for, so slow
        # and stalled lossy subscribers really fall behind the history (and
        # get Gaps) and stalled lossless ones really pause their clients.
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.http2.bdp_probe", 0)])
        self.stub = pbg.FanInStub(self.channel)
        self.call = self.stub.Subscribe(spec.request(), metadata=metadata)
        self.started = None
        self.items = []
        self.error = None
        self.cancelled = False
        self.on_event = on_event
        self.last_seq = 0
        self.started_at = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        delivered = lost = 0
        messages = 0
        try:
            for msg in self.call:
                which = msg.WhichOneof("message")
                if which == "started":
                    self.started = msg.started
                elif which == "batch":
                    for event in msg.batch.events:
                        self.items.append(("event", event))
                        self.last_seq = event.seq
                        if self.on_event:
                            self.on_event(event)
                    delivered += len(msg.batch.events)
                elif which == "gap":
                    self.items.append(("gap", msg.gap))
                    lost += msg.gap.lost
                elif which == "heartbeat":
                    self.items.append(("heartbeat", msg.heartbeat, delivered,
                                       lost))
                messages += 1
                if self.spec.stall_after is not None and \
                        messages == self.spec.stall_after:
                    time.sleep(self.spec.stall_s)  # The stall under test.
                elif self.spec.slow_s:
                    time.sleep(self.spec.slow_s)  # A slow reader, on purpose.
        except grpc.RpcError as e:
            if not (self.cancelled and
                    e.code() == grpc.StatusCode.CANCELLED):
                self.error = e

    def stop(self):
        self.cancelled = True
        self.call.cancel()
        self.thread.join(RPC_TIMEOUT_S)
        if self.thread.is_alive():
            R.fail("liveness", "%s: reader thread did not end after cancel" %
                   self.spec.describe())
        self.channel.close()


class Reference:
    """The lossless unfiltered subscriber every other stream is held to."""

    def __init__(self, target, metadata):
        self.lock = threading.Condition()
        self.events = {}  # seq -> Event
        self.by_addr = {}  # "ip:port" -> connection id
        self.conns = collections.defaultdict(list)  # id -> [Event]
        self.open_ids = set()
        self.closed = {}  # id -> Closed event
        self.head = 0
        self.sub = Subscriber(target, Spec("reference", True), metadata,
                              on_event=self.on_event)

    def on_event(self, event):
        with self.lock:
            self.events[event.seq] = event
            self.head = max(self.head, event.seq)
            cid = event.connection_id
            self.conns[cid].append(event)
            if event.HasField("opened"):
                self.by_addr[event.opened.remote_address] = cid
                self.open_ids.add(cid)
            elif event.HasField("closed"):
                self.open_ids.discard(cid)
                self.closed[cid] = event
            self.lock.notify_all()

    def wait(self, pred, seconds):
        end = monotonic_deadline(seconds)
        with self.lock:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.5))
            return True

    def conns_of(self, addrs, seconds):
        """Connection ids of these client addresses (None for those no Opened
        named within `seconds`, shared by all)."""
        self.wait(lambda: all(a in self.by_addr for a in addrs), seconds)
        with self.lock:
            return [self.by_addr.get(a) for a in addrs]

    def live_ids(self):
        with self.lock:
            return sorted(self.open_ids)


# --------------------------------------------------------------------------
# Raw clients


class PortAllocator:
    """Each (source ip, port) is used once, so an Opened names one client."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next = collections.defaultdict(lambda: 20000)

    def bind(self, sock, ip):
        for _ in range(200):
            with self.lock:
                port = self.next[ip]
                self.next[ip] = port + 1
            if port > 60999:
                raise OSError(errno.EADDRNOTAVAIL, "ports used up for " + ip)
            try:
                sock.bind((ip, port))
                return "%s:%d" % (ip, port)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no free port for " + ip)


PORTS = PortAllocator()


class RawClient:
    """A raw TCP client following a random plan on its own thread.

    Records what it sent (bytes send() took) and everything it received, and
    how it ended. Non-blocking socket, select with deadlines throughout.
    """

    def __init__(self, index, ip, listener, address, rng, plan):
        self.index = index
        self.ip = ip
        self.listener = listener
        self.address = address
        self.rng = rng
        self.plan = plan
        self.sent = bytearray()
        self.received = bytearray()
        self.local = None
        self.connected = False
        self.half_closed = False
        self.reset = False  # we reset it (SO_LINGER 0)
        self.saw_reset = False  # ECONNRESET / EPIPE from the server side
        self.eof = False
        self.timed_out = None
        self.sock = None
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            self.connect()
            if self.connected:
                for step in self.plan:
                    if not self.do(step) or self.timed_out:
                        break
        except Exception as e:  # pylint: disable=broad-except
            R.fail("liveness", "client %d: unexpected %r" % (self.index, e))
        finally:
            if self.sock is not None and not self.reset:
                self.sock.close()

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = s
        self.local = PORTS.bind(s, self.ip)
        s.setblocking(False)
        rc = s.connect_ex(self.address)
        if rc not in (0, errno.EINPROGRESS):
            R.op("client_connect_refused")
            return
        _, w, _ = select.select([], [s], [], CLIENT_IO_DEADLINE_S)
        if not w:
            self.timed_out = "connect"
            R.fail("liveness", "client %d %s: connect did not finish in %d s"
                   % (self.index, self.local, CLIENT_IO_DEADLINE_S))
            return
        rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            R.op("client_connect_failed")
            return
        self.connected = True
        R.op("client_connect")

    def pump(self, out, seconds, read=True, until_eof=False):
        """Sends `out` (bytes) and reads what arrives, for at most `seconds`.

        Returns when `out` is sent (and, with until_eof, EOF was seen), or at
        the deadline. Records sent bytes as send() takes them.
        """
        s = self.sock
        end = monotonic_deadline(seconds)
        view = memoryview(out)
        while True:
            sending = len(view) > 0 and not self.saw_reset
            if not sending and not (until_eof and not self.eof and
                                    not self.saw_reset):
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            rl = [s] if read and not self.eof and not self.saw_reset else []
            wl = [s] if sending else []
            r, w, _ = select.select(rl, wl, [], min(left, 0.2))
            if r:
                self.read_some()
            if w and len(view) and not self.saw_reset:
                try:
                    n = s.send(view[:65536])
                    self.sent += view[:n]
                    view = view[n:]
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    self.saw_reset = True

    def read_some(self):
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self.saw_reset = True
            return
        if chunk:
            self.received += chunk
        else:
            self.eof = True

    def do(self, step):
        kind = step[0]
        if kind == "send":
            R.op("client_send_piece")
            if not self.pump(step[1], CLIENT_IO_DEADLINE_S):
                self.timed_out = "send"
                R.fail("liveness", "client %d %s: %d bytes not sent in %d s" %
                       (self.index, self.local, len(step[1]),
                        CLIENT_IO_DEADLINE_S))
            if step[2]:
                self.pump(b"", step[2])  # pause between pieces, still reading
            return True
        if kind == "idle":
            R.op("client_idle")
            self.pump(b"", step[1])
            return True
        if kind == "deaf":
            R.op("client_slow_reader")
            time.sleep(step[1])  # A client that does not read, on purpose.
            return True
        if kind == "half_close":
            R.op("client_half_close")
            try:
                self.sock.shutdown(socket.SHUT_WR)
                self.half_closed = True
            except OSError:
                self.saw_reset = True
            if not self.pump(b"", CLIENT_IO_DEADLINE_S, until_eof=True):
                self.timed_out = "eof"
                R.fail("liveness", "client %d %s: no EOF %d s after FIN" %
                       (self.index, self.local, CLIENT_IO_DEADLINE_S))
            return False
        if kind == "reset":
            R.op("client_reset")
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
            self.reset = True
            self.sock.close()
            return False
        if kind == "wait_close":
            # Waits for a subscriber (or the idle timeout) to close it, then
            # ends with a FIN if nobody did.
            R.op("client_wait_close")
            self.pump(b"", step[1], until_eof=True)
            if not self.eof and not self.saw_reset:
                return self.do(("half_close",))
            return False
        raise AssertionError(kind)


def client_plan(rng):
    """Steps of one client's life; at most ~8 s of idling in all."""
    plan = []
    quiet = 0.0
    for _ in range(rng.randint(0, 24)):
        r = rng.random()
        if r < 0.8 or quiet > 8:
            size = rng.choice([1, rng.randint(1, 64), rng.randint(1, 200),
                               rng.randint(1, 8192), rng.randint(1, 40000)])
            plan.append(("send", rng.randbytes(size),
                         rng.choice([0, 0, 0.001, 0.01, 0.05])))
        elif r < 0.92:
            # 6 s is past --idle_timeout=5s: the server closes it.
            pause = rng.choice([0.05, 0.2, 1.0, 1.0, 6.0])
            plan.append(("idle", pause))
            quiet += pause
        else:
            pause = rng.uniform(0.2, 2.0)
            plan.append(("deaf", pause))
            quiet += pause
    end = rng.random()
    if end < 0.55:
        plan.append(("half_close",))
    elif end < 0.8:
        plan.append(("reset",))
    else:
        plan.append(("wait_close", rng.uniform(0.5, 7.0)))
    return plan


# --------------------------------------------------------------------------
# Writers: Write / Write(close_after) / CloseConnection(abort)


class ConnOps:
    """The RPCs made on one connection, in the order the server took them
    (one at a time per connection, under `lock`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []  # (kind, data, grpc code name)


class Writers:

    def __init__(self, stub, metadata, reference, rng_seed, n):
        self.stub = stub
        self.metadata = metadata
        self.reference = reference
        self.conn_ops = collections.defaultdict(ConnOps)
        self.map_lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self.run, args=(random.Random(rng_seed + i),),
                             daemon=True) for i in range(n)
        ]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(RPC_TIMEOUT_S * 2)
            if t.is_alive():
                R.fail("liveness", "writer thread stuck")

    def ops_of(self, cid):
        with self.map_lock:
            return self.conn_ops[cid]

    def run(self, rng):
        while not self.stop_flag.is_set():
            time.sleep(rng.choice([0.005, 0.02, 0.05, 0.1]))  # pacing
            ids = self.reference.live_ids()
            if not ids:
                continue
            cid = rng.choice(ids)
            r = rng.random()
            # Closes are rare so most clients live to send their plan.
            if r < 0.92:
                kind = "write"
                size = rng.choice([0, 1, rng.randint(1, 512),
                                   rng.randint(1, 16384),
                                   rng.randint(30000, 70000)])
                data = rng.randbytes(size)
                req = pb.WriteRequest(connection_id=cid, data=data)
                call = self.stub.Write
            elif r < 0.95:
                kind = "write_close_after"
                data = rng.randbytes(rng.choice([0, rng.randint(1, 4096)]))
                req = pb.WriteRequest(connection_id=cid, data=data,
                                      close_after=True)
                call = self.stub.Write
            elif r < 0.98:
                kind, data = "close", b""
                req = pb.CloseConnectionRequest(connection_id=cid)
                call = self.stub.CloseConnection
            else:
                kind, data = "abort", b""
                req = pb.CloseConnectionRequest(connection_id=cid, abort=True)
                call = self.stub.CloseConnection
            ops = self.ops_of(cid)
            with ops.lock:
                try:
                    call(req, metadata=self.metadata, timeout=RPC_TIMEOUT_S)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                ops.ops.append((kind, data, code))
            R.op("%s_%s" % (kind, code))
            if kind == "write" and not data:
                # An empty Write without close_after asks for nothing.
                if code != "INVALID_ARGUMENT":
                    R.fail("writes", "empty Write on connection %d: %s, want "
                           "INVALID_ARGUMENT" % (cid, code))
            elif code == "ABORTED" and kind.startswith("write"):
                pass  # The socket failed mid-write; check_writes verifies.
            elif code not in ("OK", "NOT_FOUND", "RESOURCE_EXHAUSTED"):
                R.fail("writes" if code != "DEADLINE_EXCEEDED" else "liveness",
                       "%s on connection %d: %s" % (kind, cid, code))


# --------------------------------------------------------------------------
# The soak


class Soak:

    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(self.seed)
        self.poller = args.poller or self.rng.choice(POLLERS)
        self.writer_token = "w-%016x" % self.rng.getrandbits(64)
        self.reader_token = "r0-%016x" % self.rng.getrandbits(64)
        self.reader_generation = 0
        self.clients = []
        self.clients_lock = threading.Lock()
        self.subscribers = []  # finished or running, for the checks
        self.bursts = []  # (clients, k)
        self.resume_probes = []  # (spec, outcome)
        self.token_lock = threading.Lock()

    def md(self, token):
        return (("authorization", "Bearer " + token),)

    # ---- set-up

    def start(self, binary, tmp):
        self.server = Server(binary, tmp, self.poller, self.writer_token,
                             self.reader_token)
        info = self.server.wait_ready()
        self.target = info["grpc"]
        self.listen = {name: info[name] for name in LISTENERS}
        self.channel = grpc.insecure_channel(self.target)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT_S)
        self.stub = pbg.FanInStub(self.channel)
        self.writer_md = self.md(self.writer_token)
        self.reference = Reference(self.target, self.writer_md)
        if not wait_for(lambda: self.reference.sub.started is not None, 10):
            raise SystemExit("reference subscriber not started: %r" %
                             self.reference.sub.error)
        self.epoch = self.reference.sub.started.server_epoch
        time.sleep(0.5)  # let the server settle before the baseline
        self.baseline = self.server.resources()
        print("server pid %d: %s" % (self.server.pid,
                                     " ".join(self.server.args[1:])),
              flush=True)
        print("baseline: fds=%(fds)d threads=%(threads)d rss=%(rss_mib).1f MiB"
              % self.baseline, flush=True)

    # ---- actors

    def new_client(self, seed_rng, ip=None, plan=None, listener=None):
        rng = random.Random(seed_rng.getrandbits(64))
        listener = listener or rng.choice(LISTENERS)
        c = RawClient(len(self.clients), ip or rng.choice(CLIENT_IPS),
                      listener, self.listen[listener], rng,
                      plan if plan is not None else client_plan(rng))
        with self.clients_lock:
            self.clients.append(c)
        c.start()
        return c

    def random_spec(self, rng, name):
        lossless = rng.random() < 0.5
        kinds = ()
        if rng.random() < 0.4:
            kinds = rng.sample([1, 2, 3, 4, 5], rng.randint(1, 3))
        listeners = ()
        if rng.random() < 0.3:
            listeners = (rng.choice(LISTENERS),)
        spec = Spec(name, lossless, kinds, listeners,
                    max_batch=rng.choice([0, 0, 1, 7, 64]),
                    lifetime_s=rng.choice([0.5, 2, 5, 10]))
        r = rng.random()
        if r < 0.1:
            spec.omit_payload = True
        elif r < 0.2:
            spec.max_payload = rng.randint(1, 100)
        r = rng.random()
        if r < 0.25:
            spec.slow_s = rng.choice([0.001, 0.01, 0.05])
        elif r < 0.45:
            spec.stall_after = rng.randint(1, 30)
            # A lossless stall pauses the clients it matches, so keep it
            # short; a lossy one must outlast the history to see a Gap.
            spec.stall_s = rng.uniform(0.5, 3.0) if lossless else \
                rng.uniform(2.0, 8.0)
            spec.lifetime_s = max(spec.lifetime_s, spec.stall_s + 2)
        if rng.random() < 0.3:
            head = self.reference.head
            if head:
                spec.resume = rng.choice(
                    [max(1, head - rng.randint(0, 300)), rng.randint(1, head)])
                spec.resume_epoch = rng.choice(["", self.epoch])
        return spec

    def subscriber_manager(self, stop, rng):
        live = []
        n = 0
        while not stop.is_set():
            time.sleep(0.05)  # pacing of the join/leave schedule
            now = time.monotonic()
            for s in list(live):
                if now - s.started_at >= s.spec.lifetime_s:
                    s.stop()
                    live.remove(s)
            if len(live) < 4 and rng.random() < 0.2:
                n += 1
                spec = self.random_spec(rng, "sub%d" % n)
                token = self.writer_token
                with self.token_lock:
                    if rng.random() < 0.3:
                        token = self.reader_token
                spec.token = token
                s = Subscriber(self.target, spec, self.md(token))
                R.op("subscribe_lossless" if spec.lossless else
                     "subscribe_lossy")
                for flag, what in ((spec.kinds or spec.listeners, "filtered"),
                                   (spec.slow_s, "slow"),
                                   (spec.stall_s, "stalled"),
                                   (spec.resume, "resumed")):
                    if flag:
                        R.op("subscribe_" + what)
                live.append(s)
                self.subscribers.append(s)
        for s in live:
            s.stop()

    def reloader(self, stop, rng):
        while not stop.wait(rng.uniform(3, 8)):
            self.reload(rng)

    def reload(self, rng):
        R.op("sighup_reload")
        with self.token_lock:
            old = self.reader_token
            self.reader_generation += 1
            new = "r%d-%016x" % (self.reader_generation, rng.getrandbits(64))
            self.server.write_tokens(self.writer_token, new)
            os.kill(self.server.pid, signal.SIGHUP)

            def new_works():
                try:
                    self.stub.GetStats(pb.GetStatsRequest(),
                                       metadata=self.md(new),
                                       timeout=RPC_TIMEOUT_S)
                    return True
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                        R.fail("auth", "new reader token: %s" % e.code())
                    return False

            if not wait_for(new_works, 10, step=0.05):
                R.fail("auth", "new reader token not accepted 10 s after "
                       "SIGHUP")
                return
            self.reader_token = new
        R.check("auth")
        for token, request, call, want in (
                (new, pb.WriteRequest(connection_id=1, data=b"x"),
                 self.stub.Write, grpc.StatusCode.PERMISSION_DENIED),
                (old, pb.GetStatsRequest(), self.stub.GetStats,
                 grpc.StatusCode.UNAUTHENTICATED),
                (self.writer_token, pb.GetStatsRequest(), self.stub.GetStats,
                 None)):
            try:
                call(request, metadata=self.md(token), timeout=RPC_TIMEOUT_S)
                code = None
            except grpc.RpcError as e:
                code = e.code()
            R.check("auth")
            if code != want:
                R.fail("auth", "after reload: %s with %s token gave %s, want "
                       "%s" % (type(request).__name__,
                               "old" if token == old else "new"
                               if token == new else "writer", code, want))
        try:
            self.stub.Subscribe(pb.SubscribeRequest(), metadata=(),
                                timeout=RPC_TIMEOUT_S).next()
            R.fail("auth", "Subscribe without a token was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                R.fail("auth", "Subscribe without a token: %s" % e.code())

    def burster(self, stop, rng):
        while not stop.wait(rng.uniform(2, 6)):
            R.op("burst")
            per_ip = SERVER_FLAGS["max_connections_per_ip"]
            k = rng.randint(1, 6)
            listener = rng.choice(LISTENERS)
            clients = [
                self.new_client(rng, BURST_IP, [("wait_close", 1.0)], listener)
                for _ in range(per_ip + k)
            ]
            for c in clients:
                c.thread.join(CLIENT_IO_DEADLINE_S * 3)
            self.bursts.append((clients, k))
            ids = self.reference.conns_of(
                [c.local for c in clients if c.connected], 10)
            # Wait for the burst's Closed events before the next one, so
            # each burst starts with BURST_IP holding nothing.
            self.reference.wait(
                lambda: all(i in self.reference.closed for i in ids if i),
                SETTLE_DEADLINE_S)

    def prober(self, stop, rng):
        """Occasional unary reads and out-of-range resumes."""
        while not stop.wait(rng.uniform(0.5, 2)):
            r = rng.random()
            try:
                if r < 0.4:
                    R.op("get_stats")
                    self.stub.GetStats(pb.GetStatsRequest(),
                                       metadata=self.writer_md,
                                       timeout=RPC_TIMEOUT_S)
                elif r < 0.8:
                    R.op("list_connections")
                    self.stub.ListConnections(
                        pb.ListConnectionsRequest(page_size=rng.randint(1, 50)),
                        metadata=self.writer_md, timeout=RPC_TIMEOUT_S)
                else:
                    R.op("resume_out_of_range")
                    stats = self.stub.GetStats(pb.GetStatsRequest(),
                                               metadata=self.writer_md,
                                               timeout=RPC_TIMEOUT_S)
                    beyond = stats.head_seq + 1000000
                    try:
                        self.stub.Subscribe(
                            pb.SubscribeRequest(resume_after_seq=beyond),
                            metadata=self.writer_md,
                            timeout=RPC_TIMEOUT_S).next()
                        R.fail("resume", "resume after %d (beyond head %d) "
                               "accepted" % (beyond, stats.head_seq))
                    except grpc.RpcError as e:
                        R.check("resume")
                        if e.code() != grpc.StatusCode.OUT_OF_RANGE:
                            R.fail("resume", "resume beyond head: %s" %
                                   e.code())
            except grpc.RpcError as e:
                R.fail("liveness" if e.code() ==
                       grpc.StatusCode.DEADLINE_EXCEEDED else "auth",
                       "unary probe failed: %s" % e.code())

    def run(self):
        duration = self.args.duration
        print("soak: seed=%d duration=%ds poller=%s" %
              (self.seed, duration, self.poller), flush=True)
        stop = threading.Event()
        self.writers = Writers(self.stub, self.writer_md, self.reference,
                               self.rng.getrandbits(32), 3)
        actors = [
            threading.Thread(target=fn, args=(stop, random.Random(
                self.rng.getrandbits(64))), daemon=True)
            for fn in (self.subscriber_manager, self.reloader, self.burster,
                       self.prober)
        ]
        self.writers.start()
        for t in actors:
            t.start()
        end = monotonic_deadline(duration)
        next_report = time.monotonic() + 10
        live = []
        while time.monotonic() < end:
            time.sleep(self.rng.choice([0.005, 0.02, 0.05, 0.1]))  # pacing
            live = [c for c in live if c.thread.is_alive()]
            if len(live) < self.args.clients:
                live.append(self.new_client(self.rng))
            if time.monotonic() >= next_report:
                next_report += 10
                print("  t=%3.0fs clients=%d events=%d subscribers=%d" %
                      (duration - (end - time.monotonic()), len(self.clients),
                       self.reference.head, len(self.subscribers)), flush=True)
        # End phase: no new actors; every client finishes its plan.
        print("  schedule done; waiting for actors and clients to finish",
              flush=True)
        stop.set()
        for t in actors:
            t.join(SETTLE_DEADLINE_S * 2)
            if t.is_alive():
                R.fail("liveness", "actor %s did not stop" % t.name)
        for c in self.clients:
            c.thread.join(max(0.1, SETTLE_DEADLINE_S))
            if c.thread.is_alive():
                R.fail("liveness", "client %d still running at the end" %
                       c.index)
        # Every client has ended: every connection must close, and each
        # client that connected must have had an Opened.
        connected = sum(1 for c in self.clients if c.connected)
        ref = self.reference
        if not ref.wait(lambda: len(ref.conns) >= connected and
                        not ref.open_ids, SETTLE_DEADLINE_S):
            R.fail("liveness", "%d s after the clients ended: %d Opened for "
                   "%d connected clients, %d connections without Closed, "
                   "e.g. %s" % (SETTLE_DEADLINE_S, len(ref.conns), connected,
                                len(ref.open_ids), sorted(ref.open_ids)[:5]))
        self.writers.stop()
        self.final_stats = None

        def none_open():
            s = self.stub.GetStats(pb.GetStatsRequest(),
                                   metadata=self.writer_md,
                                   timeout=RPC_TIMEOUT_S)
            self.final_stats = s
            return s.connections_open == 0 and s.subscribers == 1

        wait_for(none_open, 10, step=0.1)

        def settled():
            self.final = self.server.resources()
            return (self.final["fds"] <= self.baseline["fds"] + FD_SLACK and
                    self.final["threads"] <=
                    self.baseline["threads"] + THREAD_SLACK)

        wait_for(settled, 15, step=0.2)
        self.final = self.server.resources()

    # ---- checks

    def check_all(self):
        ref = self.reference
        ref_events = ref.events
        self.check_reference()
        self.check_writes()
        self.check_limits()
        for s in self.subscribers:
            self.check_subscriber(s, ref_events)
        self.check_resources()

    def check_reference(self):
        ref = self.reference
        sub = ref.sub
        R.check("reference")
        if sub.error is not None:
            R.fail("reference", "reference stream failed: %s" % sub.error)
        if sub.started.head_seq != 0:
            R.fail("reference", "reference started at head %d, not 0" %
                   sub.started.head_seq)
        prev = 0
        for kind, *rest in sub.items:
            if kind == "gap":
                R.fail("reference", "lossless reference got %s" % rest[0])
            elif kind == "event":
                seq = rest[0].seq
                if seq != prev + 1:
                    R.fail("reference", "reference seq %d after %d" %
                           (seq, prev))
                prev = seq
            elif kind == "heartbeat":
                pass
        by_local = {c.local: c for c in self.clients if c.connected}
        anonymous = collections.defaultdict(list)
        listen_addr = {n: "%s:%d" % a for n, a in self.listen.items()}
        for cid, events in ref.conns.items():
            R.check("reference")
            what = "connection %d" % cid
            if not events[0].HasField("opened"):
                R.fail("reference", "%s starts with %s" %
                       (what, events[0].WhichOneof("kind")))
                continue
            closed = [e for e in events if e.HasField("closed")]
            if len(closed) != 1 or not events[-1].HasField("closed"):
                R.fail("reference", "%s: %d Closed, last is %s" %
                       (what, len(closed), events[-1].WhichOneof("kind")))
                continue
            opened = events[0].opened
            client = by_local.pop(opened.remote_address, None)
            if client is None and opened.remote_address == "":
                # Not attributable to a client: only the checks that need no
                # client run below.
                anonymous[events[0].listener].append(cid)
            elif client is None:
                R.fail("reference", "%s from %s: no client of ours" %
                       (what, opened.remote_address))
                continue
            elif events[0].listener != client.listener or \
                    opened.local_address != listen_addr[client.listener]:
                R.fail("reference", "%s: listener %s %s, client used %s" %
                       (what, events[0].listener, opened.local_address,
                        client.listener))
            payload = bytearray()
            read_closed = False
            for e in events[1:-1]:
                if e.HasField("opened"):
                    R.fail("reference", "%s: a second Opened" % what)
                elif e.HasField("data"):
                    if read_closed:
                        R.fail("reference", "%s: Data after ReadClosed" % what)
                    if e.data.size != len(e.data.payload):
                        R.fail("reference", "%s: Data size %d, payload %d" %
                               (what, e.data.size, len(e.data.payload)))
                    payload += e.data.payload
                elif e.HasField("read_closed"):
                    if read_closed:
                        R.fail("reference", "%s: two ReadClosed" % what)
                    read_closed = True
            c = closed[0].closed
            R.check("bytes_received")
            if c.bytes_received != sum(len(e.data.payload) for e in events
                                       if e.HasField("data")):
                R.fail("bytes_received", "%s: Closed.bytes_received %d, Data total "
                       "%d, reason %s %r, events %s" %
                       (what, c.bytes_received, len(payload),
                        pb.CloseReason.Name(c.reason), c.detail,
                        " ".join(e.WhichOneof("kind") for e in events)[:300]))
            if c.reason == pb.CLOSE_REASON_REJECTED and len(events) != 2:
                R.fail("reference", "%s: REJECTED after %d events" %
                       (what, len(events) - 2))
            if client is None:
                continue
            client.cid = cid
            client.closed = c
            client.payload = payload
            sent = bytes(client.sent)
            if c.reason == pb.CLOSE_REASON_PEER_CLOSED:
                R.check("reference")
                if not client.half_closed:
                    R.fail("reference", "%s: PEER_CLOSED but the client sent "
                           "no FIN" % what)
                if payload != sent:
                    R.fail("reference", "%s (client %d, seed %d): the server "
                           "saw FIN but Data (%d B) != sent (%d B), first "
                           "difference at %d" %
                           (what, client.index, self.seed, len(payload),
                            len(sent), first_diff(payload, sent)))
            elif not sent.startswith(payload):
                R.fail("reference", "%s (client %d): Data (%d B) is not a "
                       "prefix of what the client sent (%d B), reason %s" %
                       (what, client.index, len(payload), len(sent),
                        pb.CloseReason.Name(c.reason)))
        # Clients no Opened named: as many as there were anonymous Opened
        # events on their listener is the address bug below; more is a lost
        # connection.
        unnamed = collections.defaultdict(list)
        for client in by_local.values():
            unnamed[client.listener].append(client)
        for listener in LISTENERS:
            lost = len(unnamed[listener]) - len(anonymous[listener])
            if lost > 0:
                R.fail("reference", "%d clients on listener %s connected but "
                       "no Opened names them, e.g. client %d %s" %
                       (lost, listener, unnamed[listener][0].index,
                        unnamed[listener][0].local))
        n = sum(len(v) for v in anonymous.values())
        self.anonymous = n
        R.check("addresses")
        if n:
            example = min(min(v) for v in anonymous.values() if v)
            R.fail("addresses", "%d of %d Opened events have an empty "
                   "remote_address (e.g. connection %d: %s); those clients "
                   "had reset before the server accepted them" %
                   (n, len(ref.conns), example,
                    " ".join(short(e) for e in ref.conns[example])))

    def check_writes(self):
        for c in self.clients:
            if not c.connected or not hasattr(c, "cid"):
                continue
            ops = self.writers.conn_ops.get(c.cid)
            oks = [] if ops is None else [o for o in ops.ops if o[2] == "OK"]
            # A Write answered ABORTED failed on a socket that failed: the
            # connection must have ended RESET or ERROR, and the client may
            # hold a prefix of its bytes too (it is the last write that took
            # effect).
            failed = [] if ops is None else [
                o for o in ops.ops if o[2] == "ABORTED"]
            took = [] if ops is None else [
                o for o in ops.ops if o[2] in ("OK", "ABORTED")]
            expected = b"".join(o[1] for o in took if o[0].startswith("write"))
            aborted = any(o[0] == "abort" for o in oks)
            got = bytes(c.received)
            what = "connection %d (client %d, %s)" % (
                c.cid, c.index, pb.CloseReason.Name(c.closed.reason))
            R.check("writes")
            if c.closed.reason == pb.CLOSE_REASON_REJECTED:
                if oks or got:
                    R.fail("writes", "%s: %d RPCs OK'd, %d B received on a "
                           "rejected connection" % (what, len(oks), len(got)))
                continue
            if failed and c.closed.reason not in (pb.CLOSE_REASON_RESET,
                                                  pb.CLOSE_REASON_ERROR):
                R.fail("writes", "%s: a Write answered ABORTED but the "
                       "connection did not end RESET or ERROR" % what)
            exact = not (c.reset or c.saw_reset or aborted or failed or
                         c.closed.reason in (pb.CLOSE_REASON_RESET,
                                             pb.CLOSE_REASON_ERROR))
            if exact and c.timed_out:
                exact = False  # already a liveness violation
            if exact:
                R.op("write_check_exact")
                if got != expected:
                    R.fail("writes", "%s: received %d B != %d B of OK'd "
                           "Writes, first difference at %d (ops %s)" %
                           (what, len(got), len(expected),
                            first_diff(got, expected), summarize(oks)))
                elif c.closed.bytes_sent != len(got):
                    R.fail("writes", "%s: Closed.bytes_sent %d, client got %d"
                           % (what, c.closed.bytes_sent, len(got)))
            else:
                R.op("write_check_prefix")
                if not expected.startswith(got):
                    R.fail("writes", "%s: received %d B is not a prefix of "
                           "the %d B of OK'd Writes, first difference at %d" %
                           (what, len(got), len(expected),
                            first_diff(got, expected)))
                if c.closed.bytes_sent < len(got):
                    R.fail("writes", "%s: Closed.bytes_sent %d < %d received"
                           % (what, c.closed.bytes_sent, len(got)))

    def check_limits(self):
        ref = self.reference
        per_ip_limit = SERVER_FLAGS["max_connections_per_ip"]
        total_limit = SERVER_FLAGS["max_connections"]
        open_by_ip = collections.Counter()
        open_ids = {}
        rejected = set()
        for cid, events in ref.conns.items():
            if events[-1].HasField("closed") and \
                    events[-1].closed.reason == pb.CLOSE_REASON_REJECTED:
                rejected.add(cid)
        worst_total = worst_ip = 0
        for seq in range(1, ref.head + 1):
            e = ref.events.get(seq)
            if e is None or e.connection_id in rejected:
                continue
            if e.HasField("opened"):
                ip = e.opened.remote_address.rsplit(":", 1)[0]
                open_ids[e.connection_id] = ip
                if ip:  # an empty address is the "addresses" violation
                    open_by_ip[ip] += 1
                worst_ip = max(worst_ip, open_by_ip[ip])
                worst_total = max(worst_total, len(open_ids))
                if open_by_ip[ip] > per_ip_limit:
                    R.fail("limits", "seq %d: %d connections open from %s" %
                           (seq, open_by_ip[ip], ip))
                if len(open_ids) > total_limit:
                    R.fail("limits", "seq %d: %d connections open" %
                           (seq, len(open_ids)))
            elif e.HasField("closed"):
                ip = open_ids.pop(e.connection_id, None)
                if ip:
                    open_by_ip[ip] -= 1
        R.check("limits")
        self.rejected = len(rejected)
        self.worst = (worst_total, worst_ip)
        for clients, k in self.bursts:
            R.check("limits")
            got = [c for c in clients if getattr(c, "cid", None)]
            n_rejected = sum(1 for c in got
                             if c.closed.reason == pb.CLOSE_REASON_REJECTED)
            # A writer may close a burst connection while the burst is still
            # being accepted, which frees its slot: each such close before
            # the burst's last Opened may let one more in.
            conns = [ref.conns[c.cid] for c in got]
            last_open = max(events[0].seq for events in conns) if conns else 0
            early = sum(1 for events in conns if events[-1].seq < last_open and
                        events[-1].closed.reason != pb.CLOSE_REASON_REJECTED)
            want = k - early
            if len(got) == len(clients) and n_rejected < want:
                R.fail("limits", "burst of %d from %s: %d REJECTED, want at "
                       "least %d (%d closed early)" %
                       (len(clients), BURST_IP, n_rejected, want, early))
        if self.bursts and not rejected:
            R.fail("limits", "no connection was ever REJECTED")

    def check_subscriber(self, s, ref_events):
        spec = s.spec
        family = "lossless" if spec.lossless else "lossy"
        name = spec.describe()
        R.check(family)
        # Lossless delivery can pause ingestion: it needs the writer role
        # (--lossless_role's default); a reader must be refused.
        reader_lossless = spec.lossless and spec.token != self.writer_token
        if s.error is not None:
            code = s.error.code()
            if code == grpc.StatusCode.UNAUTHENTICATED and \
                    spec.token != self.writer_token:
                R.op("subscribe_token_rotated_before_call")  # a raced reload
                return
            if reader_lossless and code == grpc.StatusCode.PERMISSION_DENIED \
                    and "--lossless_role" in s.error.details():
                R.op("subscribe_lossless_reader_refused")
                return
            R.fail(family, "%s failed: %s %s" % (name, code,
                                                 s.error.details()))
            return
        if reader_lossless:
            R.fail(family, "%s: a reader token held a lossless subscription"
                   % name)
            return
        if s.started is None:
            if s.items:
                R.fail(family, "%s: messages before Started" % name)
            return
        if s.started.server_epoch != self.epoch:
            R.fail(family, "%s: epoch %s" % (name, s.started.server_epoch))
        after = spec.resume if spec.resume else s.started.head_seq
        items = [i for i in s.items]
        if spec.resume:
            R.check("resume")
            # The first message may be the HISTORY_EXPIRED gap.
            if items and items[0][0] == "gap" and \
                    items[0][1].reason == pb.GAP_REASON_HISTORY_EXPIRED:
                g = items[0][1]
                if g.first_seq != spec.resume + 1 or \
                        g.lost != g.last_seq - g.first_seq + 1 or \
                        g.last_seq > s.started.head_seq:
                    R.fail("resume", "%s: expired gap %d..%d lost %d (head %d)"
                           % (name, g.first_seq, g.last_seq, g.lost,
                              s.started.head_seq))
                if s.started.oldest_seq and \
                        g.last_seq + 1 != s.started.oldest_seq:
                    R.fail("resume", "%s: expired gap ends at %d, oldest "
                           "retained %d" % (name, g.last_seq,
                                            s.started.oldest_seq))
                after = g.last_seq
                items = items[1:]
                R.op("resume_history_expired")
            elif s.started.oldest_seq > spec.resume + 1:
                R.fail("resume", "%s: resume after %d with oldest %d but no "
                       "HISTORY_EXPIRED gap first" %
                       (name, spec.resume, s.started.oldest_seq))
                return
            else:
                R.op("resume_exact")
        delivered = lost = 0
        prev = after
        expected_total = 0
        for item in items:
            kind = item[0]
            if kind == "heartbeat":
                hb, d, l = item[1], item[2], item[3]
                if (hb.delivered, hb.lost) != (d, l):
                    R.fail(family, "%s: Heartbeat delivered/lost %d/%d, "
                           "stream had %d/%d" % (name, hb.delivered, hb.lost,
                                                 d, l))
                continue
            if kind == "gap":
                g = item[1]
                if spec.lossless:
                    R.fail("lossless", "%s: gap %d..%d (%s) on a lossless "
                           "stream" % (name, g.first_seq, g.last_seq,
                                       pb.GapReason.Name(g.reason)))
                    return
                if g.reason != pb.GAP_REASON_SUBSCRIBER_TOO_SLOW or \
                        g.first_seq <= prev or g.last_seq < g.first_seq:
                    R.fail("lossy", "%s: gap %d..%d %s after seq %d" %
                           (name, g.first_seq, g.last_seq,
                            pb.GapReason.Name(g.reason), prev))
                    return
                missed = self.count_matching(spec, prev + 1, g.first_seq - 1)
                if missed:
                    R.fail("lossy", "%s: %d matching events between %d and "
                           "gap %d..%d neither delivered nor counted" %
                           (name, missed, prev, g.first_seq, g.last_seq))
                    return
                matching = self.count_matching(spec, g.first_seq, g.last_seq)
                if g.lost != matching:
                    R.fail("lossy", "%s: gap %d..%d lost=%d, the reference "
                           "has %d matching events there" %
                           (name, g.first_seq, g.last_seq, g.lost, matching))
                lost += g.lost
                R.op("gap_too_slow_checked")
                expected_total += matching
                prev = g.last_seq
                continue
            e = item[1]
            R.check(family)
            if e.seq <= prev:
                R.fail(family, "%s: seq %d after %d" % (name, e.seq, prev))
                return
            missed = self.count_matching(spec, prev + 1, e.seq - 1)
            if missed:
                R.fail(family, "%s: %d matching events between %d and %d "
                       "missing, no Gap" % (name, missed, prev, e.seq))
                return
            r = ref_events.get(e.seq)
            if r is None or not spec.matches(r) or spec.expected(r) != e:
                R.fail(family, "%s: event %d differs from the reference "
                       "(%s vs %s)" % (name, e.seq, short(e), short(r)))
                return
            delivered += 1
            expected_total += 1
            prev = e.seq
        if delivered + lost != expected_total:
            R.fail(family, "%s: received %d + lost %d != %d matching" %
                   (name, delivered, lost, expected_total))
        R.op("events_checked", delivered)

    def count_matching(self, spec, first, last):
        n = 0
        for seq in range(first, last + 1):
            e = self.reference.events.get(seq)
            if e is not None and spec.matches(e):
                n += 1
        return n

    def check_resources(self):
        R.check("resources")
        s = self.final_stats
        b, f = self.baseline, self.final
        rss_slack = RSS_SLACK_MIB_ASAN if self.server.asan else RSS_SLACK_MIB
        self.rss_slack = rss_slack
        if s is None:
            R.fail("resources", "no final GetStats")
            return
        if s.connections_open != 0:
            R.fail("resources", "GetStats.connections_open %d after every "
                   "client closed" % s.connections_open)
        if s.subscribers != 1:
            R.fail("resources", "GetStats.subscribers %d, only the reference "
                   "is left" % s.subscribers)
        if s.head_seq != self.reference.head or \
                s.events_published != self.reference.head:
            R.fail("resources", "GetStats head %d published %d, reference "
                   "saw %d" % (s.head_seq, s.events_published,
                               self.reference.head))
        if s.connections_rejected != self.rejected:
            R.fail("resources", "GetStats.connections_rejected %d, reference "
                   "counts %d" % (s.connections_rejected, self.rejected))
        if f["fds"] > b["fds"] + FD_SLACK:
            R.fail("resources", "fds %d, baseline %d (+%d allowed)" %
                   (f["fds"], b["fds"], FD_SLACK))
        if f["threads"] > b["threads"] + THREAD_SLACK:
            R.fail("resources", "threads %d, baseline %d (+%d allowed)" %
                   (f["threads"], b["threads"], THREAD_SLACK))
        if f["rss_mib"] > b["rss_mib"] + rss_slack:
            R.fail("resources", "RSS %.1f MiB, baseline %.1f (+%d allowed)" %
                   (f["rss_mib"], b["rss_mib"], rss_slack))

    # ---- shutdown

    def shutdown(self):
        R.check("shutdown")
        self.reference.sub.stop()
        self.channel.close()
        proc = self.server.proc
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            R.fail("shutdown", "server still running 20 s after SIGTERM; "
                   "killed")
            code = None
        if code is not None and code != 0:
            R.fail("shutdown", "server exited %d on SIGTERM" % code)
        text = self.server.stderr_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:", "ThreadSanitizer"):
            if marker in text:
                at = text.index(marker)
                R.fail("shutdown", "sanitizer report in server stderr: %s" %
                       text[max(0, at - 200):at + 2000])
        self.exit_code = code


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def short(e):
    if e is None:
        return "none"
    return "seq=%d conn=%d %s %s" % (e.seq, e.connection_id, e.listener,
                                     e.WhichOneof("kind"))


def summarize(ops):
    return ", ".join("%s(%d)" % (k, len(d)) for k, d, _ in ops[:10])


def main():
    global pb, pbg, grpc
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("proto_root")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--poller", choices=POLLERS, default=None,
                        help="default: chosen by the seed")
    parser.add_argument("--clients", type=int, default=24,
                        help="random raw clients running at once")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    sys.path.insert(0, args.proto_root)
    import grpc as grpc_module  # pylint: disable=import-outside-toplevel
    from fanin.v1 import fanin_pb2, fanin_pb2_grpc  # pylint: disable=import-outside-toplevel
    grpc, pb, pbg = grpc_module, fanin_pb2, fanin_pb2_grpc
    for field, value in (("opened", 1), ("data", 2), ("writable", 3),
                         ("read_closed", 4), ("closed", 5), ("readable", 6)):
        KIND_OF_FIELD[field] = value
    print("soak seed %d (replay: --seed=%d)" % (args.seed, args.seed),
          flush=True)
    tmp = tempfile.mkdtemp(prefix="fanin-soak-",
                           dir=os.environ.get("TEST_TMPDIR"))
    soak = Soak(args)
    started = time.monotonic()
    soak.start(args.binary, tmp)
    try:
        soak.run()
        soak.check_all()
    finally:
        soak.shutdown()
    print_summary(soak, time.monotonic() - started)
    failed = sum(1 for f in FAMILIES if R.violations[f])
    return 1 if failed else 0


def print_summary(soak, elapsed):
    print("\n== soak summary: seed %d, poller %s, %.0f s ==" %
          (soak.seed, soak.poller, elapsed))
    print("operations:")
    for kind, n in sorted(R.ops.items()):
        print("  %-40s %d" % (kind, n))
    print("events: %d published (reference), %d checked on other streams" %
          (soak.reference.head, R.ops["events_checked"]))
    kinds = collections.Counter(e.WhichOneof("kind")
                                for e in soak.reference.events.values())
    print("reference events by kind: %s" % ", ".join(
        "%s=%d" % kv for kv in sorted(kinds.items())))
    print("connections: %d client sockets, %d rejected, at most %d open, "
          "%d from one IP" % (len(soak.clients), soak.rejected, soak.worst[0],
                              soak.worst[1]))
    b, f = soak.baseline, soak.final
    print("resources (baseline -> end; bounds +%d fds, +%d threads, +%d MiB): "
          "fds %d -> %d, threads %d -> %d, RSS %.1f -> %.1f MiB" %
          (FD_SLACK, THREAD_SLACK, soak.rss_slack, b["fds"], f["fds"],
           b["threads"], f["threads"], b["rss_mib"], f["rss_mib"]))
    print("server exit code on SIGTERM: %s" % soak.exit_code)
    total = sum(len(v) for v in R.violations.values())
    print("invariant violations: %d" % total)
    passed = failed = 0
    for family in FAMILIES:
        v = R.violations[family]
        print("  %-10s %s (%d checks, %d violations)" %
              (family, "FAIL" if v else "ok", R.checked[family], len(v)))
        if v:
            failed += 1
            for what in v[:3]:
                print("      " + what[:500])
        else:
            passed += 1
    print("%d passed, %d failed" % (passed, failed), flush=True)


if __name__ == "__main__":
    sys.exit(main())
