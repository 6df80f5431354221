#include "server/fanout/group.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/base/log.h"
#include "server/base/text.h"

namespace fanin::fanout {
namespace group_internal {

// The router reads the hub in chunks this big. A hub wake routes at most
// kWakeRouteChunks of them (the rest is routed by the members' reads or the
// next wake); a member whose queue is empty routes up to kReadRouteChunks
// before it says "more" and lets its stream come back.
constexpr size_t kRouteEvents = 1024;
constexpr size_t kRouteBytes = size_t{4} << 20;
constexpr int kWakeRouteChunks = 64;
constexpr int kReadRouteChunks = 8;
// Cluster mode: how often a member's progress goes to the other nodes.
constexpr absl::Duration kProgressEvery = absl::Milliseconds(200);
// Cluster mode: idle groups are looked at every this many events (a choice
// every node makes at the same events).
constexpr uint64_t kForgetCheckEvery = 256;

// Events lost, as a range and an exact count.
struct Loss {
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t count = 0;

  bool empty() const { return count == 0; }
  void Add(uint64_t first_seq, uint64_t last_seq, uint64_t n) {
    if (n == 0) return;
    first = count == 0 ? first_seq : std::min(first, first_seq);
    last = std::max(last, last_seq);
    count += n;
  }
  void Add(const Loss& other) { Add(other.first, other.last, other.count); }
  fanin::v1::Gap ToGap() const {
    fanin::v1::Gap gap;
    gap.set_first_seq(first);
    gap.set_last_seq(last);
    gap.set_lost(count);
    gap.set_reason(fanin::v1::GAP_REASON_SUBSCRIBER_TOO_SLOW);
    return gap;
  }
};

struct Conn;

// An event held for a member (or the pool), with its connection's state.
struct Item {
  EventPtr event;
  Conn* conn;
  // Counted in a lossless group's backlog (until written). Events handed
  // over from a leaving member's recent writes are not: they were counted
  // once, and released when first written.
  bool charged = true;
  // Handed over from a leaving member's writes: it may have received it.
  bool possibly_received = false;
  // Cluster mode: read back from the stream for a handover (older than the
  // history, maybe): never dropped as evicted.
  bool fetched = false;
};

// One connection as its group sees it. Lives while the connection is open
// or the group still holds any of its events (or owes an Assigned for it).
struct Conn {
  uint64_t id = 0;
  GroupRegistry::Member* owner = nullptr;  // null: waiting in the pool
  std::shared_ptr<const ConnectionInfo> info;
  // The connection's totals after the last event the group routed.
  uint64_t received_after = 0;
  uint64_t sent_after = 0;
  size_t queued = 0;       // items in its owner's queue (or the pool)
  size_t in_write = 0;     // items in its owner's write in flight
  size_t outstanding = 0;  // items anywhere: queued, written or recent
  bool closed = false;     // its Closed was routed
  bool ever_assigned = false;
  bool listed = false;  // in its owner's marker_conns
  // An Assigned is owed to the owner before any more of its events.
  bool needs_marker = false;
  bool marker_in_flight = false;
  fanin::v1::AssignReason reason = fanin::v1::ASSIGN_REASON_UNSPECIFIED;
  uint64_t previous_member = 0;
  std::string previous_node;
  uint64_t redelivered_through = 0;
  Loss lost;
  // Cluster mode. Unowned: the first seq of it no member received (0:
  // none), read back from the stream for the member that takes it.
  uint64_t pool_from = 0;
  // A read from the stream for its (local) owner is running (its id), for
  // its events up to backfill_to; its later events wait in `held`.
  uint64_t backfill = 0;
  uint64_t backfill_to = 0;
  std::vector<Item> held;
  // Owned by another node's member that may not have delivered all of it:
  // from carry_from on, its events may be undelivered, and up to
  // carry_through possibly delivered before. If that member leaves before
  // its progress passed carry_through, the next member reads back from
  // here (0: nothing carried).
  uint64_t carry_from = 0;
  uint64_t carry_through = 0;
  uint64_t assigned_at = 0;  // cluster mode: the seq its owner got it at
  uint64_t closed_seq = 0;   // cluster mode: the seq of its Closed
  // Cluster mode, lossless: its (local) owner's events from this seq on
  // were not queued, the group being over its share of
  // cluster_queue_bytes; read back from the stream once it drained (0:
  // none skipped).
  uint64_t skipped_from = 0;
};

// What an Assigned being written carried, to be owed again if its write
// does not complete.
struct MarkerInFlight {
  uint64_t conn = 0;
  uint64_t redelivered_through = 0;
  Loss lost;
};

}  // namespace group_internal

using group_internal::Conn;
using group_internal::Item;
using group_internal::kForgetCheckEvery;
using group_internal::kProgressEvery;
using group_internal::Loss;

// All fields after `wake` are guarded by the group's mu.
struct GroupRegistry::Member : std::enable_shared_from_this<Member> {
  std::shared_ptr<Group> group;
  uint64_t id = 0;
  std::string peer;
  int64_t joined_ns = 0;
  absl::AnyInvocable<void()> wake;

  bool active = true;
  bool parked = false;
  std::deque<Item> queue;       // routed, not yet read; in seq order
  std::vector<Item> in_flight;  // read, write not yet complete
  // Written lately, possibly not read by the client yet: at most
  // redelivery_bytes of bodies, oldest first.
  std::deque<Item> recent;
  size_t recent_bytes = 0;
  std::optional<group_internal::MarkerInFlight> marker_in_flight;
  std::deque<uint64_t> marker_conns;  // conns owing an Assigned, no events
  std::deque<fanin::v1::Assigned> notices;  // revocations
  Loss gap;                                 // not yet reported
  uint64_t connections = 0;                 // open ones assigned to it
  uint64_t delivered = 0;
  uint64_t lost = 0;

  // Cluster mode.
  bool remote = false;  // another node's member: nothing is queued here
  std::string node;
  // Local: false until its MEMBER_JOINED is applied (until then `group` is
  // null and the member's state is guarded by the registry's mu).
  std::atomic<bool> joined{true};
  bool ending = false;  // local: its stream ended, MEMBER_LEFT not applied yet
  std::optional<absl::Status> end;  // the cluster ended it
  // Remote: the last progress heard. Local: the last progress sent. As of
  // how far its node had routed then.
  uint64_t received_through = 0;
  uint64_t progress_as_of = 0;
  uint64_t joined_seq = 0;
  int64_t progress_ns = 0;
  // Local: the highest seq it completed a write of.
  uint64_t written_max = 0;
};

struct GroupRegistry::Group {
  Group(std::string group_name, GroupSpec group_spec, EventHub* event_hub,
        GroupRegistry* owner)
      : name(std::move(group_name)),
        spec(std::move(group_spec)),
        hub(event_hub),
        registry(owner),
        created_ns(absl::GetCurrentTimeNanos()) {}

  const std::string name;
  const GroupSpec spec;
  EventHub* const hub;
  GroupRegistry* const registry;
  const int64_t created_ns;
  // Set once, before the group is published in the registry.
  std::shared_ptr<EventHub::Subscription> sub;

  absl::Mutex mu;
  bool forgotten ABSL_GUARDED_BY(mu) = false;
  // The hub subscription is parked: the hub wakes the group on the next
  // event. Otherwise the group holds the right to read it.
  bool hub_parked ABSL_GUARDED_BY(mu) = false;
  // The highest seq the router has read.
  uint64_t routed_through ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::shared_ptr<Member>> members ABSL_GUARDED_BY(mu);
  absl::node_hash_map<uint64_t, Conn> conns ABSL_GUARDED_BY(mu);
  std::deque<Item> pool ABSL_GUARDED_BY(mu);  // in seq order
  Loss pending_gap ABSL_GUARDED_BY(mu);       // for the next member
  int64_t empty_since_ns ABSL_GUARDED_BY(mu) = 0;
  uint64_t handovers ABSL_GUARDED_BY(mu) = 0;
  uint64_t redelivered ABSL_GUARDED_BY(mu) = 0;
  uint64_t lost ABSL_GUARDED_BY(mu) = 0;
  EventHub::ReadResult route_buffer ABSL_GUARDED_BY(mu);

  // Cluster mode: the seq of the founding MEMBER_JOINED, and the reads from
  // the stream running for this node's members (handovers), by id.
  bool cluster = false;
  uint64_t generation = 0;
  struct BackfillJob {
    uint64_t next = 0;  // the next seq to read
    uint64_t to = 0;    // the handover's seq: later events are routed live
    absl::flat_hash_map<uint64_t, uint64_t> conns;  // id -> its first seq
    uint64_t member = 0;
    // Stopped between two reads while the group is over its share; the
    // drain starts it again.
    bool paused = false;
  };
  absl::flat_hash_map<uint64_t, BackfillJob> backfills ABSL_GUARDED_BY(mu);
  uint64_t next_backfill ABSL_GUARDED_BY(mu) = 1;
  // Cluster mode, lossless: bytes of events queued (or held) here for this
  // node's members; while `over` (past its share of cluster_queue_bytes,
  // until it drains to half of it) the router skips its events instead of
  // stopping for every group, and reads them back after (Conn::
  // skipped_from). `skipped`: connections with a skipped_from.
  int64_t held_bytes ABSL_GUARDED_BY(mu) = 0;
  // Of held_bytes, those waiting behind reads from the stream (Conn::held):
  // they drain only once their read is done, so a paused read must not
  // wait for them.
  int64_t waiting_bytes ABSL_GUARDED_BY(mu) = 0;
  // Of held_bytes, those in members' writes in flight: one write each, of
  // at most a batch, and a stuck one (a member that stopped reading) holds
  // its bytes until --subscriber_stall_timeout. Not counted against the
  // share: a group must not skip for a write it cannot shorten.
  int64_t writing_bytes ABSL_GUARDED_BY(mu) = 0;
  bool over ABSL_GUARDED_BY(mu) = false;
  size_t skipped ABSL_GUARDED_BY(mu) = 0;

  // The live member with the fewest connections, ties by join order.
  Member* Pick() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Member* best = nullptr;
    for (const auto& m : members) {
      if (best == nullptr || m->connections < best->connections) {
        best = m.get();
      }
    }
    return best;
  }

  // Gives `c` to `m`. An Assigned is owed first unless the member's first
  // event of it will be its Opened and it never had a member.
  void Assign(Conn& c, Member* m, bool first_is_opened, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (m->remote) {
      // Its node delivers it, and tells its member what it owes. What this
      // node knew was owed (undelivered from pool_from, possibly delivered
      // up to redelivered_through) is carried, in case it moves again
      // before that member delivered it.
      if (c.backfill != 0) {
        const uint64_t from = DetachBackfill(c);
        if (from != UINT64_MAX) {
          c.pool_from = c.pool_from == 0 ? from : std::min(c.pool_from, from);
        }
      }
      for (Item& item : Unhold(c)) {
        c.pool_from = c.pool_from == 0 ? item.event->seq
                                       : std::min(c.pool_from, item.event->seq);
        --c.outstanding;
        if (item.charged) Release(item.event->MemoryBytes());
      }
      if (const uint64_t from = TakeSkipped(c); from != 0) {
        c.pool_from = c.pool_from == 0 ? from : std::min(c.pool_from, from);
      }
      c.owner = m;
      c.ever_assigned = true;
      c.assigned_at = routed_through;
      if (!c.closed) ++m->connections;
      if (c.pool_from != 0) {
        c.carry_from = c.carry_from == 0 ? c.pool_from
                                         : std::min(c.carry_from, c.pool_from);
      }
      c.carry_through = std::max(c.carry_through, c.redelivered_through);
      c.needs_marker = false;
      c.reason = fanin::v1::ASSIGN_REASON_UNSPECIFIED;
      c.previous_member = 0;
      c.previous_node.clear();
      c.redelivered_through = 0;
      c.lost = Loss();
      c.pool_from = 0;
      return;
    }
    if (c.ever_assigned || !first_is_opened || c.needs_marker) {
      c.needs_marker = true;
      if (c.reason == fanin::v1::ASSIGN_REASON_UNSPECIFIED) {
        c.reason = fanin::v1::ASSIGN_REASON_UNASSIGNED;
      }
    }
    c.owner = m;
    c.ever_assigned = true;
    c.assigned_at = routed_through;
    if (!c.closed) ++m->connections;
    ListForMarker(c, wakes);
  }

  // An owed Assigned with no event to precede goes out on its own.
  void ListForMarker(Conn& c, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (c.owner != nullptr && c.needs_marker && c.queued == 0 && !c.listed &&
        c.backfill == 0 && c.skipped_from == 0 && !c.owner->remote) {
      c.listed = true;
      c.owner->marker_conns.push_back(c.id);
      Wake(c.owner, wakes);
    }
  }

  void Release(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!spec.lossless || bytes == 0) return;
    if (cluster) {
      Charge(-static_cast<int64_t>(bytes));
    } else {
      hub->Release(sub.get(), bytes);
    }
  }

  // Cluster mode, lossless: `bytes` more (negative: fewer) held here for
  // this node's members.
  void Charge(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!spec.lossless) return;
    held_bytes += bytes;
  }
  int64_t Share() const {
    return registry->cluster_share_.load(std::memory_order_relaxed);
  }
  // What counts against the group's share: its queues, not its writes.
  int64_t Queued() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return held_bytes - writing_bytes;
  }
  // Cluster mode, lossless: whether the group skips its events (and pauses
  // its reads from the stream): past its share, until drained to half of it.
  // Its own share only: no group waits for another's queues to drain (a
  // held member keeps its group's queue full until the stall timeout).
  bool Over() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!over && Queued() > Share()) over = true;
    return over;
  }
  // Cluster mode, lossless: `bytes` of charged events went into (negative:
  // out of) a member's write in flight.
  void Writing(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!cluster || !spec.lossless || bytes == 0) return;
    writing_bytes += bytes;
  }
  // Takes `c`'s skipped range out (it goes to another node's member, or
  // waits for one): the first seq skipped, 0 when none.
  uint64_t TakeSkipped(Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t from = c.skipped_from;
    if (from != 0) {
      c.skipped_from = 0;
      --skipped;
    }
    return from;
  }
  // `item` of `c` waits behind `c`'s read from the stream.
  void Hold(Conn& c, Item item) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (item.charged && spec.lossless) {
      const auto bytes = static_cast<int64_t>(item.event->MemoryBytes());
      waiting_bytes += bytes;
    }
    c.held.push_back(std::move(item));
  }
  // Takes out what waited behind `c`'s read (still charged).
  std::vector<Item> Unhold(Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<Item> out;
    out.swap(c.held);
    for (const Item& item : out) {
      if (item.charged && spec.lossless) {
        const auto bytes = static_cast<int64_t>(item.event->MemoryBytes());
        waiting_bytes -= bytes;
      }
    }
    return out;
  }

  void MaybeErase(Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (c.closed && c.outstanding == 0 && !c.needs_marker &&
        !c.marker_in_flight && c.pool_from == 0 && c.backfill == 0 &&
        c.skipped_from == 0 &&
        (c.owner == nullptr || !c.owner->remote ||
         c.owner->received_through >= std::max(c.closed_seq, c.assigned_at))) {
      // (Another node's member: kept until its progress shows it received
      // the Closed, or a handover would not find the connection.)
      conns.erase(c.id);
    }
  }

  static void Wake(Member* m, WakeList* wakes) {
    if (m->parked) {
      m->parked = false;
      wakes->push_back(m->shared_from_this());
    }
  }

  // Reads one chunk from the hub and routes it.
  void RouteChunk(WakeList* wakes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (forgotten) {
      hub_parked = true;
      return;
    }
    EventHub::ReadResult& r = route_buffer;
    hub->Read(sub.get(), group_internal::kRouteEvents,
              group_internal::kRouteBytes, /*park_if_empty=*/true, &r);
    if (r.gap.has_value()) {
      // Only a resume into expired history (the group's creation) or an
      // earlier epoch: which connections those events were of is unknown,
      // so every member hears of it.
      Loss l;
      l.Add(r.gap->first_seq(), r.gap->last_seq(), r.gap->lost());
      CountLost(l.count);
      if (members.empty()) pending_gap.Add(l);
      for (const auto& m : members) {
        m->gap.Add(l);
        Wake(m.get(), wakes);
      }
    }
    for (const EventPtr& e : r.events) RouteOne(e, wakes);
    if (r.parked) hub_parked = true;
    r.Clear();
    if (!spec.lossless) DropEvicted(wakes);
  }

  // The group's view of `e`'s connection, brought up to `e`: created on
  // first sight, given a member if it has none, closed by its Closed. Null
  // for the Closed of a connection the group never saw, when its members do
  // not want Closed events.
  Conn* Note(const EventPtr& e, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    routed_through = std::max(routed_through, e->seq);
    const bool closing = e->kind == fanin::v1::EVENT_KIND_CLOSED;
    const bool opened = e->kind == fanin::v1::EVENT_KIND_OPENED;
    auto it = conns.find(e->connection_id);
    if (it == conns.end()) {
      if (closing && !spec.deliver_closed) return nullptr;
      it = conns.try_emplace(e->connection_id).first;
      Conn& c = it->second;
      c.id = e->connection_id;
      if (!opened) c.reason = fanin::v1::ASSIGN_REASON_EXISTING;
    }
    Conn& c = it->second;
    if (c.info == nullptr) c.info = e->connection;
    c.received_after =
        e->bytes_received_before +
        (e->kind == fanin::v1::EVENT_KIND_DATA ? e->data_size : 0);
    c.sent_after = e->bytes_sent_before;
    if (c.owner == nullptr && !members.empty()) {
      // New, or waiting without events since the group had no member.
      Assign(c, Pick(), opened && c.queued == 0 && c.pool_from == 0, wakes);
    }
    if (closing && !c.closed) {
      c.closed = true;
      c.closed_seq = e->seq;
      if (c.owner != nullptr) --c.owner->connections;
    }
    return &c;
  }

  void RouteOne(const EventPtr& e, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Conn* found = Note(e, wakes);
    if (found == nullptr) {
      Release(e->MemoryBytes());
      return;
    }
    Conn& c = *found;
    if (e->kind == fanin::v1::EVENT_KIND_CLOSED && !spec.deliver_closed) {
      Release(e->MemoryBytes());
      MaybeErase(c);
      return;
    }
    ++c.queued;
    ++c.outstanding;
    if (c.owner == nullptr) {
      pool.push_back({e, &c});
      return;
    }
    c.owner->queue.push_back({e, &c});
    Wake(c.owner, wakes);
  }

  // Cluster mode: routes one event of the cluster's stream (every node
  // routes every event alike; only this node's members get queues).
  void RouteCluster(const EventPtr& e, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Conn* found = Note(e, wakes);
    if (found == nullptr) return;
    Conn& c = *found;
    if (e->kind == fanin::v1::EVENT_KIND_CLOSED && !spec.deliver_closed) {
      MaybeErase(c);
      return;
    }
    if (c.owner == nullptr) {
      if (c.pool_from == 0) c.pool_from = e->seq;
      return;
    }
    if (c.owner->remote) {
      MaybeErase(c);
      return;
    }
    if (spec.lossless) {
      // Over its share, the group's events are skipped rather than the
      // router stopped for every group; a connection skipped once stays so
      // until its read-back starts (its events must stay in order).
      if (Over() || c.skipped_from != 0) {
        if (c.skipped_from == 0) {
          c.skipped_from = e->seq;
          ++skipped;
        }
        return;
      }
      Charge(static_cast<int64_t>(e->MemoryBytes()));
    }
    ++c.outstanding;
    if (c.backfill != 0) {
      Hold(c, {e, &c, spec.lossless});
      return;
    }
    ++c.queued;
    c.owner->queue.push_back({e, &c, spec.lossless});
    Wake(c.owner, wakes);
  }

  // Cluster mode: the seq up to which the events of `m`'s connections count
  // as received: below everything it still holds, has in a write, wrote in
  // its redelivery window or is reading back from the stream.
  uint64_t ReceivedThrough(const Member& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    uint64_t lo = UINT64_MAX;
    for (const Item& i : m.recent) lo = std::min(lo, i.event->seq);
    for (const Item& i : m.in_flight) lo = std::min(lo, i.event->seq);
    for (const Item& i : m.queue) lo = std::min(lo, i.event->seq);
    for (const auto& [id, c] : conns) {
      if (c.owner == &m && c.backfill != 0) {
        lo = std::min(lo, BackfillRemaining(c));
      }
      // Lossy: evicted from its queue, and it was not yet told which of
      // this connection's events it lost (its Assigned). Another node
      // cannot report that loss to the next member; it reads them back.
      if (c.owner == &m && !c.lost.empty()) lo = std::min(lo, c.lost.first);
      if (c.owner == &m && c.skipped_from != 0) {
        lo = std::min(lo, c.skipped_from);
      }
    }
    if (m.marker_in_flight.has_value() && !m.marker_in_flight->lost.empty()) {
      lo = std::min(lo, m.marker_in_flight->lost.first);
    }
    for (const auto& [id, c] : conns) {
      if (c.owner == &m && !c.held.empty()) {
        lo = std::min(lo, c.held.front().event->seq);
      }
    }
    return lo == UINT64_MAX ? routed_through : lo - 1;
  }
  // The highest seq `m` wrote or is writing (0: none). Not only its
  // redelivery window: its floor (ReceivedThrough) can stay below events it
  // wrote long ago, held there by another connection's older events (a
  // read-back, a handed-over queue), and the next member reads those back.
  static uint64_t WrittenThrough(const Member& m) {
    uint64_t hi = m.written_max;
    for (const Item& i : m.recent) hi = std::max(hi, i.event->seq);
    for (const Item& i : m.in_flight) hi = std::max(hi, i.event->seq);
    return hi;
  }

  // Cluster mode: the first seq of `c` its running read from the stream
  // has not read yet.
  uint64_t BackfillRemaining(const Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = backfills.find(c.backfill);
    if (it == backfills.end()) return UINT64_MAX;
    auto first = it->second.conns.find(c.id);
    return std::max(it->second.next,
                    first == it->second.conns.end() ? 0 : first->second);
  }
  // Takes `c` out of its read from the stream (it goes to another node's
  // member, or waits for one); returns the first seq not read for it.
  uint64_t DetachBackfill(Conn& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t from = BackfillRemaining(c);
    if (auto it = backfills.find(c.backfill); it != backfills.end()) {
      it->second.conns.erase(c.id);
    }
    c.backfill = 0;
    c.backfill_to = 0;
    return from;
  }

  // Cluster mode: `conns`, now this node's member `m`'s, get their events
  // from `from` to `to` read back from the stream (their later ones wait
  // behind the read); those up to `redelivered_through` are marked.
  // Returns the job's id (0: nothing to read). `marker`: `m` is told of
  // the connections first (an Assigned); not so when they stay its own.
  uint64_t StartBackfill(Member* m,
                         const std::vector<std::pair<Conn*, uint64_t>>& list,
                         uint64_t to, uint64_t redelivered_through,
                         bool marker = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    uint64_t from = UINT64_MAX;
    for (const auto& [c, first] : list) from = std::min(from, first);
    if (list.empty() || from == 0 || from > to) return 0;
    const uint64_t id = next_backfill++;
    BackfillJob& job = backfills[id];
    job.next = from;
    job.to = to;
    job.member = m->id;
    for (const auto& [c, first] : list) {
      job.conns[c->id] = first;
      c->backfill = id;
      c->backfill_to = to;
      if (marker) c->needs_marker = true;
      c->redelivered_through =
          std::max(c->redelivered_through, redelivered_through);
    }
    return id;
  }

  void CountLost(uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    lost += n;
    registry->lost_.fetch_add(n, std::memory_order_relaxed);
  }

  // Lossy: drops queued events the history no longer holds, as a lossy
  // subscriber that falls behind loses them; counted per connection.
  void DropEvicted(WakeList* wakes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t oldest = hub->oldest_seq();
    for (const auto& m : members) DropFrom(&m->queue, m.get(), oldest, wakes);
    DropFrom(&pool, nullptr, oldest, wakes);
  }

  void DropFrom(std::deque<Item>* q, Member* m, uint64_t oldest,
                WakeList* wakes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Events handed over from a leaving member's writes stay: whether it got
    // them is unknown (a stream ended with a write in flight drops it), so
    // they are delivered again, marked, rather than lost uncounted. They
    // are few: its last writes, one handover's worth.
    std::vector<Item> kept;
    while (!q->empty() && q->front().event->seq < oldest) {
      if (q->front().possibly_received || q->front().fetched) {
        kept.push_back(std::move(q->front()));
        q->pop_front();
        continue;
      }
      const uint64_t seq = q->front().event->seq;
      Conn& c = *q->front().conn;
      q->pop_front();
      --c.queued;
      --c.outstanding;
      c.lost.Add(seq, seq, 1);
      c.needs_marker = true;
      if (m != nullptr) {
        m->gap.Add(seq, seq, 1);
        ++m->lost;
        Wake(m, wakes);
      } else {
        pending_gap.Add(seq, seq, 1);
      }
      CountLost(1);
      ListForMarker(c, wakes);
    }
    q->insert(q->begin(), std::make_move_iterator(kept.begin()),
              std::make_move_iterator(kept.end()));
  }

  // Merges `add` (any order) into the seq-ordered queue `q`.
  static void Merge(std::deque<Item>* q, std::vector<Item> add) {
    if (add.empty()) return;
    auto by_seq = [](const Item& a, const Item& b) {
      return a.event->seq < b.event->seq;
    };
    std::sort(add.begin(), add.end(), by_seq);
    if (q->empty() || q->back().event->seq < add.front().event->seq) {
      std::move(add.begin(), add.end(), std::back_inserter(*q));
      return;
    }
    std::deque<Item> merged;
    std::merge(
        std::make_move_iterator(q->begin()), std::make_move_iterator(q->end()),
        std::make_move_iterator(add.begin()),
        std::make_move_iterator(add.end()), std::back_inserter(merged), by_seq);
    q->swap(merged);
  }

  // Moves items to their connections' current owners (or the pool).
  void Distribute(std::vector<Item> items, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::flat_hash_map<Member*, std::vector<Item>> by_owner;
    for (Item& item : items) {
      Conn& c = *item.conn;
      if (cluster && (c.owner == nullptr || c.owner->remote)) {
        // Not delivered here: the member that takes it reads it back from
        // the stream (its node knows from where).
        uint64_t& first = c.owner == nullptr ? c.pool_from : c.carry_from;
        first = first == 0 ? item.event->seq : std::min(first, item.event->seq);
        --c.queued;
        --c.outstanding;
        if (item.charged) Release(item.event->MemoryBytes());
        continue;
      }
      if (cluster && c.backfill != 0 && item.event->seq > c.backfill_to) {
        // Behind the read from the stream running for it. (What that read
        // already passed is queued: a later chunk must not overtake it.)
        --c.queued;
        Hold(c, std::move(item));
        continue;
      }
      by_owner[c.owner].push_back(std::move(item));
    }
    for (auto& [owner, list] : by_owner) {
      if (owner == nullptr) {
        Merge(&pool, std::move(list));
      } else {
        Merge(&owner->queue, std::move(list));
        Wake(owner, wakes);
      }
    }
  }

  // The Assigned owed for `c`, whose next event for `m` is `next` (null:
  // none yet). Resets what it reports.
  fanin::v1::Assigned Marker(Member& m, Conn& c, const StoredEvent* next)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    fanin::v1::Assigned a;
    a.set_group(name);
    a.set_member_id(m.id);
    a.set_connection_id(c.id);
    if (c.info != nullptr) {
      a.set_listener(c.info->listener);
      a.set_remote_address(c.info->remote_address);
      a.set_local_address(c.info->local_address);
    }
    if (next != nullptr) {
      a.set_from_seq(next->seq);
      a.set_bytes_received(next->bytes_received_before);
      a.set_bytes_sent(next->bytes_sent_before);
    } else {
      a.set_from_seq(routed_through + 1);
      a.set_bytes_received(c.received_after);
      a.set_bytes_sent(c.sent_after);
    }
    a.set_reason(c.reason != fanin::v1::ASSIGN_REASON_UNSPECIFIED ? c.reason
                 : c.lost.empty() ? fanin::v1::ASSIGN_REASON_UNASSIGNED
                                  : fanin::v1::ASSIGN_REASON_EVENTS_LOST);
    a.set_previous_member(c.previous_member);
    a.set_previous_node(c.previous_node);
    // Kept until the connection's events pass it: a later Assigned (a loss)
    // may come while events the previous member may have had still follow.
    if (c.redelivered_through >= a.from_seq()) {
      a.set_possibly_redelivered_through_seq(c.redelivered_through);
    }
    if (!c.lost.empty()) *a.mutable_gap() = c.lost.ToGap();
    m.marker_in_flight = group_internal::MarkerInFlight{
        .conn = c.id,
        .redelivered_through = c.redelivered_through,
        .lost = c.lost};
    c.needs_marker = false;
    c.marker_in_flight = true;
    c.reason = fanin::v1::ASSIGN_REASON_UNSPECIFIED;
    c.previous_member = 0;
    c.lost = Loss();
    return a;
  }

  // The next thing for `m` to write.
  void Take(Member* m, size_t max_events, size_t max_bytes, GroupRead* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!m->gap.empty()) {
      out->gap = m->gap.ToGap();
      m->gap = Loss();
      return;
    }
    if (!m->notices.empty()) {
      out->assigned = std::move(m->notices.front());
      m->notices.pop_front();
      return;
    }
    while (!m->marker_conns.empty()) {
      auto it = conns.find(m->marker_conns.front());
      m->marker_conns.pop_front();
      if (it == conns.end()) continue;
      Conn& c = it->second;
      c.listed = false;
      // A connection being read back from the stream is listed again when
      // the read is done.
      if (c.owner != m || !c.needs_marker || c.queued > 0 || c.backfill != 0 ||
          c.skipped_from != 0) {
        continue;
      }
      if (c.closed && c.lost.empty() && c.outstanding == 0) {
        // Gone, and nothing to tell about it.
        c.needs_marker = false;
        MaybeErase(c);
        continue;
      }
      out->assigned = Marker(*m, c, nullptr);
      return;
    }
    size_t bytes = 0;
    while (!m->queue.empty() && out->events.size() < max_events &&
           bytes < max_bytes) {
      Item& item = m->queue.front();
      Conn& c = *item.conn;
      if (c.needs_marker) {
        if (out->events.empty()) {
          out->assigned = Marker(*m, c, item.event.get());
        }
        return;
      }
      bytes += item.event->body.size();
      out->events.push_back(item.event);
      --c.queued;
      ++c.in_write;
      if (item.charged)
        Writing(static_cast<int64_t>(item.event->MemoryBytes()));
      m->in_flight.push_back(std::move(item));
      m->queue.pop_front();
    }
  }

  // Hands every connection of `m` (which has left) to the other members, or
  // to the pool, with the events it had not finished writing.
  size_t HandOver(Member* m, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (m->marker_in_flight.has_value()) {
      auto it = conns.find(m->marker_in_flight->conn);
      if (it != conns.end()) {
        Conn& c = it->second;
        c.marker_in_flight = false;
        c.needs_marker = true;
        c.redelivered_through = std::max(
            c.redelivered_through, m->marker_in_flight->redelivered_through);
        c.lost.Add(m->marker_in_flight->lost);
      }
      m->marker_in_flight.reset();
    }
    for (uint64_t id : m->marker_conns) {
      auto it = conns.find(id);
      if (it != conns.end()) it->second.listed = false;
    }
    m->marker_conns.clear();
    m->notices.clear();
    std::vector<Item> tail;
    tail.reserve(m->recent.size() + m->in_flight.size() + m->queue.size());
    absl::flat_hash_map<Conn*, uint64_t> unfinished;  // conn -> highest seq
    const size_t again = m->recent.size() + m->in_flight.size();
    auto take_written = [&](Item& item) {
      uint64_t& through = unfinished[item.conn];
      through = std::max(through, item.event->seq);
      ++item.conn->queued;
      item.conn->in_write = 0;
      item.possibly_received = true;
      tail.push_back(std::move(item));
    };
    std::for_each(m->recent.begin(), m->recent.end(), take_written);
    for (const Item& item : m->in_flight) {
      if (item.charged) {
        Writing(-static_cast<int64_t>(item.event->MemoryBytes()));
      }
    }
    std::for_each(m->in_flight.begin(), m->in_flight.end(), take_written);
    redelivered += again;
    registry->redelivered_.fetch_add(again, std::memory_order_relaxed);
    m->recent.clear();
    m->recent_bytes = 0;
    m->in_flight = {};
    for (Item& item : m->queue) {
      // Handed over before and not sent since: still possibly received by
      // the member before.
      if (item.possibly_received) {
        uint64_t& through = unfinished[item.conn];
        through = std::max(through, item.event->seq);
      }
      tail.push_back(std::move(item));
    }
    m->queue.clear();
    std::vector<Conn*> held;
    for (auto& [id, c] : conns) {
      if (c.owner == m) held.push_back(&c);
    }
    std::sort(held.begin(), held.end(),
              [](const Conn* a, const Conn* b) { return a->id < b->id; });
    for (Conn* c : held) {
      // Events waiting behind a read from the stream go with it.
      for (Item& item : Unhold(*c)) {
        ++c->queued;
        tail.push_back(std::move(item));
      }
      c->owner = nullptr;
      c->needs_marker = true;
      c->reason = fanin::v1::ASSIGN_REASON_MEMBER_LEFT;
      c->previous_member = m->id;
      c->previous_node = m->node;
      if (auto u = unfinished.find(c); u != unfinished.end()) {
        c->redelivered_through = std::max(c->redelivered_through, u->second);
      }
      if (Member* n = Pick(); n != nullptr) {
        Assign(*c, n, false, wakes);
      } else if (cluster) {
        if (c->backfill != 0) {
          const uint64_t from = DetachBackfill(*c);
          if (from != UINT64_MAX) {
            c->pool_from =
                c->pool_from == 0 ? from : std::min(c->pool_from, from);
          }
        }
        if (const uint64_t from = TakeSkipped(*c); from != 0) {
          c->pool_from =
              c->pool_from == 0 ? from : std::min(c->pool_from, from);
        }
      }
    }
    handovers += held.size();
    registry->handovers_.fetch_add(held.size(), std::memory_order_relaxed);
    Distribute(std::move(tail), wakes);
    m->connections = 0;
    return held.size();
  }

  // A member joined: connections waiting in the pool with events go to the
  // members (the joiner first when it has the fewest connections).
  void AssignPool(WakeList* wakes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (pool.empty() || members.empty()) return;
    std::vector<Conn*> waiting;
    absl::flat_hash_map<Conn*, bool> first_is_opened;
    for (const Item& item : pool) {
      if (first_is_opened
              .try_emplace(item.conn,
                           item.event->kind == fanin::v1::EVENT_KIND_OPENED)
              .second) {
        waiting.push_back(item.conn);
      }
    }
    std::sort(waiting.begin(), waiting.end(),
              [](const Conn* a, const Conn* b) { return a->id < b->id; });
    for (Conn* c : waiting) Assign(*c, Pick(), first_is_opened[c], wakes);
    std::vector<Item> items(std::make_move_iterator(pool.begin()),
                            std::make_move_iterator(pool.end()));
    pool.clear();
    Distribute(std::move(items), wakes);
  }

  // Which connections a rebalance moves to `joiner`: from the member with
  // the most connections (ties: the later in join order), its oldest
  // candidate first, until the joiner has its share or no donor has more
  // than one over it. Counts only; the caller makes the moves.
  std::vector<std::pair<Member*, Conn*>> PlanRebalance(
      Member* joiner,
      absl::flat_hash_map<Member*, std::vector<Conn*>> candidates)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::flat_hash_map<Member*, uint64_t> count;
    uint64_t total = 0;
    for (const auto& m : members) {
      count[m.get()] = m->connections;
      total += m->connections;
    }
    const uint64_t share = total / members.size();
    for (auto& [owner, list] : candidates) {
      // Highest id last: the oldest connections move first.
      std::sort(list.begin(), list.end(),
                [](const Conn* a, const Conn* b) { return a->id > b->id; });
    }
    std::vector<std::pair<Member*, Conn*>> moves;
    while (count[joiner] < share) {
      Member* donor = nullptr;
      for (const auto& m : members) {
        if (m.get() == joiner || candidates[m.get()].empty()) continue;
        if (donor == nullptr || count[m.get()] >= count[donor]) {
          donor = m.get();
        }
      }
      if (donor == nullptr || count[donor] <= count[joiner] + 1) break;
      moves.push_back({donor, candidates[donor].back()});
      candidates[donor].pop_back();
      --count[donor];
      ++count[joiner];
    }
    return moves;
  }

  // Moves connections from the most loaded members to `joiner` until it has
  // its share. Only connections with nothing in a write move (nothing is
  // delivered twice); each is announced to both members.
  size_t Rebalance(Member* joiner, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (members.size() < 2) return 0;
    absl::flat_hash_map<Member*, std::vector<Conn*>> candidates;
    for (auto& [id, c] : conns) {
      if (c.owner != nullptr && c.owner != joiner && !c.closed &&
          c.in_write == 0 && !c.marker_in_flight) {
        candidates[c.owner].push_back(&c);
      }
    }
    struct Revocation {
      Member* donor;
      Conn* conn;
    };
    std::vector<Revocation> revocations;
    absl::flat_hash_map<Member*, bool> donors;
    for (auto& [donor, c] : PlanRebalance(joiner, std::move(candidates))) {
      // A donor that was never told it held the connection is not told it
      // lost it; the joiner hears of the connection's earlier move instead.
      if (!c->needs_marker) {
        revocations.push_back({donor, c});
        c->reason = fanin::v1::ASSIGN_REASON_REBALANCE;
        c->previous_member = donor->id;
      }
      c->needs_marker = true;
      c->listed = false;
      --donor->connections;
      donors[donor] = true;
      Assign(*c, joiner, false, wakes);
    }
    std::vector<Item> moved;
    for (const auto& [donor, unused] : donors) {
      std::deque<Item> keep;
      for (Item& item : donor->queue) {
        if (item.conn->owner == joiner) {
          moved.push_back(std::move(item));
        } else {
          keep.push_back(std::move(item));
        }
      }
      donor->queue.swap(keep);
      // The donor stays: what it wrote of a moved connection counts as
      // received, or a later handover of the donor would send it again.
      keep.clear();
      for (Item& item : donor->recent) {
        if (item.conn->owner == joiner) {
          donor->recent_bytes -= item.event->body.size();
          --item.conn->outstanding;
        } else {
          keep.push_back(std::move(item));
        }
      }
      donor->recent.swap(keep);
    }
    // Where each moved connection's events now start.
    absl::flat_hash_map<Conn*, const StoredEvent*> first;
    for (const Item& item : moved) {
      auto [it, fresh] = first.try_emplace(item.conn, item.event.get());
      if (!fresh && item.event->seq < it->second->seq) {
        it->second = item.event.get();
      }
    }
    for (const Revocation& r : revocations) {
      fanin::v1::Assigned a;
      a.set_group(name);
      a.set_member_id(r.donor->id);
      a.set_connection_id(r.conn->id);
      if (r.conn->info != nullptr) {
        a.set_listener(r.conn->info->listener);
        a.set_remote_address(r.conn->info->remote_address);
        a.set_local_address(r.conn->info->local_address);
      }
      auto f = first.find(r.conn);
      if (f != first.end()) {
        a.set_from_seq(f->second->seq);
        a.set_bytes_received(f->second->bytes_received_before);
        a.set_bytes_sent(f->second->bytes_sent_before);
      } else {
        a.set_from_seq(routed_through + 1);
        a.set_bytes_received(r.conn->received_after);
        a.set_bytes_sent(r.conn->sent_after);
      }
      a.set_reason(fanin::v1::ASSIGN_REASON_REBALANCE);
      a.set_revoked(true);
      r.donor->notices.push_back(std::move(a));
      Wake(r.donor, wakes);
    }
    Distribute(std::move(moved), wakes);
    handovers += revocations.size();
    registry->handovers_.fetch_add(revocations.size(),
                                   std::memory_order_relaxed);
    return revocations.size();
  }

  // ---- Cluster mode: membership changes, applied at their seq ----

  // A read from the stream to start, once the locks are released.
  using Jobs = std::vector<uint64_t>;

  // Once the group drained to half its share: its paused reads go on, and
  // its connections' skipped events are read back for their owners (a
  // connection whose read from the stream still runs, after it), their
  // later events held until merged, as for a handover.
  void MaybeResume(Jobs* jobs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (over) {
      if ((Queued() - waiting_bytes) * 2 > Share()) return;
      over = false;
      for (auto& [id, job] : backfills) {
        if (job.paused) {
          job.paused = false;
          jobs->push_back(id);
        }
      }
    }
    if (skipped == 0) return;
    absl::flat_hash_map<Member*, std::vector<std::pair<Conn*, uint64_t>>> reads;
    for (auto& [id, c] : conns) {
      if (c.skipped_from == 0 || c.backfill != 0 || c.owner == nullptr ||
          c.owner->remote) {
        continue;
      }
      reads[c.owner].push_back({&c, c.skipped_from});
    }
    for (auto& [m, list] : reads) {
      const uint64_t id = StartBackfill(m, list, routed_through, 0,
                                        /*marker=*/false);
      for (auto& [c, first] : list) TakeSkipped(*c);
      if (id != 0) jobs->push_back(id);
    }
  }

  // A member joined: every unowned connection goes to the members, in id
  // order (the same on every node: which of them have events here does not
  // matter); this node's members read back what waited.
  void AssignPoolCluster(uint64_t at_seq, WakeList* wakes, Jobs* jobs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (members.empty()) return;
    std::vector<Conn*> waiting;
    for (auto& [id, c] : conns) {
      if (c.owner == nullptr && (!c.closed || c.pool_from != 0)) {
        waiting.push_back(&c);
      }
    }
    std::sort(waiting.begin(), waiting.end(),
              [](const Conn* a, const Conn* b) { return a->id < b->id; });
    absl::flat_hash_map<Member*, std::vector<std::pair<Conn*, uint64_t>>> reads;
    for (Conn* c : waiting) {
      const uint64_t from = c->pool_from;
      Member* n = Pick();
      Assign(*c, n, false, wakes);  // a remote member: carried
      c->pool_from = 0;
      if (!n->remote && from != 0) reads[n].push_back({c, from});
    }
    for (auto& [n, list] : reads) {
      if (uint64_t id = StartBackfill(n, list, at_seq, 0); id != 0) {
        jobs->push_back(id);
      }
    }
    for (Conn* c : waiting) {
      ListForMarker(*c, wakes);
      MaybeErase(*c);
    }
  }

  // Another node's member `m` left at `at_seq`: each of its connections goes
  // to a member; this node's members read back the events after
  // `received_through` (those up to `written_through` marked).
  // `as_of`: how far its node had routed when it measured received_through
  // (0: unknown, as after a lost node's last progress).
  void LeaveRemote(Member* m, uint64_t received_through,
                   uint64_t written_through, uint64_t as_of, uint64_t at_seq,
                   WakeList* wakes, Jobs* jobs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t from = std::max(received_through, m->joined_seq) + 1;
    std::vector<Conn*> held;
    for (auto& [id, c] : conns) {
      if (c.owner == m) held.push_back(&c);
    }
    std::sort(held.begin(), held.end(),
              [](const Conn* a, const Conn* b) { return a->id < b->id; });
    absl::flat_hash_map<Member*, std::vector<std::pair<Conn*, uint64_t>>> reads;
    for (Conn* c : held) {
      // What the member may not have delivered of it: after its progress,
      // and, when it got the connection from another node's member and had
      // not progressed past what that one may have delivered, from there.
      uint64_t c_from = from;
      uint64_t c_through = std::max(written_through, c->carry_through);
      // (c_from <= as_of + 1, so a connection given to it after it measured
      // is read back whole from where it was given.) What the member before
      // it may not have delivered is still owed unless a measurement taken
      // after the connection came covers it.
      const bool unmeasured = as_of < c->assigned_at;
      if (c->carry_from != 0 &&
          (received_through < c->carry_through || unmeasured)) {
        c_from = std::min(c_from, c->carry_from);
      }
      c->carry_from = c->carry_through = 0;
      c->owner = nullptr;
      c->reason = fanin::v1::ASSIGN_REASON_MEMBER_LEFT;
      c->previous_member = m->id;
      c->previous_node = m->node;
      c->pool_from =
          c->pool_from == 0 ? c_from : std::min(c->pool_from, c_from);
      c->redelivered_through = std::max(c->redelivered_through, c_through);
      Member* n = Pick();
      if (n == nullptr) continue;
      c->needs_marker = true;
      const uint64_t read_from = c->pool_from;
      Assign(*c, n, false, wakes);
      if (!n->remote) {
        c->pool_from = 0;
        reads[n].push_back({c, read_from});
      }
    }
    for (auto& [n, list] : reads) {
      if (uint64_t id = StartBackfill(n, list, at_seq, 0); id != 0) {
        jobs->push_back(id);
      }
    }
    for (Conn* c : held) {
      ListForMarker(*c, wakes);
      MaybeErase(*c);
    }
    handovers += held.size();
    registry->handovers_.fetch_add(held.size(), std::memory_order_relaxed);
    m->connections = 0;
  }

  // A joining member that asked for it (or --group_rebalance) takes open
  // connections from the most loaded members until it has its share. Any
  // open connection may move (the choice must not depend on what this node
  // is writing): a donor on this node keeps its write in flight, and a
  // joiner here reads back from the donor's progress, marked.
  size_t RebalanceCluster(Member* joiner, uint64_t at_seq, WakeList* wakes,
                          Jobs* jobs) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (members.size() < 2) return 0;
    absl::flat_hash_map<Member*, std::vector<Conn*>> candidates;
    for (auto& [id, c] : conns) {
      if (c.owner != nullptr && c.owner != joiner && !c.closed) {
        candidates[c.owner].push_back(&c);
      }
    }
    const std::vector<std::pair<Member*, Conn*>> moves =
        PlanRebalance(joiner, std::move(candidates));
    std::vector<std::pair<Conn*, uint64_t>> reads;
    std::vector<Item> moved;
    for (auto& [donor, c] : moves) {
      if (!donor->remote) {
        // Revoked: its queued events go to the joiner (or, for a joiner on
        // another node, are read back there); its recent writes of the
        // connection count as received.
        if (!c->needs_marker) {
          fanin::v1::Assigned a;
          a.set_group(name);
          a.set_member_id(donor->id);
          a.set_connection_id(c->id);
          if (c->info != nullptr) {
            a.set_listener(c->info->listener);
            a.set_remote_address(c->info->remote_address);
            a.set_local_address(c->info->local_address);
          }
          a.set_from_seq(at_seq + 1);
          a.set_bytes_received(c->received_after);
          a.set_bytes_sent(c->sent_after);
          a.set_reason(fanin::v1::ASSIGN_REASON_REBALANCE);
          a.set_revoked(true);
          donor->notices.push_back(std::move(a));
          Wake(donor, wakes);
        }
        std::deque<Item> keep;
        for (Item& item : donor->queue) {
          if (item.conn == c) {
            moved.push_back(std::move(item));
          } else {
            keep.push_back(std::move(item));
          }
        }
        donor->queue.swap(keep);
        keep.clear();
        for (Item& item : donor->recent) {
          if (item.conn == c) {
            donor->recent_bytes -= item.event->body.size();
            --c->outstanding;
          } else {
            keep.push_back(std::move(item));
          }
        }
        donor->recent.swap(keep);
      }
      --donor->connections;
      c->owner = nullptr;
      c->needs_marker = true;
      c->listed = false;
      c->reason = fanin::v1::ASSIGN_REASON_REBALANCE;
      c->previous_member = donor->id;
      c->previous_node = donor->node;
      // The donor keeps delivering what it is writing: possibly delivered
      // up to here.
      c->redelivered_through = std::max(c->redelivered_through, at_seq);
      if (donor->remote) {
        uint64_t c_from =
            std::max(donor->received_through, donor->joined_seq) + 1;
        const bool unmeasured = donor->progress_as_of < c->assigned_at;
        if (c->carry_from != 0 &&
            (donor->received_through < c->carry_through || unmeasured)) {
          c_from = std::min(c_from, c->carry_from);
        }
        c->carry_from = c->carry_through = 0;
        c->pool_from = c_from;
      }
      const uint64_t read_from = c->pool_from;
      Assign(*c, joiner, false, wakes);
      if (!joiner->remote && donor->remote) {
        c->pool_from = 0;
        reads.push_back({c, read_from});
      }
    }
    Distribute(std::move(moved), wakes);
    if (!reads.empty()) {
      if (uint64_t id = StartBackfill(joiner, reads, at_seq, at_seq); id != 0) {
        jobs->push_back(id);
      }
    }
    for (auto& [donor, c] : moves) ListForMarker(*c, wakes);
    handovers += moves.size();
    registry->handovers_.fetch_add(moves.size(), std::memory_order_relaxed);
    return moves.size();
  }

  // A member's write of what its last Read returned completed.
  void Written(Member* member) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!member->active) return;
    member->delivered += member->in_flight.size();
    // Written: out of the backlog. The redelivery window keeps the events
    // (pointers, most still in the history) outside of it.
    size_t bytes = 0;
    for (Item& item : member->in_flight) {
      member->written_max = std::max(member->written_max, item.event->seq);
      --item.conn->in_write;
      if (item.charged) bytes += item.event->MemoryBytes();
      item.charged = false;
      member->recent_bytes += item.event->body.size();
      member->recent.push_back(std::move(item));
    }
    member->in_flight.clear();
    // Beyond the redelivery window, a write counts as received.
    while (!member->recent.empty() &&
           member->recent_bytes > registry->options_.redelivery_bytes) {
      Item& item = member->recent.front();
      member->recent_bytes -= item.event->body.size();
      Conn& c = *item.conn;
      member->recent.pop_front();
      --c.outstanding;
      MaybeErase(c);
    }
    if (member->marker_in_flight.has_value()) {
      auto it = conns.find(member->marker_in_flight->conn);
      member->marker_in_flight.reset();
      if (it != conns.end()) {
        it->second.marker_in_flight = false;
        MaybeErase(it->second);
      }
    }
    Writing(-static_cast<int64_t>(bytes));
    Release(bytes);
    if (cluster) {
      // Tells the other nodes how far a handover of this member reads back.
      const int64_t now = absl::GetCurrentTimeNanos();
      if (now - member->progress_ns >=
          absl::ToInt64Nanoseconds(kProgressEvery)) {
        member->progress_ns = now;
        const uint64_t through = ReceivedThrough(*member);
        if (through != member->received_through) {
          member->received_through = through;
          registry->options_.replication->Progress(name, member->id, through,
                                                   routed_through);
        }
      }
    }
  }

  // Cluster mode: `m` left at `at` (its MEMBER_LEFT, or its node's
  // NodeChange); nullopt when it was not a member. How many connections it
  // handed over, and the members left.
  std::optional<size_t> Remove(const std::shared_ptr<Member>& m,
                               uint64_t received_through,
                               uint64_t written_through, uint64_t as_of,
                               const EventPtr& at, WakeList* wakes, Jobs* jobs,
                               size_t* members_left)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = std::find(members.begin(), members.end(), m);
    if (it == members.end()) return std::nullopt;
    routed_through = std::max(routed_through, at->seq);
    members.erase(it);
    size_t handed = 0;
    if (m->remote) {
      handed = m->connections;
      LeaveRemote(m.get(), received_through, written_through, as_of, at->seq,
                  wakes, jobs);
    } else {
      m->active = false;
      if (m->parked && m->end.has_value()) wakes->push_back(m);
      m->parked = false;
      handed = HandOver(m.get(), wakes);
    }
    if (members.empty()) empty_since_ns = at->time_unix_nano;
    *members_left = members.size();
    MaybeResume(jobs);
    return handed;
  }

  fanin::v1::GroupInfo Info() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    fanin::v1::GroupInfo info;
    info.set_name(name);
    info.set_delivery(spec.lossless ? fanin::v1::DELIVERY_LOSSLESS
                                    : fanin::v1::DELIVERY_LOSSY);
    uint64_t queued = pool.size();
    for (const auto& m : members) {
      fanin::v1::GroupMember* gm = info.add_members();
      gm->set_member_id(m->id);
      gm->set_peer(m->peer);
      gm->set_joined_unix_nano(static_cast<uint64_t>(m->joined_ns));
      gm->set_connections(m->connections);
      gm->set_queued_events(m->queue.size() + m->in_flight.size());
      gm->set_delivered_events(m->delivered);
      gm->set_events_lost(m->lost);
      gm->set_node(m->node);
      queued += m->queue.size() + m->in_flight.size();
    }
    uint64_t open = 0, unassigned = 0;
    for (const auto& [id, c] : conns) {
      if (c.closed) continue;
      ++open;
      if (c.owner == nullptr) ++unassigned;
    }
    info.set_connections(open);
    info.set_unassigned_connections(unassigned);
    info.set_queued_events(queued);
    if (!forgotten && !cluster) {
      EventHub::Backlog backlog = hub->BacklogOf(sub.get());
      info.set_backlog_bytes(backlog.bytes);
      info.set_paused(backlog.paused);
    }
    info.set_created_unix_nano(static_cast<uint64_t>(created_ns));
    info.set_empty_since_unix_nano(static_cast<uint64_t>(empty_since_ns));
    info.set_handovers(handovers);
    info.set_redelivered_events(redelivered);
    info.set_events_lost(lost);
    for (const std::string& t : spec.terms) info.add_terms(t);
    return info;
  }
};

namespace {

// "kinds: the group has all, this request asks for EVENT_KIND_DATA; ..."
std::string Differences(const std::vector<std::string>& group,
                        const std::vector<std::string>& request) {
  std::vector<std::string> out;
  for (size_t i = 0; i < std::max(group.size(), request.size()); ++i) {
    const absl::string_view g =
        i < group.size() ? absl::string_view(group[i]) : absl::string_view();
    const absl::string_view r = i < request.size()
                                    ? absl::string_view(request[i])
                                    : absl::string_view();
    if (g == r) continue;
    const size_t eq = g.find('=');
    const absl::string_view field =
        eq == absl::string_view::npos ? g : g.substr(0, eq);
    auto value = [](absl::string_view term) {
      const size_t at = term.find('=');
      return at == absl::string_view::npos ? term : term.substr(at + 1);
    };
    out.push_back(absl::StrCat(field, ": the group has ", value(g),
                               ", this request asks for ", value(r)));
  }
  return absl::StrJoin(out, "; ");
}

}  // namespace

// Cluster mode's registry-wide state; guarded by the registry's mu.
struct GroupRegistry::Cluster {
  GroupReplication* rep = nullptr;
  SpecOf spec_of;
  // One hub subscription for every group: membership changes apply in lock
  // step with the events around them.
  std::shared_ptr<EventHub::Subscription> sub;
  bool parked = false;    // the hub wakes the router on the next event
  bool fetching = false;  // reading skipped events back from the stream
  EventHub::ReadResult buffer;
  // This node's members whose MEMBER_JOINED is not applied yet, with what
  // they asked for.
  struct Pending {
    std::shared_ptr<Member> member;
    GroupSpec spec;
  };
  absl::flat_hash_map<uint64_t, Pending> pending;
  // Other nodes' members' progress (received_through, as_of), heard before
  // or after they joined.
  absl::flat_hash_map<uint64_t, std::pair<uint64_t, uint64_t>> progress;
  // Reads from the stream to start once the registry's mu is released.
  std::optional<uint64_t> fetch_from;
  std::vector<std::pair<std::shared_ptr<Group>, uint64_t>> jobs;
};

GroupRegistry::GroupRegistry(EventHub* hub, GroupOptions options)
    : hub_(hub), options_(options) {
  if (options_.replication == nullptr) return;
  cluster_ = std::make_unique<Cluster>();
  cluster_->rep = options_.replication;
  EventHub::Started started;
  // Lossless without a reservation, released as it reads: the router stays
  // at the head and never pauses anything (in cluster mode the hub pauses
  // nobody anyway; behind its history the router reads the stream).
  auto sub = hub_->Subscribe({.filter = Filter(),
                              .lossless = true,
                              .wake = [this] { ClusterRoute(true); },
                              .release_on_read = true,
                              .reserve = false},
                             &started);
  if (!sub.ok()) return;
  cluster_->sub = *std::move(sub);
  // Reads until it parks: from then on the hub wakes it.
  ClusterRoute(/*hub_wake=*/true);
}

void GroupRegistry::SetSpecOf(SpecOf spec_of) {
  absl::MutexLock lock(&mu_);
  if (cluster_ != nullptr) cluster_->spec_of = std::move(spec_of);
}

GroupRegistry::~GroupRegistry() {
  if (cluster_ != nullptr && cluster_->sub != nullptr) {
    hub_->Unsubscribe(cluster_->sub.get());
  }
  absl::btree_map<std::string, std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&mu_);
    groups.swap(groups_);
    if (cluster_ != nullptr) cluster_->pending.clear();
  }
  for (auto& [name, g] : groups) {
    if (g->sub != nullptr) hub_->Unsubscribe(g->sub.get());
    absl::MutexLock lock(&g->mu);
    g->forgotten = true;
    for (auto& m : g->members) m->active = false;
    g->members.clear();  // Members hold their group: break the cycle.
    g->pool.clear();
    g->conns.clear();
  }
}

absl::StatusOr<std::shared_ptr<GroupRegistry::Member>> GroupRegistry::Join(
    JoinRequest request, EventHub::Started* started) {
  if (cluster_ != nullptr) return ClusterJoin(std::move(request), started);
  auto member = std::make_shared<Member>();
  member->id = request.member_id;
  member->peer = std::move(request.peer);
  member->joined_ns = absl::GetCurrentTimeNanos();
  member->wake = std::move(request.wake);
  WakeList wakes;
  bool created = false;
  size_t members = 0, moved = 0;
  std::shared_ptr<Group> g;
  {
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(request.group);
    if (it != groups_.end()) {
      g = it->second;
      std::string diff = Differences(g->spec.terms, request.spec.terms);
      if (!diff.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "group \"", request.group,
            "\": every member must ask for the same filter, payload "
            "options and delivery; ",
            diff));
      }
      started->epoch = hub_->epoch();
      started->head_seq = hub_->head_seq();
      const uint64_t oldest = hub_->oldest_seq();
      started->oldest_seq = oldest > started->head_seq ? 0 : oldest;
    } else {
      if (groups_.size() >= options_.max_groups) {
        return absl::ResourceExhaustedError(
            absl::StrCat("too many groups (--max_groups is ",
                         options_.max_groups, "); join an existing one"));
      }
      g = std::make_shared<Group>(request.group, std::move(request.spec), hub_,
                                  this);
      std::weak_ptr<Group> weak = g;
      // The hub subscription is lossless either way, so the router itself
      // never loses an event it has not routed (a lossy group loses events
      // only per member, each counted against its connection). A lossy
      // group's takes no lossless reservation and releases what it reads:
      // it stays at the head, and pauses nothing unless routing stalls.
      auto sub =
          hub_->Subscribe({.filter = g->spec.filter,
                           .lossless = true,
                           .resume_after_seq = g->spec.resume_after_seq,
                           .resume_epoch = g->spec.resume_epoch,
                           .start_back = g->spec.start_back,
                           .start_time_unix_nano = g->spec.start_time_unix_nano,
                           .wake = [this, weak] { OnHubWake(weak); },
                           .release_on_read = !g->spec.lossless,
                           .reserve = g->spec.lossless},
                          started);
      if (!sub.ok()) return sub.status();
      g->sub = *std::move(sub);
      groups_[g->name] = g;
      created = true;
    }
    member->group = g;
    absl::MutexLock group_lock(&g->mu);
    g->members.push_back(member);
    g->empty_since_ns = 0;
    member->gap.Add(g->pending_gap);
    g->pending_gap = Loss();
    g->AssignPool(&wakes);
    if (request.rebalance || options_.rebalance_on_join) {
      moved = g->Rebalance(member.get(), &wakes);
    }
    members = g->members.size();
  }
  RunWakes(&wakes);
  if (created) {
    base::Log(base::LogLevel::kInfo, "group created",
              {{"group", g->name},
               {"delivery", g->spec.lossless ? "lossless" : "lossy"},
               {"subscriber", member->id}});
  }
  base::Log(base::LogLevel::kInfo, "group member joined",
            {{"group", g->name},
             {"subscriber", member->id},
             {"members", members},
             {"rebalanced", moved}});
  return member;
}

void GroupRegistry::Leave(Member* member) {
  if (cluster_ != nullptr) {
    ClusterLeave(member);
    return;
  }
  Group* g = member->group.get();
  if (g == nullptr) return;
  WakeList wakes;
  size_t handed = 0, members = 0;
  uint64_t unfinished = 0;
  {
    absl::MutexLock lock(&g->mu);
    if (!member->active) return;
    member->active = false;
    member->parked = false;
    auto it =
        std::find_if(g->members.begin(), g->members.end(),
                     [member](const auto& m) { return m.get() == member; });
    // Keeps the member alive until the end of this block.
    std::shared_ptr<Member> self;
    if (it != g->members.end()) {
      self = std::move(*it);
      g->members.erase(it);
    }
    unfinished = member->in_flight.size();
    handed = g->HandOver(member, &wakes);
    members = g->members.size();
    if (g->members.empty()) {
      g->empty_since_ns = absl::GetCurrentTimeNanos();
      // Nobody reads now: route what is there so that the hub wakes the
      // group for what comes next, and what the group loses while empty is
      // known per connection.
      for (int i = 0; i < group_internal::kWakeRouteChunks && !g->hub_parked;
           ++i) {
        g->RouteChunk(&wakes);
      }
    }
  }
  RunWakes(&wakes);
  base::Log(base::LogLevel::kInfo, "group member left",
            {{"group", g->name},
             {"subscriber", member->id},
             {"members", members},
             {"connections_handed_over", handed},
             {"unfinished_events", unfinished}});
}

void GroupRegistry::Read(Member* member, size_t max_events, size_t max_bytes,
                         bool park_if_empty, GroupRead* out) {
  out->Clear();
  if (!member->joined.load(std::memory_order_acquire)) {
    // Cluster mode: waiting for its MEMBER_JOINED to come back.
    absl::MutexLock lock(&mu_);
    if (!member->joined.load(std::memory_order_acquire)) {
      if (member->end.has_value()) {
        out->end = member->end;
      } else if (park_if_empty && member->active) {
        member->parked = true;
        out->parked = true;
      }
      return;
    }
  }
  Group* g = member->group.get();
  WakeList wakes;
  {
    absl::MutexLock lock(&g->mu);
    if (member->end.has_value()) {
      out->end = member->end;
      return;
    }
    if (!member->active) return;
    for (int i = 0;
         i < group_internal::kReadRouteChunks && !g->hub_parked && !g->cluster;
         ++i) {
      g->RouteChunk(&wakes);
      if (!member->queue.empty()) break;
    }
    if (!g->spec.lossless) {
      g->DropFrom(&member->queue, member, g->hub->oldest_seq(), &wakes);
    }
    g->Take(member, max_events, max_bytes, out);
    const bool took = out->gap.has_value() || out->assigned.has_value() ||
                      !out->events.empty();
    out->more = !member->queue.empty() || !member->marker_conns.empty() ||
                !member->notices.empty() || !member->gap.empty() ||
                (!g->hub_parked && !g->cluster);
    if (!took && !out->more && park_if_empty) {
      member->parked = true;
      out->parked = true;
    }
  }
  RunWakes(&wakes);
}

void GroupRegistry::Written(Member* member) {
  std::shared_ptr<Group> g = member->group;
  if (g == nullptr) return;
  Group::Jobs jobs;
  {
    absl::MutexLock lock(&g->mu);
    g->Written(member);
    // Cluster mode: a group over its share reads back what it skipped once
    // its members' writes drained it.
    if (g->over) g->MaybeResume(&jobs);
  }
  for (uint64_t id : jobs) Backfill(g, id);
}

void GroupRegistry::Kick(Member* member) {
  if (!member->joined.load(std::memory_order_acquire)) {
    bool joined = false, wake = false;
    {
      absl::MutexLock lock(&mu_);
      joined = member->joined.load(std::memory_order_acquire);
      if (!joined && member->active && member->parked) {
        member->parked = false;
        wake = true;
      }
    }
    if (!joined) {
      if (wake) member->wake();
      return;
    }
  }
  Group* g = member->group.get();
  {
    absl::MutexLock lock(&g->mu);
    if (!member->active || !member->parked) return;
    member->parked = false;
  }
  member->wake();
}

bool GroupRegistry::Unpark(Member* member) {
  if (!member->joined.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&mu_);
    if (!member->joined.load(std::memory_order_acquire)) {
      if (!member->active || !member->parked) return false;
      member->parked = false;
      return true;
    }
  }
  Group* g = member->group.get();
  absl::MutexLock lock(&g->mu);
  if (!member->active || !member->parked) return false;
  member->parked = false;
  return true;
}

void GroupRegistry::OnHubWake(const std::weak_ptr<Group>& weak) {
  std::shared_ptr<Group> g = weak.lock();
  if (g == nullptr) return;
  WakeList wakes;
  {
    absl::MutexLock lock(&g->mu);
    if (g->forgotten) return;
    g->hub_parked = false;
    for (int i = 0; i < group_internal::kWakeRouteChunks && !g->hub_parked;
         ++i) {
      g->RouteChunk(&wakes);
    }
  }
  RunWakes(&wakes);
}

void GroupRegistry::RunWakes(WakeList* wakes) {
  for (const auto& m : *wakes) m->wake();
  wakes->clear();
}

void GroupRegistry::Sweep(absl::Time now) {
  if (cluster_ != nullptr) {
    // Forgetting is decided by event time as the router goes; here, this
    // node's members' progress goes out when a last write left it unsent.
    absl::MutexLock lock(&mu_);
    for (auto& [name, g] : groups_) {
      absl::MutexLock group_lock(&g->mu);
      for (const auto& m : g->members) {
        if (m->remote || !m->active) continue;
        const uint64_t through = g->ReceivedThrough(*m);
        if (through == m->received_through) continue;
        m->received_through = through;
        m->progress_ns = absl::ToUnixNanos(now);
        options_.replication->Progress(g->name, m->id, through,
                                       g->routed_through);
      }
    }
    return;
  }
  std::vector<std::shared_ptr<Group>> gone;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = groups_.begin(); it != groups_.end();) {
      Group& g = *it->second;
      absl::MutexLock group_lock(&g.mu);
      if (g.members.empty() && now - absl::FromUnixNanos(g.empty_since_ns) >=
                                   options_.idle_timeout) {
        g.forgotten = true;
        g.hub_parked = true;
        gone.push_back(it->second);
        it = groups_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& g : gone) {
    // Lifts the group's back-pressure and drops its backlog.
    hub_->Unsubscribe(g->sub.get());
    size_t queued = 0, connections = 0;
    {
      absl::MutexLock lock(&g->mu);
      queued = g->pool.size();
      for (const auto& [id, c] : g->conns) connections += c.closed ? 0 : 1;
      g->pool.clear();
      g->conns.clear();
    }
    base::Log(base::LogLevel::kInfo, "group forgotten",
              {{"group", g->name},
               {"idle_ms", absl::ToInt64Milliseconds(options_.idle_timeout)},
               {"undelivered_events", queued},
               {"connections", connections}});
  }
}

std::vector<fanin::v1::GroupInfo> GroupRegistry::List(
    absl::string_view name) const {
  std::vector<fanin::v1::GroupInfo> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [group_name, g] : groups_) {
    if (!name.empty() && group_name != name) continue;
    absl::MutexLock group_lock(&g->mu);
    out.push_back(g->Info());
  }
  return out;
}

GroupRegistry::Stats GroupRegistry::GetStats() const {
  Stats s;
  s.handovers = handovers_.load(std::memory_order_relaxed);
  s.redelivered_events = redelivered_.load(std::memory_order_relaxed);
  s.events_lost = lost_.load(std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  s.groups = static_cast<uint32_t>(groups_.size());
  for (const auto& [name, g] : groups_) {
    absl::MutexLock group_lock(&g->mu);
    s.members += static_cast<uint32_t>(g->members.size());
    for (const auto& [id, c] : g->conns) {
      if (c.closed) continue;
      if (c.owner == nullptr) {
        ++s.unassigned_connections;
      } else {
        ++s.connections;
      }
    }
  }
  return s;
}

// ---- Cluster mode ----

void GroupRegistry::ClusterRoute(bool hub_wake) {
  WakeList wakes;
  std::optional<uint64_t> fetch_from;
  std::vector<std::pair<std::shared_ptr<Group>, uint64_t>> jobs;
  {
    absl::MutexLock lock(&mu_);
    Cluster& cl = *cluster_;
    if (hub_wake) cl.parked = false;
    ClusterRouteLocked(&wakes);
    fetch_from.swap(cl.fetch_from);
    jobs.swap(cl.jobs);
  }
  RunWakes(&wakes);
  if (fetch_from.has_value()) ClusterFetch(*fetch_from);
  for (auto& [g, id] : jobs) Backfill(g, id);
}

void GroupRegistry::ClusterRouteLocked(WakeList* wakes) {
  Cluster& cl = *cluster_;
  if (cl.parked || cl.fetching || cl.sub == nullptr) return;
  while (true) {
    // Never stops for full queues (the groups skip instead, Group::
    // RouteCluster): membership changes must apply, they release queues.
    EventHub::ReadResult& r = cl.buffer;
    hub_->Read(cl.sub.get(), group_internal::kRouteEvents,
               group_internal::kRouteBytes, /*park_if_empty=*/true, &r);
    if (r.behind_from.has_value()) {
      cl.fetching = true;
      cl.fetch_from = *r.behind_from;
      r.Clear();
      return;
    }
    if (r.gap.has_value()) {
      base::Log(base::LogLevel::kError, "group router lost events",
                {{"first_seq", r.gap->first_seq()}, {"lost", r.gap->lost()}});
    }
    for (const EventPtr& e : r.events) ClusterRouteOne(e, wakes);
    const bool parked = r.parked;
    r.Clear();
    if (parked) {
      cl.parked = true;
      return;
    }
  }
}

void GroupRegistry::UpdateClusterShare() {
  // One share per lossless group and one spare: a read from the stream
  // merges a whole chunk past a group's share, and the spare keeps that
  // from stopping the router for every group.
  int64_t lossless = 1;
  for (const auto& [name, g] : groups_) lossless += g->spec.lossless ? 1 : 0;
  cluster_share_.store(
      static_cast<int64_t>(options_.cluster_queue_bytes) / lossless,
      std::memory_order_relaxed);
}

void GroupRegistry::ClusterFetch(uint64_t from) {
  cluster_->rep->Fetch(
      from, Filter(), group_internal::kRouteEvents, group_internal::kRouteBytes,
      [this, from](absl::StatusOr<GroupReplication::Fetched> fetched) {
        ClusterOnFetched(from, std::move(fetched));
      });
}

void GroupRegistry::ClusterOnFetched(
    uint64_t from, absl::StatusOr<GroupReplication::Fetched> fetched) {
  if (!fetched.ok()) {
    static base::LogRateLimiter limiter(1);
    if (limiter.Allow()) {
      base::Log(base::LogLevel::kWarning,
                "group router cannot read the cluster's stream; retrying",
                {{"from_seq", from},
                 {"error", std::string(fetched.status().message())}});
    }
    absl::SleepFor(absl::Milliseconds(100));  // the fetch thread's, not a loop
    ClusterFetch(from);
    return;
  }
  WakeList wakes;
  std::optional<uint64_t> fetch_from;
  std::vector<std::pair<std::shared_ptr<Group>, uint64_t>> jobs;
  {
    absl::MutexLock lock(&mu_);
    Cluster& cl = *cluster_;
    if (fetched->gap.has_value()) {
      base::Log(base::LogLevel::kError,
                "group router: the cluster's stream no longer holds events",
                {{"first_seq", fetched->gap->first_seq()},
                 {"lost", fetched->gap->lost()}});
    }
    for (const EventPtr& e : fetched->events) ClusterRouteOne(e, &wakes);
    hub_->Rejoin(cl.sub.get(), fetched->next_seq);
    cl.fetching = false;
    cl.parked = false;
    ClusterRouteLocked(&wakes);
    fetch_from.swap(cl.fetch_from);
    jobs.swap(cl.jobs);
  }
  RunWakes(&wakes);
  if (fetch_from.has_value()) ClusterFetch(*fetch_from);
  for (auto& [g, id] : jobs) Backfill(g, id);
}

void GroupRegistry::ClusterRouteOne(const EventPtr& e, WakeList* wakes) {
  Cluster& cl = *cluster_;
  // Replayed into the hub when this node joined: the membership before it
  // is unknown here, so nothing before it is acted on.
  if (e->seq < cl.rep->live_from_seq()) return;
  if (e->kind == fanin::v1::EVENT_KIND_GROUP ||
      e->kind == fanin::v1::EVENT_KIND_NODE) {
    ClusterApply(e, wakes);
    return;
  }
  for (auto& [name, g] : groups_) {
    absl::MutexLock lock(&g->mu);
    if (g->over) {
      Group::Jobs jobs;
      g->MaybeResume(&jobs);
      for (uint64_t id : jobs) cl.jobs.push_back({g, id});
    }
    if (g->spec.filter.Matches(*e)) g->RouteCluster(e, wakes);
  }
  if (e->seq % kForgetCheckEvery == 0) ClusterForget(e->time_unix_nano);
}

void GroupRegistry::ClusterForget(int64_t now_ns) {
  const int64_t idle = absl::ToInt64Nanoseconds(options_.idle_timeout);
  for (auto it = groups_.begin(); it != groups_.end();) {
    std::shared_ptr<Group> g = it->second;
    bool forget = false;
    {
      absl::MutexLock lock(&g->mu);
      forget = g->members.empty() && g->empty_since_ns != 0 &&
               now_ns - g->empty_since_ns >= idle && g->backfills.empty();
      if (forget) {
        g->forgotten = true;
        g->conns.clear();
      }
    }
    if (!forget) {
      ++it;
      continue;
    }
    it = groups_.erase(it);
    UpdateClusterShare();
    cluster_->rep->Forgotten(g->name);
    base::Log(base::LogLevel::kInfo, "group forgotten",
              {{"group", g->name},
               {"idle_ms", absl::ToInt64Milliseconds(options_.idle_timeout)}});
  }
}

void GroupRegistry::ClusterApply(const EventPtr& e, WakeList* wakes) {
  fanin::v1::Event ev;
  if (!ev.ParseFromString(e->body)) return;
  Cluster& cl = *cluster_;
  if (ev.has_node_change()) {
    const fanin::v1::NodeState state = ev.node_change().state();
    if (state != fanin::v1::NODE_STATE_LOST &&
        state != fanin::v1::NODE_STATE_LEFT) {
      return;
    }
    const uint64_t inc = ev.node_change().incarnation();
    const absl::Status ended = absl::UnavailableError(absl::StrCat(
        "node ", base::QuoteBounded(ev.node()),
        state == fanin::v1::NODE_STATE_LOST ? " was cut off from the cluster"
                                            : " left the cluster",
        ": its group memberships ended; subscribe again (through any node)"));
    for (auto it = cl.pending.begin(); it != cl.pending.end();) {
      if (it->first >> 32 != inc) {
        ++it;
        continue;
      }
      Member& m = *it->second.member;
      m.end = ended;
      if (m.parked) {
        m.parked = false;
        wakes->push_back(it->second.member);
      }
      cl.pending.erase(it++);
    }
    for (auto& [name, g] : groups_) {
      struct Gone {
        std::shared_ptr<Member> member;
        uint64_t through;
        uint64_t as_of;
      };
      std::vector<Gone> gone;
      {
        absl::MutexLock lock(&g->mu);
        for (const auto& m : g->members) {
          if (m->id >> 32 != inc) continue;
          gone.push_back({m, m->received_through, m->progress_as_of});
          if (!m->remote && !m->ending) m->end = ended;
        }
      }
      // Its last progress: everything after it is read back (and marked up
      // to this event).
      for (const Gone& x : gone) {
        RemoveMember(g, x.member, x.through, e->seq, x.as_of, e, wakes);
      }
    }
    return;
  }
  if (!ev.has_group_change()) return;
  const fanin::v1::GroupChange& gc = ev.group_change();
  if (gc.change() == fanin::v1::GroupChange::MEMBER_LEFT) {
    auto it = groups_.find(gc.group());
    if (it == groups_.end()) return;
    std::shared_ptr<Group> g = it->second;
    std::shared_ptr<Member> m;
    {
      absl::MutexLock lock(&g->mu);
      for (const auto& x : g->members) {
        if (x->id == gc.member_id()) m = x;
      }
    }
    if (m != nullptr) {
      RemoveMember(g, m, gc.received_through_seq(), gc.written_through_seq(),
                   gc.as_of_seq(), e, wakes);
    }
    return;
  }
  if (gc.change() != fanin::v1::GroupChange::MEMBER_JOINED) return;
  const uint64_t id = gc.member_id();
  const bool local = ev.node() == cl.rep->node() &&
                     id >> 32 == (cl.rep->incarnation() & 0xffffffffu);
  std::optional<Cluster::Pending> pending;
  if (local) {
    auto it = cl.pending.find(id);
    if (it == cl.pending.end()) return;
    pending = std::move(it->second);
    cl.pending.erase(it);
  }
  auto refuse = [&](absl::Status status) {
    base::Log(base::LogLevel::kInfo, "group join refused",
              {{"group", gc.group()},
               {"member", id},
               {"node", ev.node()},
               {"reason", std::string(status.message())}});
    if (!pending.has_value()) return;
    Member& m = *pending->member;
    m.end = std::move(status);
    if (m.parked) {
      m.parked = false;
      wakes->push_back(pending->member);
    }
  };
  absl::StatusOr<GroupSpec> spec =
      pending.has_value() ? absl::StatusOr<GroupSpec>(pending->spec)
      : cl.spec_of        ? cl.spec_of(gc.request())
                          : absl::InternalError("no group spec builder");
  if (!spec.ok()) {
    refuse(spec.status());
    return;
  }
  std::shared_ptr<Group> g;
  if (auto it = groups_.find(gc.group()); it != groups_.end()) {
    g = it->second;
    if (gc.group_seq() != 0 && gc.group_seq() != g->generation) {
      refuse(absl::UnavailableError(absl::StrCat(
          "group \"", gc.group(),
          "\" was forgotten and founded again meanwhile; subscribe again")));
      return;
    }
    std::string diff = Differences(g->spec.terms, spec->terms);
    if (!diff.empty()) {
      refuse(absl::FailedPreconditionError(absl::StrCat(
          "group \"", gc.group(),
          "\": every member must ask for the same filter, payload options "
          "and delivery; ",
          diff)));
      return;
    }
  } else {
    if (gc.group_seq() != 0) {
      refuse(absl::UnavailableError(absl::StrCat(
          "group \"", gc.group(), "\" (founded at seq ", gc.group_seq(),
          ") is not known here: it was forgotten meanwhile, or founded "
          "before this node joined the cluster; subscribe again")));
      return;
    }
    if (groups_.size() >= options_.max_groups) {
      refuse(absl::ResourceExhaustedError(
          absl::StrCat("too many groups (--max_groups is ", options_.max_groups,
                       "); join an existing one")));
      return;
    }
    g = std::make_shared<Group>(gc.group(), *std::move(spec), hub_, this);
    g->cluster = true;
    g->generation = e->seq;
    groups_[g->name] = g;
    UpdateClusterShare();
    if (local) cl.rep->Founded(g->name, e->seq);
    base::Log(base::LogLevel::kInfo, "group created",
              {{"group", g->name},
               {"delivery", g->spec.lossless ? "lossless" : "lossy"},
               {"seq", e->seq},
               {"node", ev.node()}});
  }
  std::shared_ptr<Member> m =
      pending.has_value() ? pending->member : std::make_shared<Member>();
  if (!pending.has_value()) {
    m->id = id;
    m->remote = true;
    m->active = false;
    m->peer = gc.peer();
    m->joined_ns = e->time_unix_nano;
    if (auto p = cl.progress.find(id); p != cl.progress.end()) {
      m->received_through = p->second.first;
      m->progress_as_of = p->second.second;
    }
  }
  m->node = ev.node();
  m->joined_seq = e->seq;
  Group::Jobs jobs;
  size_t moved = 0, members = 0;
  {
    absl::MutexLock lock(&g->mu);
    g->routed_through = std::max(g->routed_through, e->seq);
    m->group = g;
    g->members.push_back(m);
    g->empty_since_ns = 0;
    if (!m->remote) {
      m->gap.Add(g->pending_gap);
      g->pending_gap = Loss();
    }
    g->AssignPoolCluster(e->seq, wakes, &jobs);
    if (gc.rebalance() || options_.rebalance_on_join) {
      moved = g->RebalanceCluster(m.get(), e->seq, wakes, &jobs);
    }
    g->MaybeResume(&jobs);
    m->joined.store(true, std::memory_order_release);
    if (!m->remote && m->parked) {
      m->parked = false;
      wakes->push_back(m);
    }
    members = g->members.size();
  }
  for (uint64_t job : jobs) cl.jobs.push_back({g, job});
  base::Log(base::LogLevel::kInfo, "group member joined",
            {{"group", g->name},
             {"subscriber", m->id},
             {"node", m->node},
             {"members", members},
             {"rebalanced", moved}});
}

void GroupRegistry::RemoveMember(const std::shared_ptr<Group>& g,
                                 std::shared_ptr<Member> m,
                                 uint64_t received_through,
                                 uint64_t written_through, uint64_t as_of,
                                 const EventPtr& at, WakeList* wakes) {
  Group::Jobs jobs;
  size_t members = 0;
  std::optional<size_t> handed;
  {
    absl::MutexLock lock(&g->mu);
    handed = g->Remove(m, received_through, written_through, as_of, at, wakes,
                       &jobs, &members);
  }
  if (!handed.has_value()) return;
  cluster_->progress.erase(m->id);
  for (uint64_t job : jobs) cluster_->jobs.push_back({g, job});
  base::Log(base::LogLevel::kInfo, "group member left",
            {{"group", g->name},
             {"subscriber", m->id},
             {"node", m->node},
             {"members", members},
             {"connections_handed_over", *handed}});
}

absl::StatusOr<std::shared_ptr<GroupRegistry::Member>>
GroupRegistry::ClusterJoin(JoinRequest request, EventHub::Started* started) {
  Cluster& cl = *cluster_;
  auto member = std::make_shared<Member>();
  member->id = (cl.rep->incarnation() & 0xffffffffu) << 32 |
               (request.member_id & 0xffffffffu);
  member->peer = std::move(request.peer);
  member->joined_ns = absl::GetCurrentTimeNanos();
  member->wake = std::move(request.wake);
  member->node = cl.rep->node();
  member->joined.store(false, std::memory_order_release);
  uint64_t group_seq = 0;
  bool known = false;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = groups_.find(request.group); it != groups_.end()) {
      Group& g = *it->second;
      absl::MutexLock group_lock(&g.mu);
      std::string diff = Differences(g.spec.terms, request.spec.terms);
      if (!diff.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "group \"", request.group,
            "\": every member must ask for the same filter, payload "
            "options and delivery; ",
            diff));
      }
      group_seq = g.generation;
      known = true;
    } else if (groups_.size() >= options_.max_groups) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many groups (--max_groups is ", options_.max_groups,
                       "); join an existing one"));
    }
  }
  if (!known) {
    absl::StatusOr<uint64_t> founded = cl.rep->FoundedAt(request.group);
    if (!founded.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot look up group \"", request.group,
                       "\" in the cluster: ", founded.status().message()));
    }
    // Founded before this node's router began: its membership is unknown
    // here. Founded since (this node has not applied it yet, or a founder
    // racing this one): the join names the founding and is applied after it.
    if (*founded != 0 && *founded < cl.rep->live_from_seq()) {
      return absl::UnavailableError(absl::StrCat(
          "group \"", request.group, "\" was founded (at seq ", *founded,
          ") before this node joined the cluster, so this node does not know "
          "its members; subscribe through another node"));
    }
    group_seq = *founded;
  }
  started->epoch = hub_->epoch();
  started->head_seq = hub_->head_seq();
  const uint64_t oldest = hub_->oldest_seq();
  started->oldest_seq = oldest > started->head_seq ? 0 : oldest;
  fanin::v1::Event ev;
  fanin::v1::GroupChange* gc = ev.mutable_group_change();
  gc->set_group(request.group);
  gc->set_change(fanin::v1::GroupChange::MEMBER_JOINED);
  gc->set_member_id(member->id);
  *gc->mutable_request() = request.spec.request;
  for (const std::string& t : request.spec.terms) gc->add_terms(t);
  gc->set_lossless(request.spec.lossless);
  gc->set_rebalance(request.rebalance);
  gc->set_group_seq(group_seq);
  gc->set_peer(member->peer);
  {
    absl::MutexLock lock(&mu_);
    cl.pending[member->id] = {member, std::move(request.spec)};
  }
  cl.rep->Announce(std::move(ev));
  return member;
}

void GroupRegistry::ClusterLeave(Member* member) {
  fanin::v1::Event ev;
  fanin::v1::GroupChange* gc = ev.mutable_group_change();
  {
    absl::MutexLock lock(&mu_);
    if (!member->joined.load(std::memory_order_acquire)) {
      if (!member->active) return;
      member->active = false;
      member->parked = false;
      member->ending = true;
      // Refused: nothing to announce. Otherwise its MEMBER_JOINED is on its
      // way and this follows it.
      if (member->end.has_value()) return;
      auto it = cluster_->pending.find(member->id);
      if (it == cluster_->pending.end()) return;
      gc->set_group(it->second.spec.request.group());
    } else {
      Group* g = member->group.get();
      absl::MutexLock group_lock(&g->mu);
      if (!member->active) return;
      member->active = false;
      member->parked = false;
      member->ending = true;
      if (member->end.has_value()) return;  // the cluster ended it
      gc->set_group(g->name);
      gc->set_received_through_seq(g->ReceivedThrough(*member));
      gc->set_written_through_seq(Group::WrittenThrough(*member));
      gc->set_as_of_seq(g->routed_through);
    }
  }
  gc->set_change(fanin::v1::GroupChange::MEMBER_LEFT);
  gc->set_member_id(member->id);
  gc->set_peer(member->peer);
  cluster_->rep->Announce(std::move(ev));
}

void GroupRegistry::Backfill(const std::shared_ptr<Group>& g, uint64_t id) {
  Filter filter;
  uint64_t from = 0;
  {
    absl::MutexLock lock(&g->mu);
    auto it = g->backfills.find(id);
    if (it == g->backfills.end()) return;
    absl::flat_hash_set<uint64_t> ids;
    for (const auto& [conn, first] : it->second.conns) ids.insert(conn);
    filter = g->spec.filter.WithConnections(ids);
    from = it->second.next;
  }
  // A lossless group merges what it reads into its queues at once: a read
  // of at most half its share keeps a read-back near it.
  size_t max_bytes = group_internal::kRouteBytes;
  if (g->spec.lossless) {
    max_bytes = std::clamp(static_cast<size_t>(g->Share() / 2),
                           size_t{64} << 10, max_bytes);
  }
  std::weak_ptr<Group> weak = g;
  cluster_->rep->Fetch(
      from, filter, group_internal::kRouteEvents, max_bytes,
      [this, weak, id](absl::StatusOr<GroupReplication::Fetched> fetched) {
        OnBackfill(weak, id, std::move(fetched));
      });
}

void GroupRegistry::OnBackfill(
    std::weak_ptr<Group> weak, uint64_t id,
    absl::StatusOr<GroupReplication::Fetched> fetched) {
  std::shared_ptr<Group> g = weak.lock();
  if (g == nullptr) return;
  WakeList wakes;
  bool again = false;
  Group::Jobs jobs;
  {
    absl::MutexLock lock(&g->mu);
    auto jt = g->backfills.find(id);
    if (jt == g->backfills.end()) return;
    Group::BackfillJob& job = jt->second;
    if (!fetched.ok()) {
      again = !g->forgotten;
    } else {
      if (fetched->gap.has_value()) {
        // The stream no longer holds them: lost, for the member(s) taking
        // these connections.
        Loss l;
        l.Add(fetched->gap->first_seq(), fetched->gap->last_seq(),
              fetched->gap->lost());
        g->CountLost(l.count);
        for (const auto& [conn, first] : job.conns) {
          auto c = g->conns.find(conn);
          if (c == g->conns.end() || c->second.backfill != id) continue;
          if (job.conns.size() == 1) {
            c->second.lost.Add(l);
          } else if (c->second.owner != nullptr && !c->second.owner->remote) {
            c->second.owner->gap.Add(l);
          }
        }
      }
      absl::flat_hash_map<Member*, std::vector<Item>> add;
      for (const EventPtr& e : fetched->events) {
        if (e->seq > job.to) break;
        auto first = job.conns.find(e->connection_id);
        if (first == job.conns.end() || e->seq < first->second) continue;
        // In the read for the router's sake only, as when routed live.
        if (e->kind == fanin::v1::EVENT_KIND_CLOSED &&
            !g->spec.deliver_closed) {
          continue;
        }
        auto cit = g->conns.find(e->connection_id);
        if (cit == g->conns.end()) continue;
        Conn& c = cit->second;
        if (c.backfill != id) continue;
        if (c.owner == nullptr) {
          c.pool_from =
              c.pool_from == 0 ? e->seq : std::min(c.pool_from, e->seq);
          continue;
        }
        if (c.owner->remote) continue;
        g->Charge(static_cast<int64_t>(e->MemoryBytes()));
        ++c.queued;
        ++c.outstanding;
        add[c.owner].push_back(
            {e, &c, g->spec.lossless, e->seq <= c.redelivered_through, true});
      }
      for (auto& [m, list] : add) {
        Group::Merge(&m->queue, std::move(list));
        Group::Wake(m, &wakes);
      }
      const uint64_t before = job.next;
      job.next = std::max(job.next, fetched->next_seq);
      again = job.next <= job.to && job.next > before;
      if (again && g->spec.lossless && g->Over()) {
        // Over its share: the next read waits until the group drained.
        g->over = true;
        job.paused = true;
        again = false;
      }
    }
    if (!again && !jt->second.paused) {
      // Read through: the events that waited behind it follow.
      for (const auto& [conn, first] : job.conns) {
        auto cit = g->conns.find(conn);
        if (cit == g->conns.end()) continue;
        Conn& c = cit->second;
        if (c.backfill != id) continue;
        c.backfill = 0;
        std::vector<Item> held = g->Unhold(c);
        if (c.owner != nullptr && !c.owner->remote) {
          c.queued += held.size();
          Group::Merge(&c.owner->queue, std::move(held));
          Group::Wake(c.owner, &wakes);
        } else {
          for (Item& item : held) {
            --c.outstanding;
            if (item.charged) g->Release(item.event->MemoryBytes());
            if (c.owner == nullptr) {
              c.pool_from = c.pool_from == 0
                                ? item.event->seq
                                : std::min(c.pool_from, item.event->seq);
            }
          }
        }
        g->ListForMarker(c, &wakes);
        g->MaybeErase(c);
      }
      g->backfills.erase(jt);
      // Connections skipped while this read ran are read back next.
      g->MaybeResume(&jobs);
    }
  }
  RunWakes(&wakes);
  if (again) {
    if (!fetched.ok()) absl::SleepFor(absl::Milliseconds(100));
    Backfill(g, id);
  }
  for (uint64_t job : jobs) Backfill(g, job);
}

void GroupRegistry::NoteProgress(const std::string& group, uint64_t member,
                                 uint64_t received_through, uint64_t as_of) {
  if (cluster_ == nullptr) return;
  absl::MutexLock lock(&mu_);
  // The latest measurement wins (messages may come out of order).
  auto& p = cluster_->progress[member];
  if (as_of < p.second) return;
  p = {received_through, as_of};
  auto it = groups_.find(group);
  if (it == groups_.end()) return;
  Group& g = *it->second;
  absl::MutexLock group_lock(&g.mu);
  for (const auto& m : g.members) {
    if (m->id != member || !m->remote) continue;
    m->received_through = received_through;
    m->progress_as_of = as_of;
    // Closed connections it has now received are forgotten.
    std::vector<Conn*> done;
    for (auto& [id, c] : g.conns) {
      if (c.owner == m.get() && c.closed) done.push_back(&c);
    }
    for (Conn* c : done) g.MaybeErase(*c);
  }
}

}  // namespace fanin::fanout
