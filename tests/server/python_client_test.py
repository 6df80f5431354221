#!/usr/bin/python3
"""Drives fanin_server from Debian's python3-grpcio, a client we did not write.

Uses modules generated from fanin.proto by the system protoc
(//proto:fanin_py_grpc). Starts the server with --ready_file, connects a raw
socket, subscribes, and checks Opened/Data/Closed, Write, ListConnections,
GetStats, an error status, health and reflection (the last two hand-encoded:
python3-grpcio ships neither grpc_health nor grpc_reflection). Exit code 0 on
success, 1 with the reason on stderr otherwise.

Usage: python_client_test.py SERVER_BINARY PROTO_PY_ROOT
"""

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEADLINE_S = 30


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def wait_for(pred, what, timeout=DEADLINE_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.01)  # Polling a condition, bounded by the deadline.
    raise Failure("timed out waiting for " + what)


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def fields(buf):
    """Yields (field, wire_type, value) of a protobuf message (types 0, 2)."""
    i = 0
    while i < len(buf):
        tag = 0
        shift = 0
        while True:
            b = buf[i]
            i += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v = 0
            shift = 0
            while True:
                b = buf[i]
                i += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            yield field, wire, v
        elif wire == 2:
            n = 0
            shift = 0
            while True:
                b = buf[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            yield field, wire, buf[i:i + n]
            i += n
        else:
            raise Failure("unexpected wire type %d" % wire)


def start_server(binary, tmp):
    ready = os.path.join(tmp, "ready")
    proc = subprocess.Popen([
        binary, "--listen=default=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
        "--poller=epoll", "--loops=2", "--ready_file=" + ready
    ])

    def read_ready():
        if proc.poll() is not None:
            raise Failure("server exited with %d before ready" % proc.returncode)
        if not os.path.exists(ready):
            return None
        info = {}
        with open(ready) as f:
            for line in f:
                parts = line.split()
                if parts[0] == "grpc":
                    info["grpc"] = parts[1]
                elif parts[0] == "listen":
                    info["listen " + parts[1]] = parts[2]
        return info

    return proc, wait_for(read_ready, "the ready file")


def run(binary):
    import grpc
    from fanin.v1 import fanin_pb2 as pb
    from fanin.v1 import fanin_pb2_grpc as pbg

    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    proc, info = start_server(binary, tmp)
    channel = None
    try:
        channel = grpc.insecure_channel(info["grpc"])
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
        stub = pbg.FanInStub(channel)

        # Health: HealthCheckRequest{service}, HealthCheckResponse{status}.
        check_health = channel.unary_unary("/grpc.health.v1.Health/Check")
        for service in (b"", b"fanin.v1.FanIn"):
            req = b"\x0a" + varint(len(service)) + service if service else b""
            resp = check_health(req, timeout=DEADLINE_S)
            status = dict((f, v) for f, _, v in fields(resp)).get(1, 0)
            check(status == 1, "health of %r is %d, not SERVING" % (service, status))

        # Reflection: ServerReflectionRequest{list_services = 7}.
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        names = []
        for resp in reflect(iter([b"\x3a\x01*"]), timeout=DEADLINE_S):
            for f, _, v in fields(resp):
                if f == 6:  # list_services_response
                    for g, _, svc in fields(v):
                        if g == 1:
                            names += [n.decode() for h, _, n in fields(svc) if h == 1]
        check("fanin.v1.FanIn" in names, "reflection lists %s" % names)

        # Subscribe, read by a thread into a queue.
        events = queue.Queue()
        stream = stub.Subscribe(
            pb.SubscribeRequest(delivery=pb.DELIVERY_LOSSLESS))

        def reader():
            try:
                for msg in stream:
                    events.put(msg)
            except grpc.RpcError as e:
                events.put(e)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        first = events.get(timeout=DEADLINE_S)
        check(isinstance(first, pb.SubscribeResponse) and
              first.WhichOneof("message") == "started", "first is %r" % first)
        check(first.started.server_epoch != "", "empty epoch")

        pending = []

        def next_event(kind):
            end = time.monotonic() + DEADLINE_S
            while time.monotonic() < end:
                for e in pending:
                    if e.WhichOneof("kind") == kind:
                        pending.remove(e)
                        return e
                msg = events.get(timeout=max(0.01, end - time.monotonic()))
                if isinstance(msg, Exception):
                    raise Failure("stream failed: %s" % msg)
                if msg.WhichOneof("message") == "batch":
                    pending.extend(msg.batch.events)
            raise Failure("no %s event" % kind)

        host, port = info["listen default"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
        local = "%s:%d" % sock.getsockname()
        opened = next_event("opened")
        check(opened.opened.remote_address == local,
              "opened from %s, not %s" % (opened.opened.remote_address, local))
        check(opened.listener == "default", "listener " + opened.listener)
        cid = opened.connection_id

        sent = b"hello\x00world"
        sock.sendall(sent)
        got = b""
        while len(got) < len(sent):
            data = next_event("data")
            check(data.connection_id == cid, "data of another connection")
            check(data.data.size == len(data.data.payload), "size != payload")
            got += data.data.payload
        check(got == sent, "payload %r" % got)

        reply = stub.Write(pb.WriteRequest(connection_id=cid, data=b"echo"),
                           timeout=DEADLINE_S)
        check(reply.queued_bytes == 0, "queued %d" % reply.queued_bytes)
        echoed = b""
        while len(echoed) < 4:
            chunk = sock.recv(4 - len(echoed))
            check(chunk, "EOF before the echo")
            echoed += chunk
        check(echoed == b"echo", "client got %r" % echoed)

        listed = stub.ListConnections(pb.ListConnectionsRequest(),
                                      timeout=DEADLINE_S)
        check([c.connection_id for c in listed.connections] == [cid],
              "listed %s" % listed)
        check(listed.connections[0].remote_address == local, "listed address")
        check(listed.connections[0].bytes_received == len(sent), "listed bytes")

        stats = stub.GetStats(pb.GetStatsRequest(), timeout=DEADLINE_S)
        check(stats.poller == "epoll", "poller " + stats.poller)
        check(stats.connections_open == 1, "open %d" % stats.connections_open)
        check(stats.bytes_received == len(sent), "received %d" % stats.bytes_received)
        check(stats.bytes_sent == 4, "sent %d" % stats.bytes_sent)
        check(stats.subscribers == 1, "subscribers %d" % stats.subscribers)

        try:
            stub.Write(pb.WriteRequest(connection_id=0, data=b"x"),
                       timeout=DEADLINE_S)
            raise Failure("Write to connection 0 succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "code %s" % e.code())
            check("connection_id" in e.details(), "details " + e.details())

        # Bytes that are no request at all: INVALID_ARGUMENT naming the
        # method, for every method (raw handlers, not gRPC's empty
        # UNIMPLEMENTED).
        for method in ("GetStats", "CloseConnection", "Read", "Write",
                       "ListConnections", "ListNodes"):
            call = channel.unary_unary("/fanin.v1.FanIn/" + method)
            try:
                call(b"\xff\xff\xff", timeout=DEADLINE_S)
                raise Failure(method + " accepted bytes ff ff ff")
            except grpc.RpcError as e:
                check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                      "%s: code %s" % (method, e.code()))
                check(method in e.details() and "fanin.v1." in e.details(),
                      "%s: details %r" % (method, e.details()))
        garbage = channel.unary_stream("/fanin.v1.FanIn/Subscribe")
        try:
            list(garbage(b"\xff\xff\xff", timeout=DEADLINE_S))
            raise Failure("Subscribe accepted bytes ff ff ff")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                  "Subscribe: code %s" % e.code())
            check("Subscribe" in e.details(), "details %r" % e.details())
        # A 10,000-byte listener name: refused with a short message, not
        # echoed whole into the status (which a client refuses as metadata
        # over its limit).
        long_name = "x" * 10000
        try:
            list(stub.Subscribe(pb.SubscribeRequest(listeners=[long_name]),
                                timeout=DEADLINE_S))
            raise Failure("Subscribe to an unknown listener succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                  "long listener: code %s %r" % (e.code(), e.details()[:200]))
            check(len(e.details()) < 300 and "10000 bytes" in e.details(),
                  "long listener: details %r" % e.details()[:400])
        try:
            stub.ListConnections(pb.ListConnectionsRequest(listener=long_name),
                                 timeout=DEADLINE_S)
            raise Failure("ListConnections of an unknown listener succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                  "list long listener: code %s" % e.code())
            check(len(e.details()) < 300, "details %r" % e.details()[:400])

        stub.CloseConnection(pb.CloseConnectionRequest(connection_id=cid),
                             timeout=DEADLINE_S)
        check(sock.recv(100) == b"", "expected EOF after CloseConnection")
        sock.close()
        closed = next_event("closed")
        check(closed.connection_id == cid, "closed another connection")
        check(closed.closed.reason == pb.CLOSE_REASON_CLOSED_BY_SUBSCRIBER,
              "reason %d" % closed.closed.reason)
        check(closed.closed.bytes_sent == 4, "closed.bytes_sent")
        stream.cancel()
        thread.join(DEADLINE_S)
    finally:
        if channel is not None:
            channel.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise Failure("server did not stop on SIGTERM")
    check(code == 0, "server exited with %d" % code)


def idle_client_shutdown(binary):
    """SIGTERM with one idle client connected (it made one call, none is in
    flight): nothing is owed, so the server exits at once instead of waiting
    for the idle connection to acknowledge gRPC's GOAWAY ping (5 s before)."""
    import grpc

    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    proc, info = start_server(binary, tmp)
    channel = grpc.insecure_channel(info["grpc"])
    try:
        check_health = channel.unary_unary("/grpc.health.v1.Health/Check")
        check_health(b"", timeout=DEADLINE_S)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise Failure("server did not stop on SIGTERM")
        took = time.monotonic() - start
        check(code == 0, "server exited with %d" % code)
        # Generous for a loaded machine; the drain timeout is 10 s and the
        # old wait 5 s.
        check(took < 2.0, "SIGTERM with an idle client took %.2f s" % took)
    finally:
        channel.close()
        if proc.poll() is None:
            proc.kill()


def main():
    binary, proto_root = sys.argv[1], sys.argv[2]
    sys.path.insert(0, proto_root)
    try:
        run(binary)
        idle_client_shutdown(binary)
    except Failure as e:
        print("FAIL:", e, file=sys.stderr)
        return 1
    print("PASS: python3-grpcio drove fanin_server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
