#!/usr/bin/env python3
"""Deliberate faults, one per promise: each must make a test fail.

Every promise of README.md's "Semantics you can rely on" (and the write/close
and back-pressure promises around it) has a fault below: a small edit to the
server's code that breaks exactly that promise. For each fault this script
copies the tree to a scratch folder, applies the edit, builds and runs the
tests named with it, and expects them to FAIL. A fault whose tests still pass
is a promise no test guards: the script says MISSED and exits non-zero. A
fault whose text no longer matches the code (after a refactor) is STALE, and
one that does not compile is BROKEN: fix the entry.

  python3 tests/faults/inject.py            # every fault (~70 min here)
  python3 tests/faults/inject.py --list     # names and promises
  python3 tests/faults/inject.py --only lossless-no-pause-check,close-fin-early

Results are recorded in docs/RELIABILITY.md. Not part of CI: each fault is a
rebuild and a test run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRATCH = os.environ.get("FANIN_FAULTS_DIR", "/tmp/fanin-faults/tree")
DISK_CACHE = os.path.join(os.environ.get("HOME", "/root"), ".cache/fanin-bazel-disk")

STREAM = "//tests/server:stream_test"
WRITE_CLOSE = "//tests/server:write_close_test"
PULL = "//tests/server:pull_test"
LIMITS = "//tests/server:limits_test"
HUB = "//tests/fanout:event_hub_test"
SUB_LIMITS = "//tests/server:subscriber_limits_test"
AUTH = "//tests/grpc:auth_test"
PYTHON = "//tests/server:python_client_test"
FD_LIMIT = "//tests/ops:fd_limit_test"
KEEPALIVE = "//tests/ops:keepalive_test"
FAULTS_E2E = "//tests/server:faults_test"
SOAK = "//tests/soak:soak_test"
CODEC = "//tests/fanout:event_codec_test"
CLUSTER = "//tests/cluster:cluster_test"
FAILURES = "//tests/cluster:failures_test"
TLS_LISTENER = "//tests/server:tls_listener_test"
PROXY_PARSER = "//tests/net:proxy_protocol_test"
GROUP = "//tests/fanout:group_test"
GROUP_E2E = "//tests/server:group_test"
CLUSTER_GROUPS = "//tests/cluster:groups_test"
CLUSTER_GROUP_UNIT = "//tests/fanout:cluster_group_test"

# name, promise, file, find (must occur exactly once), replace, tests, filter
FAULTS = [
    dict(name="lossless-no-pause-check",
         promise="lossless: past --subscriber_queue_bytes the server stops reading the sockets it matches",
         file="server/core/connection.cc",
         find="if (shard_->hub()->ReadingPaused(listener_->index, id_)) {",
         replace="if (false && shard_->hub()->ReadingPaused(listener_->index, id_)) {",
         tests=[STREAM], filter="*StalledLossless*:*LosslessByteExact*"),
    dict(name="lossless-drops-evicted",
         promise="lossless: no event is dropped, evicted events wait in the subscriber's overflow",
         file="server/fanout/event_hub.cc",
         find="sub->overflow.push_back(e);",
         replace="(void)e;",
         tests=[STREAM, HUB], filter="*Lossless*"),
    dict(name="lossy-gap-undercounts",
         promise="lossy: a Gap's lost is the exact number of matching events missed",
         file="server/fanout/event_hub.cc",
         find="++sub->lost_pending;",
         replace="sub->lost_pending += e->seq % 2;",
         tests=[STREAM, HUB], filter="*Lossy*"),
    dict(name="seq-repeats",
         promise="seq is strictly increasing in every stream",
         file="server/fanout/event_hub.cc",
         find="seq = event->seq = ++head_;",
         replace="seq = event->seq = (published_ % 97 == 96) ? head_ : ++head_;",
         tests=[STREAM, HUB], filter="*SequencesAndFilters*:*LosslessByteExactDefault*"),
    dict(name="ids-reused",
         promise="connection ids are never reused",
         file="server/core/fanin_core.cc",
         find="const uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);",
         replace="const uint64_t id = 1 + next_id_.fetch_add(1, std::memory_order_relaxed) % 64;",
         tests=[STREAM], filter="*LosslessByteExactDefault*"),
    dict(name="peer-close-without-closed",
         promise="a connection's events end with Closed",
         file="server/core/connection.cc",
         find="  shard->Erase(id_);  // Deletes this.\n  shard->Publish(std::move(event));",
         replace="  shard->Erase(id_);  // Deletes this.\n  if (reason != fanin::v1::CLOSE_REASON_PEER_CLOSED) shard->Publish(std::move(event));",
         tests=[WRITE_CLOSE], filter="*PeerFin*"),
    dict(name="filter-ignores-listeners",
         promise="filters (listeners) apply before anything is queued",
         file="server/fanout/filter.h",
         find="return (listeners_ >> listener & 1u) != 0 &&\n",
         replace="return ((listeners_ | ~uint64_t{0}) >> listener & 1u) != 0 &&\n",
         tests=[STREAM], filter="*FiltersAndPayloadOptions*"),
    dict(name="max-payload-off-by-one",
         promise="max_payload_bytes trims Data to at most that many bytes; size says how many were read",
         file="server/fanout/event_codec.cc",
         find="if (p.max != 0) return std::min<size_t>(p.max, e.data_size);",
         replace="if (p.max != 0) return std::min<size_t>(p.max + 1, e.data_size);",
         tests=[STREAM, HUB, CODEC], filter="*FiltersAndPayloadOptions*:*EventCodec*"),
    dict(name="resume-one-late",
         promise="resume_after_seq continues with the next event",
         file="server/fanout/event_hub.cc",
         find="sub->cursor = spec.resume_after_seq + 1;",
         replace="sub->cursor = spec.resume_after_seq + 2;",
         tests=[STREAM, HUB], filter="*Resume*"),
    dict(name="expired-history-wrong-reason",
         promise="expired history is a Gap with reason HISTORY_EXPIRED",
         file="server/fanout/event_hub.cc",
         find="fanin::v1::GAP_REASON_HISTORY_EXPIRED);",
         replace="fanin::v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);",
         tests=[STREAM, HUB], filter="*Resume*"),
    dict(name="epoch-change-ignored",
         promise="a resume_epoch of an earlier lifetime is a Gap EPOCH_CHANGED, then the oldest retained event",
         file="server/fanout/event_hub.cc",
         find="if (!spec.resume_epoch.empty() && spec.resume_epoch != epoch_) {",
         replace="if (false) {",
         tests=[STREAM, HUB], filter="*Resume*"),
    dict(name="heartbeat-never",
         promise="a Heartbeat on an idle stream every --heartbeat_interval",
         file="server/grpc/fanin_service.cc",
         find="heartbeat_due_ = true;",
         replace="heartbeat_due_ = false;",
         tests=[STREAM], filter="*Heartbeat*"),
    dict(name="pull-short-read-no-rearm",
         promise="pull mode: a short Read re-arms Readable",
         file="server/core/connection.cc",
         find="if (static_cast<uint32_t>(n) < max) {  // Drained: re-arm Readable.\n      readable_announced_ = false;",
         replace="if (static_cast<uint32_t>(n) < max) {  // Drained: re-arm Readable.\n      readable_announced_ = true;",
         tests=[PULL], filter="*ShortReadRearms*"),
    dict(name="close-fin-early",
         promise="graceful CloseConnection flushes every queued byte, then sends FIN",
         file="server/core/connection.cc",
         find="  state_ = State::kClosing;\n  if (out_head_ == out_.size()) {\n    SendFinAndLinger();",
         replace="  state_ = State::kClosing;\n  if (true) {\n    SendFinAndLinger();",
         tests=[WRITE_CLOSE], filter="*GracefulClose*"),
    dict(name="close-after-fin-early",
         promise="Write(close_after) closes once flushed",
         file="server/core/connection.cc",
         find="    if (result == 0) {\n      SendFinAndLinger();  // May delete this.",
         replace="    if (true) {\n      SendFinAndLinger();  // May delete this.",
         tests=[WRITE_CLOSE], filter="*CloseAfter*"),
    dict(name="abort-without-rst",
         promise="CloseConnection(abort) resets the client",
         file="server/core/connection.cc",
         find="struct linger lg = {1, 0};",
         replace="struct linger lg = {0, 0};",
         tests=[WRITE_CLOSE], filter="*Abort*"),
    dict(name="write-over-limit-queued",
         promise="Write past the outbound buffer is RESOURCE_EXHAUSTED and queues nothing",
         file="server/core/connection.cc",
         find="if (queued + data.size() > limit) {",
         replace="if (queued > limit) {",
         tests=[WRITE_CLOSE], filter="*OutboundLimit*"),
    dict(name="writable-never",
         promise="Writable follows a write that had to wait, once the queue drained",
         file="server/core/connection.cc",
         find="  if (write_waited_) {\n    write_waited_ = false;",
         replace="  if (false) {\n    write_waited_ = false;",
         tests=[WRITE_CLOSE], filter="*Writable*"),
    dict(name="per-ip-off-by-one",
         promise="--max_connections_per_ip admits exactly that many per source address",
         file="server/core/shard.cc",
         find="if (n >= max_per_ip_) return Refusal::kPerIp;",
         replace="if (n > max_per_ip_) return Refusal::kPerIp;",
         tests=[LIMITS], filter="*PerIp*"),
    dict(name="max-connections-off-by-one",
         promise="--max_connections admits exactly that many; more are Closed(REJECTED)",
         file="server/core/shard.cc",
         find="if (open_.load(std::memory_order_relaxed) >=\n      static_cast<int64_t>(max_total_)) {",
         replace="if (open_.load(std::memory_order_relaxed) >\n      static_cast<int64_t>(max_total_)) {",
         tests=[LIMITS], filter="*MaxConnectionsRejects*"),
    dict(name="stalled-lossless-never-ended",
         promise="a lossless subscriber that stops reading is ended after --subscriber_stall_timeout and may resume",
         file="server/grpc/fanin_service.cc",
         find="    if (stuck < timeout) return;",
         replace="    if (stuck < timeout || true) return;",
         tests=[SUB_LIMITS], filter="*Stalled*"),
    dict(name="lossless-total-unbounded",
         promise="lossless backlog across subscribers is bounded by --lossless_total_bytes",
         file="server/fanout/event_hub.cc",
         find="    if (sub->lossless && (lossless_subs_ + 1)",
         replace="    if (false && (lossless_subs_ + 1)",
         tests=[SUB_LIMITS], filter="*LosslessTotal*"),
    dict(name="lossless-role-ignored",
         promise="with access control on, lossless delivery needs --lossless_role",
         file="server/grpc/fanin_service.cc",
         find="    status = Authorize(context, Access::kLossless);",
         replace="    status = Authorize(context, Access::kRead);",
         tests=[AUTH], filter="*EveryMethod*"),
    dict(name="unparseable-request-unimplemented",
         promise="a request that does not parse is INVALID_ARGUMENT naming the method",
         file="server/grpc/requests.cc",
         find="  return Refuse(method, absl::StrCat(\"the request (\"",
         replace="  return absl::UnimplementedError(\"\");\n  return Refuse(method, absl::StrCat(\"the request (\"",
         tests=[PYTHON]),
    dict(name="caller-text-echoed-whole",
         promise="error messages quote caller text only as a bounded prefix",
         file="server/base/text.cc",
         find="  if (text.size() <= max_bytes) {",
         replace="  if (text.size() <= max_bytes || true) {",
         tests=[PYTHON]),
    dict(name="shutdown-waits-for-idle-clients",
         promise="SIGTERM finishes as soon as nothing is owed",
         file="server/fanin_server.cc",
         find="server_->Shutdown(absl::ToChronoTime(idle ? absl::Now() : deadline));",
         replace="server_->Shutdown(absl::ToChronoTime(idle ? deadline : deadline));",
         tests=[PYTHON]),
    dict(name="out-of-fds-silent",
         promise="connections shed for want of descriptors are reported Closed(REJECTED)",
         file="server/net/listener.cc",
         find="    if (on_shed_) {",
         replace="    if (false) {",
         tests=[FD_LIMIT]),
    dict(name="lingered-input-counted",
         promise="Closed.bytes_received is the sum of the Data events",
         file="server/core/connection.cc",
         find="    if (!lingering) {\n      bytes_received_ += n;\n      shard_->CountReceived(n);",
         replace="    bytes_received_ += n;\n    if (!lingering) {\n      shard_->CountReceived(n);",
         tests=[SOAK]),
    dict(name="no-server-keepalive",
         promise="a vanished subscriber is noticed within --grpc_keepalive_time + --grpc_keepalive_timeout",
         file="server/fanin_server.cc",
         find="  ApplyTransport(c.transport, &builder);",
         replace="  if (false) ApplyTransport(c.transport, &builder);",
         tests=[KEEPALIVE]),
    dict(name="killed-subscriber-kept",
         promise="a subscriber whose stream ends is dropped and stops holding back anyone",
         file="server/fanout/event_hub.cc",
         find="    if (it != subs_.end()) {",
         replace="    if (false && it != subs_.end()) {",
         tests=[FAULTS_E2E], filter="*Killed*"),
    # Cluster mode (docs/CLUSTER.md).
    dict(name="cluster-no-expected-sequence",
         promise="cluster: one order, contiguous seqs, the same on every node",
         file="server/cluster/cluster_node.cc",
         find="po.ExpectLastSeq = tail.stream_seq;",
         replace="po.ExpectLastSeq = 0;",
         tests=[CLUSTER], filter="*EveryNode*:*Resume*"),
    dict(name="cluster-retry-new-expectation",
         promise="cluster: a batch whose acknowledgement was lost is stored once",
         file="server/cluster/cluster_node.cc",
         find="publish_retries_.fetch_add(1, std::memory_order_relaxed);",
         replace="publish_retries_.fetch_add(1, std::memory_order_relaxed); expect.reset();",
         tests=[CLUSTER], filter="*Republish*"),
    dict(name="cluster-no-stream-fetch",
         promise="cluster: events older than a node's history come from the stream",
         file="server/fanin_server.cc",
         find="c.hub.history_source = true;",
         replace="c.hub.history_source = false;",
         tests=[CLUSTER], filter="*OlderThan*:*Expired*"),
    dict(name="cluster-all-local",
         promise="cluster: requests reach the owning node from any node",
         file="server/cluster/cluster_node.h",
         find="return connection_id >> 32 != incarnation_;",
         replace="return false && connection_id >> 32 != incarnation_;",
         tests=[CLUSTER], filter="*RequestsReach*"),
    dict(name="cluster-no-loss-report",
         promise="cluster: a dead node's connections each close once as NODE_LOST",
         file="server/cluster/cluster_node.cc",
         find="if (!fenced_.load()) DetectLostNodes();",
         replace="(void)0;",
         tests=[FAILURES], filter="*Killed*:*LateJoiner*"),
    dict(name="cluster-fence-keeps-sockets",
         promise="cluster: a node reported lost closes the sockets the cluster reported closed",
         file="server/cluster/cluster_node.cc",
         find="if (local_.close_all) local_.close_all();",
         replace="(void)0;",
         tests=[FAILURES], filter="*CutOff*"),
    # Worker-pool groups in cluster mode (docs/CLUSTER.md, "Worker-pool groups").
    dict(name="cluster-groups-node-local",
         promise="cluster groups: members on every node split the whole cluster's connections, each to one member",
         file="server/fanout/group.cc",
         find="    g->members.push_back(m);\n    g->empty_since_ns = 0;\n    if (!m->remote) {",
         replace="    if (!m->remote) g->members.push_back(m);\n    g->empty_since_ns = 0;\n    if (!m->remote) {",
         tests=[CLUSTER_GROUPS], filter="*SplitTheClusters*"),
    dict(name="cluster-groups-handover-not-read-back",
         promise="cluster groups: a connection moving to another node's member gets what the old member had not delivered, read back from the stream",
         file="server/fanout/group.cc",
         find="    if (list.empty() || from == 0 || from > to) return 0;",
         replace="    if (true || list.empty() || from == 0 || from > to) return 0;",
         tests=[CLUSTER_GROUPS], filter="*Cancelled*:*Killed*"),
    dict(name="cluster-groups-carry-dropped",
         promise="cluster groups: what a member left undelivered is still owed when the connection passes through a member that never delivered it",
         file="server/fanout/group.cc",
         find="      if (c->carry_from != 0 &&\n          (received_through < c->carry_through || unmeasured)) {",
         replace="      if (false && c->carry_from != 0 &&\n          (received_through < c->carry_through || unmeasured)) {",
         tests=[CLUSTER_GROUP_UNIT], filter="*OwedRange*"),
    dict(name="cluster-groups-marks-window-only",
         promise="cluster groups: a leaving member marks everything it ever wrote, even below a read-back that held its floor down",
         file="server/fanout/group.cc",
         find="    uint64_t hi = m.written_max;",
         replace="    uint64_t hi = 0;",
         tests=[CLUSTER_GROUP_UNIT], filter="*MoveAgain*"),
    dict(name="cluster-groups-lossy-loss-dropped",
         promise="cluster groups: a lossy member's losses it was not yet told of are read back by the next member on another node",
         file="server/fanout/group.cc",
         find="      if (c.owner == &m && !c.lost.empty()) lo = std::min(lo, c.lost.first);",
         replace="      (void)0;",
         tests=[CLUSTER_GROUP_UNIT], filter="*Lossy*"),
    dict(name="cluster-groups-readback-closed-unfiltered",
         promise="cluster groups: a read-back delivers only the event kinds the members asked for",
         file="server/fanout/group.cc",
         find="        if (e->kind == fanin::v1::EVENT_KIND_CLOSED &&\n            !g->spec.deliver_closed) {",
         replace="        if (false) {",
         tests=[CLUSTER_GROUP_UNIT], filter="*ClosedEvents*"),
    dict(name="cluster-groups-share-includes-writes",
         promise="cluster groups: a member's write in flight does not count against its group's share (no skip and read-back for it)",
         file="server/fanout/group.cc",
         find="    return held_bytes - writing_bytes;",
         replace="    return held_bytes;",
         tests=[CLUSTER_GROUP_UNIT], filter="*WriteInFlight*"),
    # TLS termination and the PROXY protocol (README, "TLS and PROXY
    # protocol on raw listeners").
    dict(name="setup-opened-at-accept",
         promise="tls/proxy: a connection is Opened only once set up; a failed or late handshake or header produces no event",
         file="server/core/connection.cc",
         find="  if (established_) Publish(opened);\n  interest_ = kReadable;",
         replace="  Publish(opened);\n  interest_ = kReadable;",
         tests=[TLS_LISTENER], filter="*SlowHandshakes*:*ClientCertificates*:*GarbageAndLate*"),
    dict(name="tls-fin-before-close-notify",
         promise="tls: a graceful close sends close_notify, then FIN",
         file="server/core/connection.cc",
         find="bool Connection::SendFinAndLinger() {\n",
         replace="bool Connection::SendFinAndLinger() {\n  ::shutdown(fd_, SHUT_WR);\n",
         tests=[TLS_LISTENER], filter="*GracefulCloseSendsCloseNotify*:*ProxyHeaderThenTls*"),
    dict(name="tls-write-unencrypted",
         promise="tls: Write takes plaintext and fanin encrypts it",
         file="server/core/connection.cc",
         find="  if (transport_ != nullptr) return SendSomeTransport(data, len, sent);",
         replace="  if (transport_ != nullptr && listener_->tls == nullptr)\n    return SendSomeTransport(data, len, sent);",
         tests=[TLS_LISTENER], filter="*WriteArrivesDecrypted*:*AbortIsAReset*"),
    dict(name="tls-opened-without-sni",
         promise="tls: Opened.tls says the version, cipher, SNI, ALPN and verified client certificate",
         file="server/core/connection.cc",
         find="    t->set_server_name(std::move(info.server_name));\n",
         replace="",
         tests=[TLS_LISTENER], filter="*OpenedDescribesTheSession*:*ProxyHeaderThenTls*"),
    dict(name="proxy-crc-unchecked",
         promise="proxy: a v2 CRC32C TLV is checked; a mismatch is refused",
         file="server/net/proxy_protocol.cc",
         find="        if (Crc32c(copy) != Be32(value.data())) {",
         replace="        if (false && Crc32c(copy) != Be32(value.data())) {",
         tests=[PROXY_PARSER, TLS_LISTENER], filter="*Crc32c*:*GarbageAndLate*"),
    dict(name="proxy-per-ip-counts-balancer",
         promise="proxy: --max_connections_per_ip counts the client the header names, not the balancer",
         file="server/core/fanin_core.cc",
         find="  if (info->proxy_protocol) peer.host.clear();\n",
         replace="",
         tests=[TLS_LISTENER], filter="*PerIpLimitFollowsTheProxyAddresses*"),
    dict(name="proxy-late-header-accepted",
         promise="proxy: a header not complete within --proxy_header_timeout is closed (counted, no event)",
         file="server/core/connection.cc",
         find="        case net::ProxyHeaderParser::Result::kNeedMore:\n          continue;",
         replace="        case net::ProxyHeaderParser::Result::kNeedMore:\n          shard_->loop()->Cancel(setup_timer_);  // the client is alive\n          setup_timer_ = 0;\n          continue;",
         tests=[TLS_LISTENER], filter="*GarbageAndLate*"),
    # Worker-pool groups (README, "Worker-pool groups").
    dict(name="group-pick-ties-last-joined",
         promise="groups: a new connection goes to the member with the fewest connections, ties by join order",
         file="server/fanout/group.cc",
         find="if (best == nullptr || m->connections < best->connections) {",
         replace="if (best == nullptr || m->connections <= best->connections) {",
         tests=[GROUP, GROUP_E2E], filter="*Balanced*"),
    dict(name="group-closed-still-counted",
         promise="groups: a new connection goes to the member with the fewest open connections",
         file="server/fanout/group.cc",
         find="      if (c.owner != nullptr) --c.owner->connections;\n",
         replace="",
         tests=[GROUP], filter="*ClosedConnectionsStop*:*Balanced*"),
    dict(name="group-handover-drops-in-flight",
         promise="groups: a leaving member's unfinished write is handed over (a lossless group loses nothing)",
         file="server/fanout/group.cc",
         find="    std::for_each(m->in_flight.begin(), m->in_flight.end(), take_written);\n",
         replace="",
         tests=[GROUP, GROUP_E2E], filter="*HandoverRedelivers*:*StalledMemberHandsOver*"),
    dict(name="group-redelivery-unmarked",
         promise="groups: events the old member may have had are marked (seq <= possibly_redelivered_through_seq)",
         file="server/fanout/group.cc",
         find="        c->redelivered_through = std::max(c->redelivered_through, u->second);\n",
         replace="",
         tests=[GROUP, GROUP_E2E], filter="*HandoverRedelivers*:*StalledMemberHandsOver*"),
    dict(name="group-redelivery-bound-reset",
         promise="groups: a later Assigned (a loss) still marks the redelivered events that follow it",
         file="server/fanout/group.cc",
         find="    c.previous_member = 0;\n    c.lost = Loss();",
         replace="    c.previous_member = 0;\n    c.redelivered_through = 0;\n    c.lost = Loss();",
         tests=[GROUP, GROUP_E2E], filter="*RedeliveryBound*:*LossyHandover*"),
    dict(name="group-event-before-assigned",
         promise="groups: a handed-over connection's new member gets its Assigned before any of its events",
         file="server/fanout/group.cc",
         find="      if (c.needs_marker) {\n        if (out->events.empty()) {",
         replace="      if (c.needs_marker && out->events.empty()) {\n        if (true) {",
         tests=[GROUP, GROUP_E2E], filter="*Handover*:*ExistingConnection*:*MemberCancelled*"),
    dict(name="group-terms-ignore-listeners",
         promise="groups: every member must ask for the same filters (FAILED_PRECONDITION naming the difference)",
         file="server/grpc/group_stream.cc",
         find="  spec.terms.push_back(Term(\"listeners\", listeners, listener_names.size()));\n",
         replace="",
         tests=[GROUP_E2E], filter="*Mismatched*"),
    dict(name="group-gap-count-off-by-one",
         promise="groups: a lossy member's hole is reported exactly (Assigned.gap, and a Gap)",
         file="server/fanout/group.cc",
         find="    gap.set_lost(count);",
         replace="    gap.set_lost(last - first);",
         tests=[GROUP, GROUP_E2E], filter="*Lossy*"),
    dict(name="group-empty-forgotten-at-once",
         promise="groups: a group with no member keeps its place (lossless: its backlog) for --group_idle_timeout",
         file="server/fanout/group.cc",
         find="      g->empty_since_ns = absl::GetCurrentTimeNanos();\n",
         replace="",
         tests=[GROUP, GROUP_E2E], filter="*IdleGroups*:*AllMembersGone*"),

]


def copy_tree():
    """The working tree as it is (tracked and untracked, not ignored) into SCRATCH."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    os.makedirs(SCRATCH, exist_ok=True)
    keep = {f for f in files if f}
    for dirpath, dirnames, filenames in os.walk(SCRATCH):
        rel = os.path.relpath(dirpath, SCRATCH)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if not d.startswith("bazel-")]
        for name in filenames:
            f = os.path.normpath(os.path.join(rel, name))
            if f not in keep and not f.startswith("bazel-"):
                os.remove(os.path.join(SCRATCH, f))
    for f in files:
        if not f or not os.path.exists(os.path.join(ROOT, f)):
            continue
        dst = os.path.join(SCRATCH, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        src = os.path.join(ROOT, f)
        with open(src, "rb") as a:
            data = a.read()
        if os.path.exists(dst):
            with open(dst, "rb") as b:
                if b.read() == data:
                    continue
        with open(dst, "wb") as b:
            b.write(data)
        shutil.copymode(src, dst)


def bazel_test(tests, test_filter, log):
    cmd = ["bazel", "test", f"--disk_cache={DISK_CACHE}", "--nocache_test_results",
           "--test_output=errors", "--test_timeout=300"]
    if test_filter:
        cmd.append(f"--test_filter={test_filter}")
    cmd += tests
    with open(log, "w") as out:
        return subprocess.run(cmd, cwd=SCRATCH, stdout=out, stderr=subprocess.STDOUT).returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated fault names")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run without a fault")
    args = parser.parse_args()
    faults = FAULTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {f["name"] for f in FAULTS}
        if unknown:
            sys.exit(f"inject.py: unknown fault(s): {', '.join(sorted(unknown))}")
        faults = [f for f in FAULTS if f["name"] in wanted]
    if args.list:
        for f in faults:
            print(f"{f['name']:30} {f['promise']}")
        return 0

    copy_tree()
    logs = os.path.join(os.path.dirname(SCRATCH), "logs")
    os.makedirs(logs, exist_ok=True)
    if not args.no_baseline:
        # The named tests must pass without a fault, or a failure proves nothing.
        tests = sorted({t for f in faults for t in f["tests"]})
        rc = bazel_test(tests, None, os.path.join(logs, "baseline.log"))
        if rc != 0:
            print(f"baseline: the tests fail without any fault (bazel exit {rc}); "
                  f"see {logs}/baseline.log")
            return 1
        print("baseline: every named test passes without a fault")

    results = []
    for f in faults:
        path = os.path.join(SCRATCH, f["file"])
        # The scratch copy, not the live tree: it may change during the run.
        original = open(path).read()
        count = original.count(f["find"])
        if count != 1:
            results.append((f["name"], "STALE", f"text found {count} times in {f['file']}"))
            print(f"{f['name']}: STALE ({count} matches)", flush=True)
            continue
        start = time.time()
        with open(path, "w") as out:
            out.write(original.replace(f["find"], f["replace"]))
        try:
            rc = bazel_test(f["tests"], f.get("filter"), os.path.join(logs, f["name"] + ".log"))
        finally:
            with open(path, "w") as out:
                out.write(original)
        took = f"{time.time() - start:.0f}s"
        if rc == 3:
            verdict = "caught"
        elif rc == 0:
            verdict = "MISSED"
        elif rc == 1:
            verdict = "BROKEN"
        else:
            verdict = f"ERROR (bazel exit {rc})"
        results.append((f["name"], verdict, took))
        print(f"{f['name']}: {verdict} in {took}", flush=True)

    caught = sum(1 for _, v, _ in results if v == "caught")
    print(f"\n{caught} of {len(results)} faults caught by a failing test")
    for name, verdict, detail in results:
        if verdict != "caught":
            print(f"  {name}: {verdict} {detail}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
