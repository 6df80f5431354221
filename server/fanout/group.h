// Worker-pool groups: subscribers that share a group's connections instead of
// each receiving every event (SubscribeRequest.group in fanin.proto).
//
// A group is one hub subscription: one cursor into the shared history, one
// lossless reservation and budget, whatever the number of members. A router
// reads that subscription and hands each event to the member its connection is
// assigned to, by pointer (the event is never copied). A connection is
// assigned when the group first sees it: to the live member with the fewest
// connections, ties by join order. Every member has a queue of the events
// routed to it, in seq order, and the events of its one write in flight.
//
//   hub ──Read──▶ router ──▶ member queue ──Read──▶ in flight ──Written──▶ done
//                   │ no member: the pool (waits for the next member)
//
// Handover. When a member leaves, each of its connections goes to another
// member (or, when none is left, to the pool) together with every event of
// it the leaving member may not have received: its queue, its write in flight
// and its most recently completed writes (GroupOptions::redelivery_bytes),
// merged by seq into the new member's queue. The new member first gets an
// Assigned (built when it reads, so from_seq and the byte totals are those of
// the first event it will actually receive); the events of the old member's
// unfinished and recent writes are marked possibly redelivered.
//
// Memory. Lossless: every event the group holds (routed or not, queued, in
// flight, in the pool) stays counted in the hub subscription's unread bytes
// until it is written (SubscribeSpec::release_on_read = false), so the group's
// backlog is bounded by HubOptions::lossless_queue_bytes exactly like one
// lossless subscriber's, and past it the hub pauses the group's sockets.
// Lossy: a queued event that the history evicts is dropped (a lossy
// subscriber falls behind the same way), so queues hold only what the
// history holds; each loss is counted per connection and reported in the
// Assigned that precedes the connection's next event (and as a Gap of the
// member that lost it). The router itself loses nothing: its hub
// subscription is lossless even for a lossy group (without a share of
// lossless_total_bytes; it stays at the head, and could only pause the
// sockets if routing stalled for lossless_queue_bytes of events).
//
// Threads: any. Each group has its own mutex (order: registry, group, hub);
// wakes run outside every lock. The router runs on whichever thread needs it:
// the hub's wake (a loop thread, at the end of its iteration) and members'
// reads.
//
// Example (the gRPC layer's use):
//   GroupRegistry groups(&hub, GroupOptions{});
//   EventHub::Started started;
//   auto member = groups.Join({.group = "workers", .spec = spec,
//                              .member_id = 7, .wake = [] { /* Read */ }},
//                             &started);
//   GroupRead r;
//   groups.Read(member->get(), 256, 1 << 20, /*park_if_empty=*/true, &r);
//   // ... write r.assigned, r.gap or r.events; when the write completes:
//   groups.Written(member->get());
//   groups.Leave(member->get());
#ifndef FANIN_SERVER_FANOUT_GROUP_H_
#define FANIN_SERVER_FANOUT_GROUP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/event_hub.h"
#include "server/fanout/filter.h"
#include "server/fanout/stored_event.h"

namespace fanin::fanout {

struct GroupSpec;

// Cluster mode: what the registry asks of the cluster (server/cluster's
// ClusterNode implements it). Membership changes travel through the
// cluster's stream as GroupChange events, so every node applies them at the
// same place among the events and splits the connections alike; each node
// delivers to its own members only (docs/ARCHITECTURE.md, "Worker-pool
// groups").
class GroupReplication {
 public:
  virtual ~GroupReplication() = default;
  // This node's name and incarnation (member ids carry it in the high bits).
  virtual const std::string& node() const = 0;
  virtual uint64_t incarnation() const = 0;
  // Events with a lower seq were replayed into the hub when the node joined
  // (the registry did not see the membership changes before them); the
  // registry acts on events from here on. Max while not started.
  virtual uint64_t live_from_seq() const = 0;
  // Publishes a GroupChange event to the cluster's stream (node and time
  // set here); it comes back through the hub at its seq.
  virtual void Announce(fanin::v1::Event event) = 0;
  // The cluster's directory of groups: the seq of a group's founding
  // MEMBER_JOINED, 0 when it has none (blocks for one broker round trip).
  virtual absl::StatusOr<uint64_t> FoundedAt(const std::string& group) = 0;
  virtual void Founded(const std::string& group, uint64_t seq) = 0;
  virtual void Forgotten(const std::string& group) = 0;
  // Tells the other nodes, best effort, that `member`'s events up to
  // `received_through` count as received (how far a handover reads back).
  // `as_of`: how far this node had routed when it measured (connections
  // given to the member later are not covered).
  virtual void Progress(const std::string& group, uint64_t member,
                        uint64_t received_through, uint64_t as_of) = 0;
  // Events from `from_seq` on that `filter` matches, read from the
  // cluster's stream; `done` runs on another thread.
  using Fetched = FetchedEvents;
  virtual void Fetch(
      uint64_t from_seq, const Filter& filter, size_t max_events,
      size_t max_bytes,
      absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) = 0;
};

struct GroupOptions {
  // A group without members is forgotten this long after its last member
  // left (a lossless group keeps its backlog, and its back-pressure, until
  // then). Zero: at the next sweep.
  absl::Duration idle_timeout = absl::Seconds(60);
  // Every joining member rebalances, as if it asked for it.
  bool rebalance_on_join = false;
  // Groups at once; one more is refused (RESOURCE_EXHAUSTED).
  size_t max_groups = 256;
  // A member's writes that completed most recently, up to this many bytes of
  // events, are handed over with its unfinished write when it leaves (and
  // marked possibly redelivered): gRPC completes a write once the bytes are
  // in the transport, and a client that cancels or dies drops what it had
  // received but not yet read, up to its HTTP/2 receive window. Zero: only
  // the unfinished write.
  size_t redelivery_bytes = size_t{1} << 20;
  // Cluster mode (null: standalone). Not owned.
  GroupReplication* replication = nullptr;
  // Cluster mode: events queued for this node's members of lossless groups.
  // Each lossless group has a share of it (cluster_queue_bytes / (lossless
  // groups + 1)); past its share a group's events are not queued but read
  // back from the cluster's stream once its members drained it to half, so
  // a slow group delays only its own members. Beyond the shares: members'
  // writes in flight (one batch each) and one read chunk per read-back
  // running. The registry never stops reading (membership changes must
  // apply); nothing pauses.
  size_t cluster_queue_bytes = size_t{64} << 20;
};

// What every member of a group must ask for alike.
struct GroupSpec {
  // The hub subscription's filter: the members' own, plus CLOSED, which the
  // router always needs (a connection's last event) even when the members
  // did not ask for it.
  Filter filter;
  // The members asked for CLOSED events.
  bool deliver_closed = true;
  bool lossless = false;
  // Where the group's cursor starts when this request creates it (as in
  // EventHub::SubscribeSpec); ignored when joining an existing group.
  uint64_t resume_after_seq = 0;
  std::string resume_epoch;
  uint64_t start_back = 0;
  uint64_t start_time_unix_nano = 0;
  // The request's terms in a canonical form, "field=value", in a fixed
  // order; a join whose terms differ is refused, naming each difference.
  std::vector<std::string> terms;
  // Cluster mode: the request, for the other nodes (GroupChange.request).
  fanin::v1::SubscribeRequest request;
};

// One Read's result for a member: at most one of gap, assigned, events.
struct GroupRead {
  std::optional<fanin::v1::Gap> gap;
  std::optional<fanin::v1::Assigned> assigned;
  std::vector<EventPtr> events;
  bool parked = false;  // nothing to read; the member's wake will be called
  bool more = false;    // Read again
  // Cluster mode: the membership ended without the stream asking (refused
  // by the cluster, or its node was cut off): finish with this.
  std::optional<absl::Status> end;

  void Clear() {
    gap.reset();
    assigned.reset();
    events.clear();
    parked = more = false;
    end.reset();
  }
};

class GroupRegistry {
 public:
  struct Member;  // Opaque; the stream that joined holds it.

  struct JoinRequest {
    std::string group;
    GroupSpec spec;
    bool rebalance = false;
    uint64_t member_id = 0;  // the subscriber id of the logs
    std::string peer;
    absl::AnyInvocable<void()> wake;  // as EventHub::SubscribeSpec::wake
  };
  struct Stats {
    uint32_t groups = 0;
    uint32_t members = 0;
    uint64_t connections = 0;             // open, assigned to a member
    uint64_t unassigned_connections = 0;  // open, waiting for a member
    uint64_t handovers = 0;               // since start
    uint64_t redelivered_events = 0;
    uint64_t events_lost = 0;
  };

  GroupRegistry(EventHub* hub, GroupOptions options);
  ~GroupRegistry();
  GroupRegistry(const GroupRegistry&) = delete;
  GroupRegistry& operator=(const GroupRegistry&) = delete;

  // Joins (creating it when it does not exist) the group. *started describes
  // the history as a plain Subscribe's Started does.
  // FAILED_PRECONDITION when the group exists with other terms (the message
  // names each difference), RESOURCE_EXHAUSTED at max_groups (or when a
  // new lossless group's reservation does not fit), OUT_OF_RANGE as
  // EventHub::Subscribe for a new group's resume_after_seq.
  absl::StatusOr<std::shared_ptr<Member>> Join(JoinRequest request,
                                               EventHub::Started* started);
  // The member is gone (its stream ended): its connections, with what it had
  // not finished writing, go to the other members or wait for the next one.
  // Idempotent. After it the member's wake is never called again.
  void Leave(Member* member);

  // Takes the next gap, assigned, or run of up to max_events events (about
  // max_bytes) for the member. The events stay the member's unfinished write
  // until Written; Read only after the previous write completed.
  void Read(Member* member, size_t max_events, size_t max_bytes,
            bool park_if_empty, GroupRead* out);
  // The member's write of what its last Read returned completed.
  void Written(Member* member);
  // As EventHub::Kick and EventHub::Unpark.
  void Kick(Member* member);
  bool Unpark(Member* member);

  // Forgets groups without members for idle_timeout. Call periodically.
  // (Cluster mode decides by event time, as it routes.)
  void Sweep(absl::Time now);

  // Cluster mode: how the other nodes build a group's spec from a member's
  // request (GroupChange.request). Set once, before the cluster starts.
  using SpecOf = std::function<absl::StatusOr<GroupSpec>(
      const fanin::v1::SubscribeRequest&)>;
  void SetSpecOf(SpecOf spec_of);
  // Cluster mode: another node's progress message (GroupReplication::
  // Progress).
  void NoteProgress(const std::string& group, uint64_t member,
                    uint64_t received_through, uint64_t as_of);

  // Every group (or the one named) as ListGroups reports it, by name.
  std::vector<fanin::v1::GroupInfo> List(absl::string_view name = "") const;
  Stats GetStats() const;

 private:
  struct Group;
  using WakeList = std::vector<std::shared_ptr<Member>>;

  void OnHubWake(const std::weak_ptr<Group>& weak);
  static void RunWakes(WakeList* wakes);

  // Cluster mode (group.cc, "Cluster mode").
  struct Cluster;
  void ClusterRoute(bool hub_wake);
  void ClusterRouteLocked(WakeList* wakes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateClusterShare() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClusterFetch(uint64_t from);
  void ClusterOnFetched(uint64_t from,
                        absl::StatusOr<GroupReplication::Fetched> fetched);
  void ClusterRouteOne(const EventPtr& e, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClusterForget(int64_t now_ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClusterApply(const EventPtr& e, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveMember(const std::shared_ptr<Group>& g, std::shared_ptr<Member> m,
                    uint64_t received_through, uint64_t written_through,
                    uint64_t as_of, const EventPtr& at, WakeList* wakes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<Member>> ClusterJoin(
      JoinRequest request, EventHub::Started* started);
  void ClusterLeave(Member* member);
  void Backfill(const std::shared_ptr<Group>& g, uint64_t id);
  void OnBackfill(std::weak_ptr<Group> weak, uint64_t id,
                  absl::StatusOr<GroupReplication::Fetched> fetched);

  EventHub* const hub_;
  const GroupOptions options_;
  std::atomic<uint64_t> handovers_{0};
  std::atomic<uint64_t> redelivered_{0};
  std::atomic<uint64_t> lost_{0};

  mutable absl::Mutex mu_;
  absl::btree_map<std::string, std::shared_ptr<Group>> groups_
      ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Cluster> cluster_;  // cluster mode only
  // Cluster mode: what one lossless group may queue before the router skips
  // its events (to read them back later) instead of stopping for every
  // group: cluster_queue_bytes / (lossless groups + 1).
  std::atomic<int64_t> cluster_share_{0};
};

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_GROUP_H_
