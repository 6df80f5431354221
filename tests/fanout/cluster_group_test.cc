// GroupRegistry in cluster mode without NATS: two "nodes", each its own
// EventHub and GroupRegistry, fed one stream in an order the test chooses
// (a stand-in GroupReplication). Pins what the three-node end-to-end tests
// (tests/cluster/groups_test) reach only by chance: both nodes compute the
// same owners, a connection moving to the other node's member is read back
// from the stream, and a range owed by a member that left before
// delivering a handed-over connection is carried to the next; and the edges
// around a read-back: a lossy member's losses, a rebalance or a second move
// while the read-back still runs, a whole node lost with progress unsent.
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/event_hub.h"
#include "server/fanout/group.h"

namespace fanin::fanout {
namespace {

class Node;

// The cluster's stream: every event, in order, fed to every node's hub.
struct Stream {
  std::vector<EventPtr> events;
  std::map<std::string, uint64_t> founded;
  std::vector<Node*> nodes;

  uint64_t Commit(std::shared_ptr<StoredEvent> e);
};

// How a test member subscribes.
struct MemberOptions {
  bool lossless = true;
  bool rebalance = false;
  std::string group = "g";
  bool closed = true;  // asks for Closed events
};

class Node : public GroupReplication {
 public:
  // `history_events`: this node's in-memory history (the stream keeps
  // everything). `queue_bytes`: GroupOptions::cluster_queue_bytes.
  Node(Stream* stream, std::string name, uint64_t incarnation,
       size_t redelivery_bytes,
       size_t history_events = HubOptions{}.history_events,
       size_t queue_bytes = GroupOptions{}.cluster_queue_bytes)
      : stream_(stream),
        name_(std::move(name)),
        incarnation_(incarnation),
        hub_(HubOptions{.history_events = history_events,
                        .epoch = "e",
                        .history_source = true}),
        groups_(&hub_, GroupOptions{.redelivery_bytes = redelivery_bytes,
                                    .replication = this,
                                    .cluster_queue_bytes = queue_bytes}) {
    groups_.SetSpecOf([](const fanin::v1::SubscribeRequest& request) {
      return absl::StatusOr<GroupSpec>(SpecOf(request));
    });
    stream_->nodes.push_back(this);
  }

  const std::string& node() const override { return name_; }
  uint64_t incarnation() const override { return incarnation_; }
  uint64_t live_from_seq() const override { return 1; }
  void Announce(fanin::v1::Event event) override {
    event.set_node(name_);
    announced_.push_back(std::move(event));
  }
  absl::StatusOr<uint64_t> FoundedAt(const std::string& group) override {
    auto it = stream_->founded.find(group);
    return it == stream_->founded.end() ? 0 : it->second;
  }
  void Founded(const std::string& group, uint64_t seq) override {
    stream_->founded[group] = seq;
  }
  void Forgotten(const std::string& group) override {
    stream_->founded.erase(group);
  }
  // Kept until the test delivers them (DeliverProgressTo) or loses them
  // (DropProgress): core NATS, best effort.
  void Progress(const std::string& group, uint64_t member,
                uint64_t received_through, uint64_t as_of) override {
    progress_.push_back({group, member, received_through, as_of});
  }
  // Reads the stream when it runs: at once, or, while fetches are held,
  // when the test calls RunFetches (a read-back still in progress).
  // At most max_events, or about max_bytes of bodies, as ClusterNode's.
  void Fetch(uint64_t from_seq, const Filter& filter, size_t max_events,
             size_t max_bytes,
             absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) override {
    ++fetches_;
    auto run = [this, from_seq, filter, max_events, max_bytes,
                done = std::move(done)]() mutable {
      Fetched out;
      out.next_seq = from_seq;
      size_t bytes = 0;
      for (uint64_t seq = from_seq; seq <= stream_->events.size(); ++seq) {
        out.next_seq = seq + 1;
        const EventPtr& e = stream_->events[seq - 1];
        if (!filter.Matches(*e)) continue;
        out.events.push_back(e);
        bytes += e->body.size();
        if (out.events.size() >= max_events || bytes >= max_bytes) break;
      }
      done(std::move(out));
    };
    if (hold_fetches_) {
      held_fetches_.push_back(std::move(run));
    } else {
      run();
    }
  }

  // Reads from the stream asked for so far.
  size_t fetches() const { return fetches_; }
  // Fetches wait for RunFetches from now on.
  void HoldFetches() { hold_fetches_ = true; }
  size_t held_fetches() const { return held_fetches_.size(); }
  // Completes the held fetches, and the ones they start, and stops holding.
  void RunFetches() {
    hold_fetches_ = false;
    while (!held_fetches_.empty()) {
      auto run = std::move(held_fetches_.front());
      held_fetches_.pop_front();
      run();
    }
  }

  // This node's progress messages so far reach `other` (in order).
  void DeliverProgressTo(Node& other) {
    for (const auto& p : progress_) {
      other.groups().NoteProgress(p.group, p.member, p.received_through,
                                  p.as_of);
    }
    progress_.clear();
  }
  void DropProgress() { progress_.clear(); }

  // What this node announced, into the stream.
  void CommitAnnounced() {
    std::vector<fanin::v1::Event> announced;
    announced.swap(announced_);
    for (const auto& ev : announced) stream_->Commit(MakeEvent(ev, 0));
  }

  std::shared_ptr<GroupRegistry::Member> Join(uint64_t id,
                                              MemberOptions options = {}) {
    fanin::v1::SubscribeRequest request;
    request.set_group(options.group);
    if (!options.closed) {
      request.add_kinds(fanin::v1::EVENT_KIND_OPENED);
      request.add_kinds(fanin::v1::EVENT_KIND_DATA);
    }
    request.set_delivery(options.lossless ? fanin::v1::DELIVERY_LOSSLESS
                                          : fanin::v1::DELIVERY_LOSSY);
    EventHub::Started started;
    auto m = groups_.Join({.group = options.group,
                           .spec = SpecOf(request),
                           .rebalance = options.rebalance,
                           .member_id = id,
                           .wake = [] {}},
                          &started);
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }
  // A member's id as the cluster knows it: the incarnation in the high bits.
  uint64_t MemberId(uint64_t id) const { return incarnation_ << 32 | id; }

  EventHub& hub() { return hub_; }
  GroupRegistry& groups() { return groups_; }

 private:
  // What every node builds from a member's request (GroupChange.request).
  static GroupSpec SpecOf(const fanin::v1::SubscribeRequest& request) {
    GroupSpec spec;
    spec.lossless = request.delivery() == fanin::v1::DELIVERY_LOSSLESS;
    // (The filter stays "everything", CLOSED included, as the router needs.)
    spec.deliver_closed = request.kinds().empty();
    spec.terms = {spec.deliver_closed ? "kinds=all" : "kinds=opened,data"};
    spec.request = request;
    return spec;
  }

  struct ProgressMessage {
    std::string group;
    uint64_t member;
    uint64_t received_through;
    uint64_t as_of;
  };

  Stream* stream_;
  const std::string name_;
  const uint64_t incarnation_;
  EventHub hub_;
  GroupRegistry groups_;
  std::vector<fanin::v1::Event> announced_;
  std::vector<ProgressMessage> progress_;
  size_t fetches_ = 0;
  bool hold_fetches_ = false;
  std::deque<absl::AnyInvocable<void()>> held_fetches_;
};

uint64_t Stream::Commit(std::shared_ptr<StoredEvent> e) {
  uint64_t seq = 0;
  for (Node* n : nodes) {
    seq = n->hub().Publish(std::make_shared<StoredEvent>(*e));
  }
  e->seq = seq;
  events.push_back(std::move(e));
  EXPECT_EQ(seq, events.size());
  return seq;
}

// What ClusterNode publishes when `node` is reported lost (or left): every
// member it had ends at this seq.
uint64_t CommitNodeGone(Stream* stream, const Node& node,
                        fanin::v1::NodeState state) {
  fanin::v1::Event e;
  e.set_node(node.node());
  e.mutable_node_change()->set_state(state);
  e.mutable_node_change()->set_incarnation(node.incarnation());
  return stream->Commit(MakeEvent(e, 0));
}

// A connection of node "a", its events committed to the stream.
class Conn {
 public:
  Conn(Stream* stream, uint64_t n)
      : stream_(stream),
        id_(uint64_t{1} << 32 | n),
        info_(std::make_shared<ConnectionInfo>(ConnectionInfo{
            "default", absl::StrCat("127.0.0.1:", 1000 + n), "127.0.0.1:1"})) {}
  uint64_t Open() {
    fanin::v1::Event e;
    e.set_connection_id(id_);
    e.set_listener("default");
    e.set_node("a");
    e.mutable_opened()->set_remote_address(info_->remote_address);
    return Commit(MakeEvent(e, 0));
  }
  uint64_t Data(absl::string_view bytes) {
    const uint64_t seq =
        Commit(MakeDataEvent(id_, 0, "default", "a", 1234, bytes));
    received_ += bytes.size();
    return seq;
  }
  uint64_t Close() {
    fanin::v1::Event e;
    e.set_connection_id(id_);
    e.set_listener("default");
    e.set_node("a");
    e.mutable_closed()->set_bytes_received(received_);
    return Commit(MakeEvent(e, 0));
  }
  uint64_t id() const { return id_; }

 private:
  uint64_t Commit(std::shared_ptr<StoredEvent> e) {
    e->bytes_received_before = received_;
    e->connection = info_;
    return stream_->Commit(std::move(e));
  }

  Stream* stream_;
  uint64_t id_;
  std::shared_ptr<const ConnectionInfo> info_;
  uint64_t received_ = 0;
};

// A member's stream, read by hand: every event seq it got per connection
// (and whether an Assigned marked it possibly redelivered), its Assigned,
// its Gaps, and how the cluster ended it.
struct Reader {
  std::shared_ptr<GroupRegistry::Member> member;
  std::map<uint64_t, std::vector<std::pair<uint64_t, bool>>> got;
  std::vector<fanin::v1::Assigned> assigned;
  std::vector<fanin::v1::Gap> gaps;
  std::map<uint64_t, uint64_t> marked_through;
  std::optional<absl::Status> end;

  // One Read; its write completes unless `ack` is false (then it stays in
  // flight). False when there was nothing to read.
  bool ReadOnce(GroupRegistry& groups, bool ack = true) {
    GroupRead r;
    groups.Read(member.get(), 64, 1 << 20, true, &r);
    if (r.end.has_value()) end = r.end;
    if (r.gap.has_value()) {
      gaps.push_back(*r.gap);
    } else if (r.assigned.has_value()) {
      assigned.push_back(*r.assigned);
      marked_through[r.assigned->connection_id()] =
          r.assigned->possibly_redelivered_through_seq();
    } else if (!r.events.empty()) {
      for (const EventPtr& e : r.events) {
        got[e->connection_id].push_back(
            {e->seq, e->seq <= marked_through[e->connection_id]});
      }
    } else if (r.parked || r.end.has_value()) {
      return false;
    }
    if (ack) groups.Written(member.get());
    return true;
  }
  void Drain(GroupRegistry& groups) {
    while (ReadOnce(groups)) {
    }
  }

  std::vector<uint64_t> Seqs(uint64_t conn) const {
    std::vector<uint64_t> out;
    auto it = got.find(conn);
    if (it == got.end()) return out;
    for (const auto& [seq, marked] : it->second) out.push_back(seq);
    return out;
  }
  // The Assigned for `conn` (the last one), or null.
  const fanin::v1::Assigned* AssignedFor(uint64_t conn) const {
    const fanin::v1::Assigned* found = nullptr;
    for (const auto& a : assigned) {
      if (a.connection_id() == conn && !a.revoked()) found = &a;
    }
    return found;
  }
};

fanin::v1::GroupInfo Info(GroupRegistry& groups,
                          absl::string_view group = "g") {
  auto list = groups.List(group);
  return list.empty() ? fanin::v1::GroupInfo() : list[0];
}

// Every seq of `conn` in the stream reached `readers` at least once, and at
// most once unmarked.
void ExpectWhole(const Stream& stream, uint64_t conn,
                 const std::vector<const Reader*>& readers) {
  std::map<uint64_t, int> unmarked, any;
  for (const Reader* r : readers) {
    auto it = r->got.find(conn);
    if (it == r->got.end()) continue;
    for (const auto& [seq, marked] : it->second) {
      ++any[seq];
      if (!marked) ++unmarked[seq];
    }
  }
  for (const EventPtr& e : stream.events) {
    if (e->connection_id != conn) continue;
    EXPECT_GE(any[e->seq], 1)
        << "connection " << conn << " seq " << e->seq << " never delivered";
    EXPECT_LE(unmarked[e->seq], 1) << "connection " << conn << " seq " << e->seq
                                   << " delivered twice unmarked";
  }
}

// Both nodes have the same members, in the same order, with the same
// number of connections each.
void ExpectAgree(GroupRegistry& a, GroupRegistry& b,
                 absl::string_view group = "g") {
  const fanin::v1::GroupInfo ia = Info(a, group), ib = Info(b, group);
  ASSERT_EQ(ia.members_size(), ib.members_size());
  for (int i = 0; i < ia.members_size(); ++i) {
    EXPECT_EQ(ia.members(i).member_id(), ib.members(i).member_id());
    EXPECT_EQ(ia.members(i).node(), ib.members(i).node());
    EXPECT_EQ(ia.members(i).connections(), ib.members(i).connections())
        << "member " << ia.members(i).member_id();
  }
  EXPECT_EQ(ia.unassigned_connections(), ib.unassigned_connections());
}

// Every member got each connection's events in increasing seq order.
void ExpectInOrder(const std::vector<const Reader*>& readers) {
  for (const Reader* r : readers) {
    for (const auto& [conn, events] : r->got) {
      for (size_t i = 1; i < events.size(); ++i) {
        EXPECT_LT(events[i - 1].first, events[i].first)
            << "connection " << conn << " out of order";
      }
    }
  }
}

// A member with the node it reads through.
struct Live {
  Node* node;
  Reader* reader;
};

// Who owns `conn` now, by the delivery of one more event: exactly one of
// `live` must get it (null when not so).
const Reader* OwnerOf(Conn& conn, const std::vector<Live>& live) {
  const uint64_t probe = conn.Data("probe");
  const Reader* owner = nullptr;
  int owners = 0;
  for (const Live& l : live) {
    l.reader->Drain(l.node->groups());
    for (uint64_t seq : l.reader->Seqs(conn.id())) {
      if (seq == probe) {
        owner = l.reader;
        ++owners;
      }
    }
  }
  EXPECT_EQ(owners, 1) << "connection " << conn.id() << " seq " << probe;
  return owners == 1 ? owner : nullptr;
}

TEST(ClusterGroupTest, BothNodesAgreeAndAHandoverToTheOtherNodeIsWhole) {
  Stream stream;
  Node a(&stream, "a", 1, size_t{1} << 20);
  Node b(&stream, "b", 2, size_t{1} << 20);
  Reader x{a.Join(1)};
  a.CommitAnnounced();
  Reader m{b.Join(1)};
  b.CommitAnnounced();
  std::vector<Conn> conns;
  for (uint64_t n = 1; n <= 6; ++n) conns.emplace_back(&stream, n);
  for (Conn& c : conns) c.Open();
  for (Conn& c : conns) c.Data("first");
  x.Drain(a.groups());
  m.Drain(b.groups());
  for (GroupRegistry* g : {&a.groups(), &b.groups()}) {
    fanin::v1::GroupInfo info = Info(*g);
    ASSERT_EQ(info.members_size(), 2);
    EXPECT_EQ(info.members(0).node(), "a");
    EXPECT_EQ(info.members(0).connections(), 3u);
    EXPECT_EQ(info.members(1).node(), "b");
    EXPECT_EQ(info.members(1).connections(), 3u);
  }
  EXPECT_EQ(x.got.size(), 3u);
  EXPECT_EQ(m.got.size(), 3u);
  // M leaves; more arrives before its MEMBER_LEFT is in the stream.
  b.groups().Leave(m.member.get());
  for (Conn& c : conns) c.Data("second");
  b.CommitAnnounced();
  for (Conn& c : conns) c.Data("third");
  x.Drain(a.groups());
  for (GroupRegistry* g : {&a.groups(), &b.groups()}) {
    fanin::v1::GroupInfo info = Info(*g);
    ASSERT_EQ(info.members_size(), 1);
    EXPECT_EQ(info.members(0).connections(), 6u);
  }
  int moved = 0;
  for (const auto& as : x.assigned) {
    EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    EXPECT_EQ(as.previous_node(), "b");
    ++moved;
  }
  EXPECT_EQ(moved, 3);
  for (const Conn& c : conns) ExpectWhole(stream, c.id(), {&x, &m});
}

// A connection M had not delivered goes to N, who had already left (its
// MEMBER_LEFT measured before it got the connection, with a floor past the
// undelivered event): the next member must still get that event.
TEST(ClusterGroupTest, AnOwedRangeSurvivesAMemberThatNeverDeliveredIt) {
  Stream stream;
  // No redelivery window: a member's floor is where its node had routed.
  Node a(&stream, "a", 1, 0);
  Node b(&stream, "b", 2, 0);
  Reader x{a.Join(1)};
  a.CommitAnnounced();
  Reader m{b.Join(1)};
  b.CommitAnnounced();
  Reader n{b.Join(2)};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2), c3(&stream, 3), c4(&stream, 4);
  c1.Open();  // x
  c2.Open();  // m
  c3.Open();  // n
  c4.Open();  // x: the tie goes to the earliest member
  x.Drain(a.groups());
  m.Drain(b.groups());
  n.Drain(b.groups());
  const uint64_t undelivered = c2.Data("m never reads this");
  n.Drain(b.groups());  // n's floor passes `undelivered` (not its event)
  // Both measured now; M's MEMBER_LEFT goes first: c2 goes to N (fewest
  // connections), which has left already but whose MEMBER_LEFT comes after.
  b.groups().Leave(m.member.get());
  b.groups().Leave(n.member.get());
  b.CommitAnnounced();
  x.Drain(a.groups());
  ASSERT_EQ(Info(a.groups()).members_size(), 1);
  ExpectWhole(stream, c2.id(), {&x, &m, &n});
  bool got = false;
  for (const auto& [seq, marked] : x.got[c2.id()]) got |= seq == undelivered;
  EXPECT_TRUE(got) << "seq " << undelivered << " of c2";
  ExpectWhole(stream, c3.id(), {&x, &m, &n});
}

// Lossy: X on node a falls behind (a's history holds 16 events), reads only
// the Gap that says so and leaves before it was told, per connection, what
// it lost. Its connections go to M on node b, which must get each of their
// events after the last X received, in order, or be told exactly which it
// will not get (an Assigned.gap or a Gap).
TEST(ClusterGroupTest, ALossyMembersLossesReachTheOtherNodesMember) {
  Stream stream;
  Node a(&stream, "a", 1, 0, /*history_events=*/16);
  Node b(&stream, "b", 2, 0);
  Reader x{a.Join(1, {.lossless = false})};
  a.CommitAnnounced();
  Reader m{b.Join(1, {.lossless = false})};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2), c3(&stream, 3), c4(&stream, 4);
  for (Conn* c : {&c1, &c2, &c3, &c4}) c->Open();  // x, m, x, m
  x.Drain(a.groups());
  m.Drain(b.groups());
  ASSERT_EQ(x.got.size(), 2u);
  ASSERT_EQ(m.got.size(), 2u);
  for (int i = 0; i < 12; ++i) {
    for (Conn* c : {&c1, &c2, &c3, &c4}) c->Data("x");
  }
  m.Drain(b.groups());  // m keeps up
  ASSERT_TRUE(x.ReadOnce(a.groups()));
  ASSERT_EQ(x.gaps.size(), 1u) << "x fell behind a's history";
  EXPECT_EQ(x.gaps[0].lost(), 16u) << "8 events each of c1 and c3";
  a.groups().Leave(x.member.get());
  a.CommitAnnounced();
  for (Conn* c : {&c1, &c2, &c3, &c4}) c->Data("after");
  m.Drain(b.groups());
  ExpectAgree(a.groups(), b.groups());
  ExpectInOrder({&x, &m});
  for (const Conn* c : {&c1, &c3}) {
    const fanin::v1::Assigned* as = m.AssignedFor(c->id());
    ASSERT_NE(as, nullptr) << "connection " << c->id();
    EXPECT_EQ(as->reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    EXPECT_EQ(as->previous_node(), "a");
    // What m was told it lost of this connection: its Assigned's gap, or
    // its Gaps (which may cover other connections' seqs too).
    auto told_lost = [&](uint64_t seq) {
      bool told = as->has_gap() && as->gap().first_seq() <= seq &&
                  seq <= as->gap().last_seq();
      for (const auto& g : m.gaps) {
        told |= g.first_seq() <= seq && seq <= g.last_seq();
      }
      return told;
    };
    const std::vector<uint64_t> had = x.Seqs(c->id());
    const uint64_t x_last = had.empty() ? 0 : had.back();
    const std::vector<uint64_t> got = m.Seqs(c->id());
    uint64_t not_got = 0;
    for (const EventPtr& e : stream.events) {
      if (e->connection_id != c->id() || e->seq <= x_last) continue;
      if (std::find(got.begin(), got.end(), e->seq) != got.end()) continue;
      ++not_got;
      EXPECT_TRUE(told_lost(e->seq))
          << "connection " << c->id() << " seq " << e->seq
          << " neither delivered to m nor reported lost";
    }
    if (as->has_gap()) {
      EXPECT_EQ(as->gap().lost(), not_got)
          << "the Assigned's gap counts exactly what m did not get";
    }
    // Nothing m got had x received unmarked.
    for (const auto& [seq, marked] : m.got[c->id()]) {
      EXPECT_TRUE(seq > x_last || marked) << "seq " << seq << " twice";
    }
  }
  EXPECT_EQ(OwnerOf(c1, {{&b, &m}}), &m);
}

// A rebalance while node a is still reading back, for X, the connections M
// (node b) left: a member joining on `joiner_node` takes some of X's,
// among them one being read back. Nothing lost or delivered twice
// unmarked, and both nodes agree on who owns what.
class ClusterGroupRebalanceTest : public ::testing::TestWithParam<int> {};

TEST_P(ClusterGroupRebalanceTest, DuringAReadBackLosesNothing) {
  Stream stream;
  Node a(&stream, "a", 1, 0);
  Node b(&stream, "b", 2, 0);
  Node& joiner_node = GetParam() == 0 ? a : b;
  a.HoldFetches();
  Reader x{a.Join(1)};
  a.CommitAnnounced();
  Reader m{b.Join(1)};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2), c3(&stream, 3), c4(&stream, 4);
  std::vector<Conn*> conns = {&c1, &c2, &c3, &c4};
  for (Conn* c : conns) c->Open();  // x, m, x, m
  for (Conn* c : conns) c->Data("read");
  x.Drain(a.groups());
  m.Drain(b.groups());
  for (Conn* c : conns) c->Data("m never reads this");
  b.groups().Leave(m.member.get());
  b.CommitAnnounced();
  // a now reads c2 and c4 back for x; their later events wait behind it.
  ASSERT_EQ(a.held_fetches(), 1u);
  for (Conn* c : conns) c->Data("during the read-back");
  x.Drain(a.groups());
  EXPECT_TRUE(x.Seqs(c2.id()).empty()) << "held behind the read-back";
  Reader y{joiner_node.Join(2, {.rebalance = true})};
  joiner_node.CommitAnnounced();
  for (Conn* c : conns) c->Data("after the rebalance");
  a.RunFetches();
  x.Drain(a.groups());
  y.Drain(joiner_node.groups());
  ExpectAgree(a.groups(), b.groups());
  const fanin::v1::GroupInfo info = Info(a.groups());
  ASSERT_EQ(info.members_size(), 2);
  EXPECT_EQ(info.members(0).connections(), 2u);
  EXPECT_EQ(info.members(1).connections(), 2u);
  // The oldest two moved: c1 (x's) and c2 (being read back for x).
  const std::vector<Live> live = {{&a, &x}, {&joiner_node, &y}};
  EXPECT_EQ(OwnerOf(c1, live), &y);
  EXPECT_EQ(OwnerOf(c2, live), &y);
  EXPECT_EQ(OwnerOf(c3, live), &x);
  EXPECT_EQ(OwnerOf(c4, live), &x);
  EXPECT_TRUE(x.Seqs(c2.id()).empty())
      << "x never held c2's events: it moved during its read-back";
  ExpectInOrder({&x, &m, &y});
  for (const Conn* c : conns) ExpectWhole(stream, c->id(), {&x, &m, &y});
}

INSTANTIATE_TEST_SUITE_P(JoinerOnEitherNode, ClusterGroupRebalanceTest,
                         ::testing::Values(0, 1), [](const auto& info) {
                           return info.param == 0 ? "SameNode" : "OtherNode";
                         });

// X (node a) leaves while a still reads back the connections it got from M
// (node b): they move again, to a member on `next_node`, before the read
// completes. Nothing lost or delivered twice unmarked.
class ClusterGroupMoveAgainTest : public ::testing::TestWithParam<int> {};

TEST_P(ClusterGroupMoveAgainTest, BeforeTheReadBackCompletesLosesNothing) {
  Stream stream;
  Node a(&stream, "a", 1, 0);
  Node b(&stream, "b", 2, 0);
  Node& next_node = GetParam() == 0 ? a : b;
  a.HoldFetches();
  Reader x{a.Join(1)};
  a.CommitAnnounced();
  Reader m{b.Join(1)};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2), c3(&stream, 3), c4(&stream, 4);
  std::vector<Conn*> conns = {&c1, &c2, &c3, &c4};
  for (Conn* c : conns) c->Open();  // x, m, x, m
  for (Conn* c : conns) c->Data("read");
  x.Drain(a.groups());
  m.Drain(b.groups());
  for (Conn* c : conns) c->Data("m never reads this");
  b.groups().Leave(m.member.get());
  b.CommitAnnounced();
  ASSERT_EQ(a.held_fetches(), 1u);
  Reader w{next_node.Join(2)};  // takes nothing: every connection is owned
  next_node.CommitAnnounced();
  for (Conn* c : conns) c->Data("during the read-back");
  x.Drain(a.groups());
  EXPECT_TRUE(x.Seqs(c2.id()).empty()) << "held behind the read-back";
  a.groups().Leave(x.member.get());
  for (Conn* c : conns) c->Data("before x's MEMBER_LEFT");
  a.CommitAnnounced();
  for (Conn* c : conns) c->Data("after");
  a.RunFetches();
  w.Drain(next_node.groups());
  ExpectAgree(a.groups(), b.groups());
  ASSERT_EQ(Info(a.groups()).members_size(), 1);
  for (Conn* c : conns) EXPECT_EQ(OwnerOf(*c, {{&next_node, &w}}), &w);
  for (const Conn* c : {&c2, &c4}) {
    const fanin::v1::Assigned* as = w.AssignedFor(c->id());
    ASSERT_NE(as, nullptr);
    EXPECT_EQ(as->reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    EXPECT_EQ(as->previous_member(), a.MemberId(1));
    EXPECT_EQ(as->previous_node(), "a");
  }
  ExpectInOrder({&x, &m, &w});
  for (const Conn* c : conns) ExpectWhole(stream, c->id(), {&x, &m, &w});
}

INSTANTIATE_TEST_SUITE_P(NextMemberOnEitherNode, ClusterGroupMoveAgainTest,
                         ::testing::Values(0, 1), [](const auto& info) {
                           return info.param == 0 ? "SameNode" : "OtherNode";
                         });

// Node b is reported lost while its member M had written events its last
// delivered progress did not cover (a later progress message was lost) and
// had a write in flight: X on node a gets M's connections from where that
// progress stood, the events up to the loss marked possibly redelivered.
TEST(ClusterGroupTest, ALostNodesMembersHandOverFromTheirLastProgress) {
  Stream stream;
  Node a(&stream, "a", 1, 0);
  Node b(&stream, "b", 2, 0);
  Reader x{a.Join(1)};
  a.CommitAnnounced();
  Reader m{b.Join(1)};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2), c3(&stream, 3), c4(&stream, 4);
  std::vector<Conn*> conns = {&c1, &c2, &c3, &c4};
  for (Conn* c : conns) c->Open();  // x, m, x, m
  for (Conn* c : conns) c->Data("one");
  x.Drain(a.groups());
  m.Drain(b.groups());
  b.groups().Sweep(absl::Now());  // sends m's progress if writes did not
  b.DeliverProgressTo(a);         // a knows m received everything so far
  std::map<uint64_t, uint64_t> first_unacknowledged;
  for (Conn* c : conns) first_unacknowledged[c->id()] = c->Data("two");
  m.Drain(b.groups());
  b.DropProgress();  // lost: a still has m at "one"
  for (Conn* c : conns) c->Data("three");
  ASSERT_TRUE(m.ReadOnce(b.groups(), /*ack=*/false));  // in flight
  const uint64_t lost_at =
      CommitNodeGone(&stream, b, fanin::v1::NODE_STATE_LOST);
  for (Conn* c : conns) c->Data("four");
  x.Drain(a.groups());
  EXPECT_FALSE(m.ReadOnce(b.groups()));
  ASSERT_TRUE(m.end.has_value()) << "b's own registry ends m too";
  EXPECT_EQ(m.end->code(), absl::StatusCode::kUnavailable);
  ExpectAgree(a.groups(), b.groups());
  ASSERT_EQ(Info(a.groups()).members_size(), 1);
  for (const Conn* c : {&c2, &c4}) {
    const fanin::v1::Assigned* as = x.AssignedFor(c->id());
    ASSERT_NE(as, nullptr);
    EXPECT_EQ(as->reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    EXPECT_EQ(as->previous_node(), "b");
    EXPECT_EQ(as->from_seq(), first_unacknowledged[c->id()])
        << "from where m's last delivered progress stood";
    EXPECT_EQ(as->possibly_redelivered_through_seq(), lost_at);
    const auto& got = x.got[c->id()];
    ASSERT_EQ(got.size(), 3u) << "two, three, four";
    EXPECT_EQ(got[0].first, first_unacknowledged[c->id()]);
    EXPECT_TRUE(got[0].second) << "m wrote it: marked";
    EXPECT_TRUE(got[1].second) << "m's write in flight: marked";
    EXPECT_GT(got[2].first, lost_at);
    EXPECT_FALSE(got[2].second) << "after the loss: not marked";
  }
  for (Conn* c : conns) EXPECT_EQ(OwnerOf(*c, {{&a, &x}}), &x);
  ExpectInOrder({&x, &m});
  for (const Conn* c : conns) ExpectWhole(stream, c->id(), {&x, &m});
}

// Members that did not ask for Closed events: a connection that closed
// before its handover is read back for the next member without its Closed,
// as live routing leaves it out.
TEST(ClusterGroupTest, AReadBackLeavesOutClosedEventsNotAskedFor) {
  Stream stream;
  Node a(&stream, "a", 1, 0);
  Node b(&stream, "b", 2, 0);
  Reader x{a.Join(1, {.closed = false})};
  a.CommitAnnounced();
  Reader m{b.Join(1, {.closed = false})};
  b.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2);
  c1.Open();  // x
  c2.Open();  // m
  x.Drain(a.groups());
  m.Drain(b.groups());
  const uint64_t data = c2.Data("m never reads this");
  const uint64_t closed = c2.Close();
  b.groups().Leave(m.member.get());
  b.CommitAnnounced();
  c1.Close();
  x.Drain(a.groups());
  EXPECT_EQ(x.Seqs(c2.id()), std::vector<uint64_t>{data})
      << "c2's Closed (seq " << closed << ") was not asked for";
  EXPECT_EQ(x.Seqs(c1.id()).size(), 1u) << "c1's Opened only";
  ExpectAgree(a.groups(), b.groups());
}

// One lossless group's member on node a stops completing its write while
// its group is far past its share of a's group queues (and past all of
// them): another group's member on the same node still gets each event at
// once (the router skips the slow group's events instead of stopping), and
// the slow member, once it writes again, gets every event of its
// connection from the stream, in order, none twice, without an Assigned
// (the connection never left it). The slow group's member on node b, which
// did not read either, reads back alike.
TEST(ClusterGroupTest, ASlowGroupDoesNotDelayTheNodesOtherGroups) {
  Stream stream;
  constexpr size_t kQueueBytes = 12000;  // a share: 4000 (2 groups + 1)
  Node a(&stream, "a", 1, 0, HubOptions{}.history_events, kQueueBytes);
  Node b(&stream, "b", 2, 0, HubOptions{}.history_events, kQueueBytes);
  Reader s{a.Join(1, {.group = "slow"})};
  a.CommitAnnounced();
  Reader r{b.Join(1, {.group = "slow"})};
  b.CommitAnnounced();
  Reader f{a.Join(2, {.group = "fast"})};
  a.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2);
  c1.Open();  // slow: s; fast: f
  c2.Open();  // slow: r; fast: f
  s.Drain(a.groups());
  r.Drain(b.groups());
  f.Drain(a.groups());
  ASSERT_EQ(s.Seqs(c1.id()).size(), 1u);
  ASSERT_EQ(r.Seqs(c2.id()).size(), 1u);
  c1.Data("s writes this and never completes the write");
  ASSERT_TRUE(s.ReadOnce(a.groups(), /*ack=*/false));
  f.Drain(a.groups());
  const std::string payload(1000, 'x');
  size_t sent_bytes = 0;
  for (int i = 0; i < 150; ++i) {
    for (Conn* c : {&c1, &c2}) {
      const uint64_t seq = c->Data(payload);
      sent_bytes += payload.size();
      f.Drain(a.groups());
      const std::vector<uint64_t> got = f.Seqs(c->id());
      ASSERT_FALSE(got.empty());
      ASSERT_EQ(got.back(), seq)
          << "f (group fast) waits for s (group slow) after " << sent_bytes
          << " bytes";
    }
  }
  ASSERT_GT(sent_bytes / 2, kQueueBytes) << "s alone is past every queue";
  const fanin::v1::GroupInfo slow = Info(a.groups(), "slow");
  ASSERT_EQ(slow.members_size(), 2);
  EXPECT_LT(slow.members(0).queued_events(), 10u)
      << "a queues only the slow group's share for s";
  // s writes again: everything, read back from the stream a chunk (64 KiB,
  // here 64 events) at a time, the next read waiting until s drained the
  // group to half its share.
  const size_t fetches = a.fetches();
  a.groups().Written(s.member.get());
  uint64_t most_queued = 0;
  while (s.ReadOnce(a.groups())) {
    most_queued = std::max<uint64_t>(
        most_queued, Info(a.groups(), "slow").members(0).queued_events());
  }
  EXPECT_GE(a.fetches() - fetches, 3u);
  EXPECT_LE(most_queued, 70u) << "one chunk at a time";
  r.Drain(b.groups());
  EXPECT_EQ(Info(a.groups(), "slow").members(0).queued_events(), 0u);
  EXPECT_TRUE(s.assigned.empty()) << "c1 never left s";
  EXPECT_TRUE(r.assigned.empty()) << "c2 never left r";
  EXPECT_TRUE(s.Seqs(c2.id()).empty());
  EXPECT_TRUE(r.Seqs(c1.id()).empty());
  for (const Conn* c : {&c1, &c2}) {
    ExpectWhole(stream, c->id(), {&s, &r});
    ExpectWhole(stream, c->id(), {&f});
  }
  for (const Reader* x : {&s, &r}) {
    for (const auto& [conn, events] : x->got) {
      for (const auto& [seq, marked] : events) {
        EXPECT_FALSE(marked) << "seq " << seq << ": nothing to mark";
      }
    }
  }
  ExpectInOrder({&s, &r, &f});
  ExpectAgree(a.groups(), b.groups(), "slow");
  ExpectAgree(a.groups(), b.groups(), "fast");
  // Still s's and r's, and delivered live again.
  const Reader* owner = OwnerOf(c1, {{&a, &s}, {&b, &r}});
  EXPECT_EQ(owner, &s);
  owner = OwnerOf(c2, {{&a, &s}, {&b, &r}});
  EXPECT_EQ(owner, &r);
}

// A member's write in flight does not count against its group's share: a
// batch still being written (a stuck one stays until the stall timeout)
// does not make the group skip the events that follow and read them back
// from the stream.
TEST(ClusterGroupTest, AWriteInFlightDoesNotCountAgainstTheShare) {
  Stream stream;
  constexpr size_t kQueueBytes = 12000;  // a share: 6000 (1 group + 1)
  Node a(&stream, "a", 1, 0, HubOptions{}.history_events, kQueueBytes);
  Reader w{a.Join(1, {.group = "g"})};
  a.CommitAnnounced();
  Conn c1(&stream, 1);
  c1.Open();
  w.Drain(a.groups());
  const std::string payload(1000, 'x');
  for (int i = 0; i < 4; ++i) c1.Data(payload);  // ~5 KB, under the share
  ASSERT_TRUE(w.ReadOnce(a.groups(), /*ack=*/false));
  ASSERT_EQ(w.Seqs(c1.id()).size(), 5u) << "Opened and 4 in one write";
  uint64_t last = 0;
  for (int i = 0; i < 4; ++i) last = c1.Data(payload);  // queued behind it
  const size_t fetches = a.fetches();
  a.groups().Written(w.member.get());
  w.Drain(a.groups());
  EXPECT_EQ(w.Seqs(c1.id()).back(), last);
  EXPECT_EQ(a.fetches(), fetches)
      << "the group skipped and read back: its write counted";
  ExpectWhole(stream, c1.id(), {&w});
}

// The slow member leaves while a skipped its connection's events (and had
// a write in flight): the connection goes to the next member, on node a
// or on node b, which gets everything s may not have had, in order, what s
// may have had marked.
class ClusterGroupSkippedTest : public ::testing::TestWithParam<int> {};

TEST_P(ClusterGroupSkippedTest, AMemberLeavingWithSkippedEventsLosesNothing) {
  Stream stream;
  constexpr size_t kQueueBytes = 12000;
  Node a(&stream, "a", 1, 0, HubOptions{}.history_events, kQueueBytes);
  Node b(&stream, "b", 2, 0, HubOptions{}.history_events, kQueueBytes);
  const bool same_node = GetParam() == 0;
  Reader s{a.Join(1, {.group = "slow"})};
  a.CommitAnnounced();
  Reader r{b.Join(1, {.group = "slow"})};
  b.CommitAnnounced();
  Reader f{a.Join(2, {.group = "fast"})};
  a.CommitAnnounced();
  Conn c1(&stream, 1), c2(&stream, 2);
  c1.Open();  // slow: s
  c2.Open();  // slow: r
  // Takes nothing now; c1 when s leaves (fewer connections than r).
  std::optional<Reader> t;
  if (same_node) {
    t.emplace(Reader{a.Join(3, {.group = "slow"})});
    a.CommitAnnounced();
  }
  s.Drain(a.groups());
  r.Drain(b.groups());
  f.Drain(a.groups());
  c1.Data("in flight");
  ASSERT_TRUE(s.ReadOnce(a.groups(), /*ack=*/false));
  const std::string payload(1000, 'y');
  for (int i = 0; i < 20; ++i) {
    for (Conn* c : {&c1, &c2}) {
      const uint64_t seq = c->Data(payload);
      f.Drain(a.groups());
      ASSERT_EQ(f.Seqs(c->id()).back(), seq);
    }
  }
  a.groups().Leave(s.member.get());
  for (Conn* c : {&c1, &c2}) c->Data("before s's MEMBER_LEFT");
  a.CommitAnnounced();
  for (Conn* c : {&c1, &c2}) c->Data("after");
  Reader& next = same_node ? *t : r;
  Node& next_node = same_node ? a : b;
  next.Drain(next_node.groups());
  r.Drain(b.groups());
  f.Drain(a.groups());
  ExpectAgree(a.groups(), b.groups(), "slow");
  ExpectAgree(a.groups(), b.groups(), "fast");
  const fanin::v1::Assigned* as = next.AssignedFor(c1.id());
  ASSERT_NE(as, nullptr);
  EXPECT_EQ(as->reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
  EXPECT_EQ(as->previous_node(), "a");
  EXPECT_EQ(OwnerOf(c1, {{&next_node, &next}}), &next);
  f.Drain(a.groups());  // the probe
  std::vector<const Reader*> slow = {&s, &r};
  if (t.has_value()) slow.push_back(&*t);
  ExpectInOrder(slow);
  ExpectInOrder({&f});
  for (const Conn* c : {&c1, &c2}) {
    ExpectWhole(stream, c->id(), slow);
    ExpectWhole(stream, c->id(), {&f});
  }
}

INSTANTIATE_TEST_SUITE_P(NextMemberOnEitherNode, ClusterGroupSkippedTest,
                         ::testing::Values(0, 1), [](const auto& info) {
                           return info.param == 0 ? "SameNode" : "OtherNode";
                         });

// A read-back of skipped events that takes several reads: (param 0) more
// of the connection's events arrive while its first read runs, and wait
// behind it past half the group's share, or (param 1) the member leaves
// with a read chunk queued and the next read paused, and a member on the
// same node takes the connection. Either way the next member gets every
// event, in order.
class ClusterGroupPausedReadTest : public ::testing::TestWithParam<int> {};

TEST_P(ClusterGroupPausedReadTest, GoesOnAndKeepsOrder) {
  Stream stream;
  constexpr size_t kQueueBytes = 12000;
  Node a(&stream, "a", 1, 0, HubOptions{}.history_events, kQueueBytes);
  Node b(&stream, "b", 2, 0, HubOptions{}.history_events, kQueueBytes);
  const bool leave = GetParam() == 1;
  Reader s{a.Join(1, {.group = "slow"})};
  a.CommitAnnounced();
  Reader f{a.Join(2, {.group = "fast"})};
  a.CommitAnnounced();
  Conn c1(&stream, 1);
  c1.Open();                               // slow: s
  Reader t{a.Join(3, {.group = "slow"})};  // takes c1 if s leaves
  a.CommitAnnounced();
  Reader r{b.Join(1, {.group = "slow"})};
  b.CommitAnnounced();
  s.Drain(a.groups());
  f.Drain(a.groups());
  c1.Data("in flight");
  ASSERT_TRUE(s.ReadOnce(a.groups(), /*ack=*/false));
  const std::string payload(1000, 'z');
  for (int i = 0; i < 200; ++i) c1.Data(payload);  // skipped: 3 reads back
  a.HoldFetches();
  a.groups().Written(s.member.get());
  s.Drain(a.groups());  // the read-back started
  ASSERT_EQ(a.held_fetches(), 1u);
  if (!leave) {
    // Wait behind the read (until the group is over its share again).
    for (int i = 0; i < 20; ++i) c1.Data(payload);
  }
  a.RunFetches();  // one chunk; the next read waits for the drain
  if (leave) {
    ASSERT_TRUE(s.ReadOnce(a.groups()));  // some of the chunk
    a.groups().Leave(s.member.get());
    a.CommitAnnounced();
    for (int i = 0; i < 5; ++i) c1.Data(payload);
  }
  Reader& next = leave ? t : s;
  for (int i = 0; i < 50 && next.ReadOnce(a.groups()); ++i) {
  }
  next.Drain(a.groups());
  for (int i = 0; i < 5; ++i) c1.Data("after");
  next.Drain(a.groups());
  r.Drain(b.groups());
  f.Drain(a.groups());
  ExpectAgree(a.groups(), b.groups(), "slow");
  ExpectInOrder({&s, &t, &r, &f});
  ExpectWhole(stream, c1.id(), {&s, &t, &r});
  ExpectWhole(stream, c1.id(), {&f});
  EXPECT_EQ(OwnerOf(c1, {{&a, &next}}), &next);
}

INSTANTIATE_TEST_SUITE_P(HeldOrHandedOver, ClusterGroupPausedReadTest,
                         ::testing::Values(0, 1), [](const auto& info) {
                           return info.param == 0 ? "EventsWaitBehindIt"
                                                  : "MemberLeaves";
                         });

}  // namespace
}  // namespace fanin::fanout
