// GroupRegistry against a real EventHub, no sockets: assignment and balance,
// markers before a connection's first event, handover of unfinished writes
// (lossless redelivery bounds, lossy per-connection gaps), the pool of an
// empty group, rebalance, mismatched terms, idle groups forgotten.
#include "server/fanout/group.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/event_hub.h"

namespace fanin::fanout {
namespace {

using fanin::v1::AssignReason;

// Publishes a connection's events as the core would: stamped with its
// identity and totals.
class FakeConn {
 public:
  FakeConn(EventHub* hub, uint64_t id)
      : hub_(hub),
        id_(id),
        info_(std::make_shared<ConnectionInfo>(
            ConnectionInfo{"default", absl::StrCat("127.0.0.1:", 1000 + id),
                           "127.0.0.1:7070"})) {}

  uint64_t Open() {
    fanin::v1::Event e;
    e.set_connection_id(id_);
    e.set_listener("default");
    e.mutable_opened()->set_remote_address(info_->remote_address);
    return Publish(MakeEvent(e, 0));
  }
  uint64_t Data(absl::string_view bytes) {
    uint64_t seq = Publish(MakeDataEvent(id_, 0, "default", "", 1234, bytes));
    received_ += bytes.size();
    return seq;
  }
  uint64_t Close() {
    fanin::v1::Event e;
    e.set_connection_id(id_);
    e.set_listener("default");
    e.mutable_closed()->set_reason(fanin::v1::CLOSE_REASON_PEER_CLOSED);
    e.mutable_closed()->set_bytes_received(received_);
    return Publish(MakeEvent(e, 0));
  }
  uint64_t id() const { return id_; }

 private:
  uint64_t Publish(std::shared_ptr<StoredEvent> e) {
    e->bytes_received_before = received_;
    e->connection = info_;
    return hub_->Publish(std::move(e));
  }

  EventHub* hub_;
  uint64_t id_;
  std::shared_ptr<const ConnectionInfo> info_;
  uint64_t received_ = 0;
};

GroupSpec Spec(bool lossless, std::vector<std::string> terms = {"kinds=all"}) {
  GroupSpec spec;
  spec.lossless = lossless;
  spec.terms = std::move(terms);
  return spec;
}

// One member, read by hand: every message it got, in order.
struct TestMember {
  std::shared_ptr<GroupRegistry::Member> member;
  int wakes = 0;
  std::vector<fanin::v1::SubscribeResponse> got;

  // Reads until parked, acknowledging every write unless `ack` is false
  // (then the last batch stays unfinished and Read stops after it).
  void Drain(GroupRegistry& groups, bool ack = true, size_t max_events = 64) {
    for (;;) {
      GroupRead r;
      groups.Read(member.get(), max_events, 1 << 20, true, &r);
      fanin::v1::SubscribeResponse msg;
      if (r.gap) {
        *msg.mutable_gap() = *r.gap;
      } else if (r.assigned) {
        *msg.mutable_assigned() = *r.assigned;
      } else if (!r.events.empty()) {
        for (const EventPtr& e : r.events) {
          fanin::v1::Event* ev = msg.mutable_batch()->add_events();
          ev->set_seq(e->seq);
          ev->set_connection_id(e->connection_id);
          if (e->kind == fanin::v1::EVENT_KIND_DATA) {
            ev->mutable_data()->set_payload(std::string(e->payload()));
          } else if (e->kind == fanin::v1::EVENT_KIND_OPENED) {
            ev->mutable_opened();
          } else if (e->kind == fanin::v1::EVENT_KIND_CLOSED) {
            ev->mutable_closed();
          }
        }
      } else if (r.parked) {
        return;
      } else {
        continue;
      }
      got.push_back(msg);
      if (!ack && msg.has_batch()) return;
      groups.Written(member.get());
    }
  }

  std::vector<fanin::v1::Event> EventsOf(uint64_t conn) const {
    std::vector<fanin::v1::Event> out;
    for (const auto& m : got) {
      for (const auto& e : m.batch().events()) {
        if (e.connection_id() == conn) out.push_back(e);
      }
    }
    return out;
  }
  std::vector<fanin::v1::Assigned> Assigned() const {
    std::vector<fanin::v1::Assigned> out;
    for (const auto& m : got) {
      if (m.has_assigned()) out.push_back(m.assigned());
    }
    return out;
  }
  std::string Bytes(uint64_t conn) const {
    std::string out;
    for (const auto& e : EventsOf(conn)) out += e.data().payload();
    return out;
  }
};

std::unique_ptr<TestMember> Join(GroupRegistry& groups, const std::string& name,
                                 GroupSpec spec, uint64_t id,
                                 bool rebalance = false) {
  auto t = std::make_unique<TestMember>();
  EventHub::Started started;
  TestMember* raw = t.get();
  auto m = groups.Join({.group = name,
                        .spec = std::move(spec),
                        .rebalance = rebalance,
                        .member_id = id,
                        .peer = "test",
                        .wake = [raw] { ++raw->wakes; }},
                       &started);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  t->member = *m;
  return t;
}

TEST(Group, AssignsEachConnectionToOneMemberBalanced) {
  EventHub hub({});
  GroupRegistry groups(&hub, {});
  auto a = Join(groups, "g", Spec(true), 1);
  auto b = Join(groups, "g", Spec(true), 2);
  auto c = Join(groups, "g", Spec(true), 3);
  std::vector<std::unique_ptr<FakeConn>> conns;
  for (uint64_t id = 1; id <= 9; ++id) {
    conns.push_back(std::make_unique<FakeConn>(&hub, id));
    conns.back()->Open();
  }
  for (auto& conn : conns) conn->Data(absl::StrCat("hello ", conn->id()));
  for (TestMember* m : {a.get(), b.get(), c.get()}) m->Drain(groups);
  std::map<uint64_t, int> owners;
  for (TestMember* m : {a.get(), b.get(), c.get()}) {
    int held = 0;
    for (auto& conn : conns) {
      auto events = m->EventsOf(conn->id());
      if (events.empty()) continue;
      ++held;
      ++owners[conn->id()];
      ASSERT_EQ(events.size(), 2u);
      EXPECT_TRUE(events[0].has_opened());
      EXPECT_EQ(events[1].data().payload(), absl::StrCat("hello ", conn->id()));
    }
    EXPECT_EQ(held, 3);
    EXPECT_TRUE(m->Assigned().empty()) << "fresh connections need no marker";
  }
  EXPECT_EQ(owners.size(), 9u);
  for (auto& [id, n] : owners) EXPECT_EQ(n, 1) << "connection " << id;
  // Round robin by join order: connection 1 to the first member.
  EXPECT_FALSE(a->EventsOf(1).empty());
  EXPECT_FALSE(b->EventsOf(2).empty());
  auto list = groups.List("g");
  ASSERT_EQ(list.size(), 1u);
  ASSERT_EQ(list[0].members_size(), 3);
  for (const auto& m : list[0].members()) EXPECT_EQ(m.connections(), 3u);
}

// "Fewest connections" counts open ones: a member whose connections closed
// takes the next ones.
TEST(Group, ClosedConnectionsStopCountingForAssignment) {
  EventHub hub({});
  GroupRegistry groups(&hub, {});
  auto a = Join(groups, "g", Spec(true), 1);
  auto b = Join(groups, "g", Spec(true), 2);
  std::vector<std::unique_ptr<FakeConn>> conns;
  for (uint64_t id = 1; id <= 6; ++id) {
    conns.push_back(std::make_unique<FakeConn>(&hub, id));
  }
  for (int i = 0; i < 4; ++i) conns[i]->Open();  // 1, 3 -> a; 2, 4 -> b
  conns[0]->Close();
  conns[2]->Close();
  conns[4]->Open();
  conns[5]->Open();
  a->Drain(groups);
  b->Drain(groups);
  ASSERT_FALSE(a->EventsOf(1).empty());
  ASSERT_FALSE(b->EventsOf(2).empty());
  EXPECT_FALSE(a->EventsOf(5).empty()) << "a held no open connection";
  EXPECT_FALSE(a->EventsOf(6).empty()) << "a held one open connection, b two";
  auto list = groups.List("g");
  ASSERT_EQ(list.size(), 1u);
  ASSERT_EQ(list[0].members_size(), 2);
  EXPECT_EQ(list[0].members(0).connections(), 2u);
  EXPECT_EQ(list[0].members(1).connections(), 2u);
}

TEST(Group, ExistingConnectionGetsMarkerFirst) {
  EventHub hub({});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  FakeConn conn(&hub, 5);
  conn.Open();
  conn.Data("before");
  auto a = Join(groups, "g", Spec(true), 1);
  const uint64_t seq = conn.Data("after");
  a->Drain(groups);
  ASSERT_GE(a->got.size(), 2u);
  ASSERT_TRUE(a->got[0].has_assigned());
  const fanin::v1::Assigned& as = a->got[0].assigned();
  EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_EXISTING);
  EXPECT_EQ(as.connection_id(), 5u);
  EXPECT_EQ(as.from_seq(), seq);
  EXPECT_EQ(as.bytes_received(), 6u);
  EXPECT_EQ(as.remote_address(), "127.0.0.1:1005");
  EXPECT_EQ(as.member_id(), 1u);
  EXPECT_EQ(as.possibly_redelivered_through_seq(), 0u);
  EXPECT_EQ(a->Bytes(5), "after");
}

TEST(Group, HandoverRedeliversExactlyTheUnfinishedWrite) {
  EventHub hub({});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(true), 1);
  auto b = Join(groups, "g", Spec(true), 2);
  FakeConn c1(&hub, 1), c2(&hub, 2);
  c1.Open();  // -> a
  c2.Open();  // -> b
  std::string sent;
  for (int i = 0; i < 10; ++i) {
    sent += absl::StrCat("[", i, "]");
    c1.Data(absl::StrCat("[", i, "]"));
  }
  // a writes Opened and 3 events, then its next write of 4 does not finish.
  a->Drain(groups, /*ack=*/true, 4);
  ASSERT_EQ(a->EventsOf(1).size(), 11u);
  a->got.clear();
  for (int i = 10; i < 20; ++i) {
    sent += absl::StrCat("[", i, "]");
    c1.Data(absl::StrCat("[", i, "]"));
  }
  a->Drain(groups, /*ack=*/false, 4);
  auto unfinished = a->EventsOf(1);
  ASSERT_EQ(unfinished.size(), 4u);
  groups.Leave(a->member.get());
  b->Drain(groups);
  auto assigned = b->Assigned();
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0].reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
  EXPECT_EQ(assigned[0].previous_member(), 1u);
  EXPECT_EQ(assigned[0].from_seq(), unfinished.front().seq());
  EXPECT_EQ(assigned[0].possibly_redelivered_through_seq(),
            unfinished.back().seq());
  EXPECT_EQ(assigned[0].bytes_received(), std::string("[0]").size() * 10);
  // b: its own connection's Opened, then the marker, then every event of
  // connection 1 from the unfinished write on.
  std::string got = b->Bytes(1);
  EXPECT_EQ(got, sent.substr(30));
  auto list = groups.List("g");
  ASSERT_EQ(list[0].members_size(), 1);
  EXPECT_EQ(list[0].members(0).connections(), 2u);
  EXPECT_EQ(list[0].handovers(), 1u);
  EXPECT_EQ(list[0].redelivered_events(), 4u);
}

TEST(Group, HandoverRedeliversTheRecentWindowToo) {
  EventHub hub({});
  // Room for about three 10-byte events of completed writes.
  GroupRegistry groups(&hub, {.redelivery_bytes = 100});
  auto a = Join(groups, "g", Spec(true), 1);
  auto b = Join(groups, "g", Spec(true), 2);
  FakeConn c1(&hub, 1);
  c1.Open();
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 10; ++i)
    seqs.push_back(c1.Data(absl::StrCat("<", i, ">")));
  a->Drain(groups, /*ack=*/true, 1);
  ASSERT_EQ(a->EventsOf(1).size(), 11u);
  c1.Data("<10>");
  a->Drain(groups, /*ack=*/false, 1);  // <10> stays unfinished
  groups.Leave(a->member.get());
  b->Drain(groups);
  auto assigned = b->Assigned();
  ASSERT_EQ(assigned.size(), 1u);
  // Data bodies are about 30 bytes here: the window held the last 3
  // completed writes.
  const uint64_t from = assigned[0].from_seq();
  EXPECT_GT(from, seqs[0]);
  EXPECT_LE(from, seqs[9]);
  EXPECT_EQ(assigned[0].possibly_redelivered_through_seq(), hub.head_seq());
  auto events = b->EventsOf(1);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().seq(), from);
  EXPECT_EQ(events.back().data().payload(), "<10>");
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1);
  }
}

// Lossy: the new member loses events of a handed-over connection before it
// has read the redelivered ones; the Assigned that reports the loss still
// marks them (the bound outlives the first Assigned).
TEST(Group, RedeliveryBoundSurvivesALaterAssigned) {
  EventHub hub({.history_events = 8});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(false), 1);
  auto b = Join(groups, "g", Spec(false), 2);
  FakeConn c1(&hub, 1);
  c1.Open();  // -> a
  for (int i = 0; i < 3; ++i) c1.Data("r");
  a->Drain(groups, /*ack=*/false);  // all four stay unfinished
  ASSERT_EQ(a->EventsOf(1).size(), 4u);
  const uint64_t through = hub.head_seq();
  groups.Leave(a->member.get());
  // b takes the first Assigned only, then falls behind the history.
  GroupRead r;
  groups.Read(b->member.get(), 64, 1 << 20, true, &r);
  ASSERT_TRUE(r.assigned.has_value());
  EXPECT_EQ(r.assigned->possibly_redelivered_through_seq(), through);
  groups.Written(b->member.get());
  for (int i = 0; i < 20; ++i) c1.Data("n");
  b->Drain(groups);
  auto assigned = b->Assigned();
  ASSERT_FALSE(assigned.empty());
  EXPECT_TRUE(assigned[0].has_gap()) << assigned[0].ShortDebugString();
  for (const auto& as : assigned) {
    if (as.from_seq() <= through) {
      EXPECT_EQ(as.possibly_redelivered_through_seq(), through)
          << as.ShortDebugString();
    }
  }
  auto events = b->EventsOf(1);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[0].seq(), 1u) << "the unfinished write, redelivered";
  EXPECT_EQ(events[3].seq(), through);
}

TEST(Group, IdleConnectionHandoverIsAnnouncedAtOnce) {
  EventHub hub({});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(true), 1);
  auto b = Join(groups, "g", Spec(true), 2);
  FakeConn c1(&hub, 1);
  c1.Open();
  c1.Data("abc");
  a->Drain(groups);
  b->Drain(groups);
  groups.Leave(a->member.get());
  b->Drain(groups);
  auto assigned = b->Assigned();
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0].from_seq(), hub.head_seq() + 1);
  EXPECT_EQ(assigned[0].bytes_received(), 3u);
  EXPECT_EQ(assigned[0].possibly_redelivered_through_seq(), 0u);
  const uint64_t next = c1.Data("d");
  b->Drain(groups);
  auto events = b->EventsOf(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq(), next);
}

TEST(Group, EmptyLosslessGroupKeepsEverythingThenBackPressures) {
  EventHub hub({.lossless_queue_bytes = 64 << 10});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(true), 1);
  FakeConn c1(&hub, 1);
  c1.Open();
  c1.Data("one");
  a->Drain(groups);
  groups.Leave(a->member.get());
  std::string later;
  for (int i = 0; !hub.AnyPaused() && i < 10000; ++i) {
    std::string piece = absl::StrCat("<", i, std::string(100, 'x'), ">");
    later += piece;
    c1.Data(piece);
  }
  EXPECT_TRUE(hub.AnyPaused()) << "an empty lossless group must pause";
  EXPECT_TRUE(hub.ReadingPaused(0, 1));
  auto b = Join(groups, "g", Spec(true), 2);
  b->Drain(groups);
  EXPECT_FALSE(hub.AnyPaused()) << "delivered: the pause lifts";
  auto assigned = b->Assigned();
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0].reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
  EXPECT_EQ(assigned[0].bytes_received(), 3u);
  EXPECT_EQ(b->Bytes(1), later);
}

TEST(Group, LossyMemberThatFallsBehindGetsExactPerConnectionGaps) {
  EventHub hub({.history_events = 8});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(false), 1);
  FakeConn c1(&hub, 1), c2(&hub, 2);
  c1.Open();
  c2.Open();
  a->Drain(groups);
  // 40 events while a does not read: the history keeps 8.
  std::vector<uint64_t> seqs1, seqs2;
  for (int i = 0; i < 20; ++i) {
    seqs1.push_back(c1.Data("a"));
    seqs2.push_back(c2.Data("b"));
  }
  a->got.clear();
  a->Drain(groups);
  ASSERT_FALSE(a->got.empty());
  ASSERT_TRUE(a->got[0].has_gap());
  EXPECT_EQ(a->got[0].gap().lost(), 32u);
  auto assigned = a->Assigned();
  ASSERT_EQ(assigned.size(), 2u);
  uint64_t lost = 0;
  for (const auto& as : assigned) {
    EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_EVENTS_LOST);
    EXPECT_EQ(as.gap().lost(), 16u);
    const auto& seqs = as.connection_id() == 1 ? seqs1 : seqs2;
    EXPECT_EQ(as.gap().first_seq(), seqs[0]);
    EXPECT_EQ(as.gap().last_seq(), seqs[15]);
    EXPECT_EQ(as.from_seq(), seqs[16]);
    EXPECT_EQ(as.bytes_received(), 16u);
    lost += as.gap().lost();
  }
  EXPECT_EQ(lost, a->got[0].gap().lost());
  EXPECT_EQ(a->Bytes(1), "aaaa");
  EXPECT_EQ(a->Bytes(2), "bbbb");
  EXPECT_EQ(groups.GetStats().events_lost, 32u);
}

TEST(Group, EmptyLossyGroupsNextMemberGetsAGap) {
  EventHub hub({.history_events = 4});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(false), 1);
  FakeConn c1(&hub, 1);
  c1.Open();
  a->Drain(groups);
  groups.Leave(a->member.get());
  for (int i = 0; i < 10; ++i) c1.Data("z");
  auto b = Join(groups, "g", Spec(false), 2);
  b->Drain(groups);
  ASSERT_FALSE(b->got.empty());
  ASSERT_TRUE(b->got[0].has_gap());
  EXPECT_EQ(b->got[0].gap().lost(), 6u);
  auto assigned = b->Assigned();
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0].gap().lost(), 6u);
  EXPECT_EQ(b->Bytes(1), "zzzz");
}

TEST(Group, MismatchedTermsAreRefusedNamingTheDifference) {
  EventHub hub({});
  GroupRegistry groups(&hub, {});
  auto a =
      Join(groups, "g", Spec(true, {"kinds=all", "omit_payload=false"}), 1);
  EventHub::Started started;
  auto refused = groups.Join(
      {.group = "g",
       .spec = Spec(true, {"kinds=EVENT_KIND_DATA", "omit_payload=false"}),
       .member_id = 2,
       .wake = [] {}},
      &started);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find(
                "kinds: the group has all, this request asks for "
                "EVENT_KIND_DATA"),
            std::string::npos)
      << refused.status();
  EXPECT_EQ(groups.List("g")[0].members_size(), 1);
}

TEST(Group, RebalanceMovesConnectionsAndTellsBoth) {
  EventHub hub({});
  GroupRegistry groups(&hub, {.redelivery_bytes = 0});
  auto a = Join(groups, "g", Spec(true), 1);
  std::vector<std::unique_ptr<FakeConn>> conns;
  for (uint64_t id = 1; id <= 6; ++id) {
    conns.push_back(std::make_unique<FakeConn>(&hub, id));
    conns.back()->Open();
  }
  a->Drain(groups);
  auto b = Join(groups, "g", Spec(true), 2, /*rebalance=*/true);
  a->got.clear();
  a->Drain(groups);
  b->Drain(groups);
  auto revoked = a->Assigned();
  auto taken = b->Assigned();
  ASSERT_EQ(revoked.size(), 3u);
  ASSERT_EQ(taken.size(), 3u);
  for (const auto& r : revoked) {
    EXPECT_TRUE(r.revoked());
    EXPECT_EQ(r.reason(), fanin::v1::ASSIGN_REASON_REBALANCE);
  }
  for (const auto& t : taken) {
    EXPECT_FALSE(t.revoked());
    EXPECT_EQ(t.previous_member(), 1u);
  }
  for (auto& conn : conns) conn->Data("x");
  a->got.clear();
  a->Drain(groups);
  b->Drain(groups);
  int at_a = 0, at_b = 0;
  for (auto& conn : conns) {
    at_a += a->EventsOf(conn->id()).size();
    at_b += b->EventsOf(conn->id()).size();
  }
  EXPECT_EQ(at_a, 3);
  EXPECT_EQ(at_b, 3);
}

TEST(Group, ClosedConnectionsAreForgottenEvenWhenClosedIsNotDelivered) {
  EventHub hub({});
  GroupRegistry groups(&hub, {});
  GroupSpec spec = Spec(true);
  spec.deliver_closed = false;
  auto a = Join(groups, "g", spec, 1);
  FakeConn c1(&hub, 1);
  c1.Open();
  c1.Data("x");
  c1.Close();
  a->Drain(groups);
  EXPECT_EQ(a->EventsOf(1).size(), 2u);
  EXPECT_EQ(groups.GetStats().connections, 0u);
  EXPECT_EQ(groups.List()[0].connections(), 0u);
  EXPECT_EQ(hub.GetStats().lossless_pending_bytes, 0u);
}

TEST(Group, IdleGroupsAreForgotten) {
  EventHub hub({});
  GroupRegistry groups(&hub, {.idle_timeout = absl::Seconds(10)});
  auto a = Join(groups, "g", Spec(true), 1);
  groups.Leave(a->member.get());
  groups.Sweep(absl::Now());
  EXPECT_EQ(groups.List().size(), 1u);
  EXPECT_EQ(hub.GetStats().subscribers, 1u);
  groups.Sweep(absl::Now() + absl::Seconds(11));
  EXPECT_TRUE(groups.List().empty());
  EXPECT_EQ(hub.GetStats().subscribers, 0u);
}

}  // namespace
}  // namespace fanin::fanout
