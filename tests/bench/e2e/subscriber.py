#!/usr/bin/python3
"""The python3-grpcio subscriber: the same checks and JSON line as subscriber.cc.

Reads one fanin.v1 Subscribe stream, reassembles each connection's Data
payloads, checks seq continuity per connection (see frame.h for the message
layout), measures latency from the send time in each message to the arrival of
its batch, and prints one JSON line when --expect_connections Closed events have
arrived, the stream ends, or --timeout passes.

    /usr/bin/python3 subscriber.py --proto_dir=bazel-bin/proto \
        --server=127.0.0.1:43121 --expect_connections=1000
"""

import argparse
import json
import os
import signal
import struct
import sys
import threading
import time

HEADER = struct.Struct("=IIq")


class Histogram:
    """Log-linear buckets, 64 per power of two, as histogram.h: bounded memory."""

    def __init__(self):
        self.buckets = {}
        self.count = 0
        self.max = 0

    @staticmethod
    def bucket_of(v):
        if v < 128:
            return v
        shift = v.bit_length() - 1 - 6
        return 64 * shift + (v >> shift)

    @staticmethod
    def midpoint_of(b):
        if b < 128:
            return b
        shift = b // 64 - 1
        return ((b - 64 * shift) << shift) + (1 << shift) // 2

    def record(self, v):
        v = max(0, v)
        b = self.bucket_of(v)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        if v > self.max:
            self.max = v

    def quantile(self, q):
        if not self.count:
            return 0
        rank = min(self.count, max(1, -(-int(q * self.count * 1000000) // 1000000)))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(self.midpoint_of(b), self.max)
        return self.max


class Verifier:
    def __init__(self, message_bytes):
        self.size = message_bytes
        self.conns = {}  # key -> [partial bytes, index, next_seq]
        self.index_owner = {}
        self.messages = 0
        self.bytes = 0
        self.errors = 0
        self.first_error = ""
        self.first_arrival = 0
        self.last_arrival = 0
        self.latency = Histogram()

    def fail(self, what):
        if not self.errors:
            self.first_error = what
        self.errors += 1

    def on_bytes(self, key, data, arrival):
        if not data:
            return
        if not self.first_arrival:
            self.first_arrival = arrival
        self.last_arrival = arrival
        self.bytes += len(data)
        conn = self.conns.get(key)
        if conn is None:
            conn = self.conns[key] = [b"", -1, 0]
        if conn[0]:
            data = conn[0] + data
        size = self.size
        whole = len(data) - len(data) % size
        index, next_seq = conn[1], conn[2]
        record = self.latency.record
        for off in range(0, whole, size):
            idx, seq, sent = HEADER.unpack_from(data, off)
            if index < 0:
                index = idx
                if self.index_owner.setdefault(idx, key) != key:
                    self.fail(f"connection index {idx} seen on two connections")
            elif idx != index:
                self.fail(f"connection index changed from {index} to {idx}")
            if seq != next_seq:
                self.fail(f"connection index {idx}: seq {seq} where {next_seq} was expected")
            next_seq = seq + 1
            record(arrival - sent)
        self.messages += whole // size
        conn[0] = data[whole:]
        conn[1], conn[2] = index, next_seq

    def on_close(self, key):
        conn = self.conns.get(key)
        if conn and conn[0]:
            self.fail(f"connection index {conn[1]} closed with {len(conn[0])} "
                      "bytes of an unfinished message")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proto_dir", required=True,
                   help="directory holding fanin/v1/fanin_pb2.py (bazel-bin/proto)")
    p.add_argument("--server", required=True)
    p.add_argument("--delivery", default="lossless", choices=["lossless", "lossy"])
    p.add_argument("--max_batch_events", type=int, default=0)
    p.add_argument("--message_bytes", type=int, default=64)
    p.add_argument("--expect_connections", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--ready_file", default="")
    args = p.parse_args()

    sys.path.insert(0, args.proto_dir)
    import grpc  # pylint: disable=import-outside-toplevel
    from fanin.v1 import fanin_pb2, fanin_pb2_grpc  # pylint: disable=import-outside-toplevel

    channel = grpc.insecure_channel(args.server, options=[
        ("grpc.max_receive_message_length", -1)])
    stub = fanin_pb2_grpc.FanInStub(channel)
    request = fanin_pb2.SubscribeRequest(
        delivery=(fanin_pb2.DELIVERY_LOSSY if args.delivery == "lossy"
                  else fanin_pb2.DELIVERY_LOSSLESS),
        max_batch_events=args.max_batch_events)
    call = stub.Subscribe(request)

    state = {"timed_out": False, "finished": False}

    def watchdog():
        deadline = time.monotonic() + args.timeout
        while not state["finished"]:
            if time.monotonic() > deadline:
                state["timed_out"] = True
                call.cancel()
                return
            time.sleep(0.01)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), call.cancel()))
    threading.Thread(target=watchdog, daemon=True).start()

    v = Verifier(args.message_bytes)
    c = dict(batches=0, events=0, data_events=0, opened=0, closed=0, rejected=0,
             gaps=0, gap_lost=0, heartbeats=0)
    started = 0
    done = False
    status = "OK"
    now = time.clock_gettime_ns
    mono = time.CLOCK_MONOTONIC
    rejected_reason = fanin_pb2.CLOSE_REASON_REJECTED
    try:
        for response in call:
            arrival = now(mono)
            which = response.WhichOneof("message")
            if which == "batch":
                c["batches"] += 1
                for e in response.batch.events:
                    c["events"] += 1
                    kind = e.WhichOneof("kind")
                    if kind == "data":
                        c["data_events"] += 1
                        v.on_bytes(e.connection_id, e.data.payload, arrival)
                    elif kind == "opened":
                        c["opened"] += 1
                    elif kind == "closed":
                        c["closed"] += 1
                        if e.closed.reason == rejected_reason:
                            c["rejected"] += 1
                        v.on_close(e.connection_id)
                if args.expect_connections and c["closed"] >= args.expect_connections:
                    done = True
                    break
            elif which == "started":
                started += 1
                if started == 1 and args.ready_file:
                    tmp = args.ready_file + ".tmp"
                    with open(tmp, "w") as f:
                        f.write("started\n")
                    os.rename(tmp, args.ready_file)
            elif which == "gap":
                c["gaps"] += 1
                c["gap_lost"] += response.gap.lost
            elif which == "heartbeat":
                c["heartbeats"] += 1
    except grpc.RpcError as e:  # cancelled by the watchdog, or the server went away
        status = str(e.code().value[0])
    state["finished"] = True
    if done:
        call.cancel()
    span = v.last_arrival - v.first_arrival
    h = v.latency
    out = {"event": "done", "role": "subscriber_py", "messages": v.messages,
           "bytes": v.bytes, "errors": v.errors, "first_error": v.first_error,
           "connections_seen": len(v.conns), "elapsed_s": span / 1e9,
           "messages_per_s": v.messages * 1e9 / span if span > 0 else 0.0,
           "p50_us": h.quantile(0.5) / 1e3, "p99_us": h.quantile(0.99) / 1e3,
           "p999_us": h.quantile(0.999) / 1e3, "max_us": h.max / 1e3}
    out.update(c)
    out.update({"timed_out": state["timed_out"],
                "complete": done or (not args.expect_connections and status == "OK"),
                "status": status})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
