// GroupRegistry in cluster mode without NATS: two "nodes", each its own
// EventHub and GroupRegistry, fed one stream in an order the test chooses
// (a stand-in GroupReplication). Pins what the three-node end-to-end tests
// (tests/cluster/groups_test) reach only by chance: both nodes compute the
// same owners, a connection moving to the other node's member is read back
// from the stream, and a range owed by a member that left before
// delivering a handed-over connection is carried to the next.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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

class Node : public GroupReplication {
 public:
  Node(Stream* stream, std::string name, uint64_t incarnation,
       size_t redelivery_bytes)
      : stream_(stream),
        name_(std::move(name)),
        incarnation_(incarnation),
        hub_(HubOptions{.epoch = "e", .history_source = true}),
        groups_(&hub_, GroupOptions{.redelivery_bytes = redelivery_bytes,
                                    .replication = this}) {
    groups_.SetSpecOf([](const fanin::v1::SubscribeRequest& request) {
      GroupSpec spec;
      spec.lossless = true;
      spec.terms = {"kinds=all"};
      spec.request = request;
      return absl::StatusOr<GroupSpec>(spec);
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
  void Progress(const std::string&, uint64_t, uint64_t, uint64_t) override {}
  void Fetch(uint64_t from_seq, const Filter& filter, size_t max_events, size_t,
             absl::AnyInvocable<void(absl::StatusOr<Fetched>)> done) override {
    Fetched out;
    out.next_seq = from_seq;
    for (uint64_t seq = from_seq; seq <= stream_->events.size(); ++seq) {
      out.next_seq = seq + 1;
      const EventPtr& e = stream_->events[seq - 1];
      if (filter.Matches(*e)) out.events.push_back(e);
      if (out.events.size() >= max_events) break;
    }
    done(std::move(out));
  }

  // What this node announced, into the stream.
  void CommitAnnounced() {
    std::vector<fanin::v1::Event> announced;
    announced.swap(announced_);
    for (const auto& ev : announced) stream_->Commit(MakeEvent(ev, 0));
  }

  std::shared_ptr<GroupRegistry::Member> Join(uint64_t id) {
    GroupSpec spec;
    spec.lossless = true;
    spec.terms = {"kinds=all"};
    spec.request.set_group("g");
    EventHub::Started started;
    auto m = groups_.Join(
        {.group = "g", .spec = spec, .member_id = id, .wake = [] {}}, &started);
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }

  EventHub& hub() { return hub_; }
  GroupRegistry& groups() { return groups_; }

 private:
  Stream* stream_;
  const std::string name_;
  const uint64_t incarnation_;
  EventHub hub_;
  GroupRegistry groups_;
  std::vector<fanin::v1::Event> announced_;
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
// (and whether an Assigned marked it possibly redelivered), its Assigned.
struct Reader {
  std::shared_ptr<GroupRegistry::Member> member;
  std::map<uint64_t, std::vector<std::pair<uint64_t, bool>>> got;
  std::vector<fanin::v1::Assigned> assigned;
  std::map<uint64_t, uint64_t> marked_through;

  void Drain(GroupRegistry& groups) {
    for (;;) {
      GroupRead r;
      groups.Read(member.get(), 64, 1 << 20, true, &r);
      if (r.assigned.has_value()) {
        assigned.push_back(*r.assigned);
        marked_through[r.assigned->connection_id()] =
            r.assigned->possibly_redelivered_through_seq();
      } else if (!r.events.empty()) {
        for (const EventPtr& e : r.events) {
          got[e->connection_id].push_back(
              {e->seq, e->seq <= marked_through[e->connection_id]});
        }
      } else if (r.parked || r.end.has_value()) {
        return;
      } else {
        continue;
      }
      groups.Written(member.get());
    }
  }
};

fanin::v1::GroupInfo Info(GroupRegistry& groups) {
  auto list = groups.List("g");
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

}  // namespace
}  // namespace fanin::fanout
