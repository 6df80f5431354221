// Worker-pool groups end to end, on every poller, over real sockets and a
// real gRPC server: connections split between members (complete, in order,
// balanced), handover when a member is cancelled or ended (byte-exact in
// lossless groups, redelivery only where marked; exact per-connection gaps in
// lossy ones), a whole pool gone and back, mismatched requests refused,
// rebalance, and members joining and leaving every few milliseconds.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/group_check.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::Analysis;
using fanin::testing::Analyze;
using fanin::testing::ConnectTcp;
using fanin::testing::CountClosed;
using fanin::testing::CountOpened;
using fanin::testing::ExpectNoErrors;
using fanin::testing::ExpectWholeLife;
using fanin::testing::GroupInfoOf;
using fanin::testing::GroupRequest;
using fanin::testing::Receipt;
using fanin::testing::Snapshots;
using fanin::testing::UniqueEvents;
using fanin::testing::WaitFor;
using fanin::v1::Assigned;
using fanin::v1::Event;
using fanin::v1::SubscribeRequest;

class GroupTest : public ::testing::TestWithParam<reactor::PollerKind> {};

// Raw clients, each with what it has sent so far.
struct Clients {
  std::vector<TcpClient> clients;
  std::vector<std::string> ends;  // the server's "remote|local" for each
  std::vector<std::string> sent;

  void Connect(const std::string& address, int n) {
    for (int i = 0; i < n; ++i) {
      auto client = ConnectTcp(address);
      ASSERT_TRUE(client.ok()) << client.status();
      ends.push_back(absl::StrCat(LocalAddressOf(client->fd()), "|",
                                  net::PeerAddressOf(client->fd())));
      sent.emplace_back();
      clients.push_back(*std::move(client));
    }
  }
  // Every client sends `bytes` random bytes, interleaved.
  void Send(size_t bytes, uint64_t seed) {
    std::vector<SendJob> jobs;
    for (size_t i = 0; i < clients.size(); ++i) {
      jobs.push_back({clients[i].fd(), RandomBytes(bytes, seed * 1000 + i)});
      sent[i] += jobs.back().data;
    }
    absl::Status s =
        SendAllInterleaved(jobs, 1024, seed, Deadline(absl::Seconds(60)));
    ASSERT_TRUE(s.ok()) << s;
  }
  void CloseAll() {
    for (TcpClient& c : clients) c.ShutdownWrite().IgnoreError();
  }
};

// Connection id of each client, from whichever member saw its Opened.
std::vector<uint64_t> IdsOf(const Clients& clients,
                            const std::vector<Subscriber::State>& states) {
  std::vector<uint64_t> ids;
  for (const std::string& ends : clients.ends) {
    uint64_t id = 0;
    for (const auto& s : states) {
      auto it = s.id_by_ends.find(ends);
      if (it != s.id_by_ends.end()) id = it->second;
    }
    ids.push_back(id);
  }
  return ids;
}

TEST_P(GroupTest, ThreeMembersSplitConnectionsExactlyAndBalanced) {
  constexpr int kClients = 300;
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(Subscriber::Start(address, GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  ASSERT_TRUE(
      WaitFor([&] { return CountOpened(members) == kClients; }, Deadline()));
  fanin::v1::GroupInfo info = GroupInfoOf(address, "workers");
  ASSERT_EQ(info.members_size(), 3);
  for (const auto& m : info.members()) {
    EXPECT_EQ(m.connections(), kClients / 3) << m.ShortDebugString();
  }
  EXPECT_EQ(info.connections(), static_cast<uint64_t>(kClients));
  EXPECT_EQ(info.unassigned_connections(), 0u);

  clients.Send(4096, 1);
  clients.Send(2048, 2);
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  std::vector<int> held(3);
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u) << "client " << i << " never opened";
    ASSERT_EQ(a.members[ids[i]].size(), 1u)
        << "connection " << ids[i] << " reached several members";
    ++held[*a.members[ids[i]].begin()];
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    EXPECT_TRUE(a.assigned[ids[i]].empty()) << "a fresh connection's Opened "
                                               "needs no Assigned";
    if (HasFailure()) break;
  }
  EXPECT_LE(*std::max_element(held.begin(), held.end()) -
                *std::min_element(held.begin(), held.end()),
            1);
  for (const auto& s : states) {
    EXPECT_FALSE(s.done) << s.status.error_message();
    EXPECT_TRUE(s.gaps.empty());
  }
}

// Lossless: a member cancelled while its connections stream moves them, each
// announced first, and nothing of theirs is lost.
TEST_P(GroupTest, MemberCancelledMidStreamLosesNothing) {
  constexpr int kClients = 90;
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(Subscriber::Start(address, GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  const uint64_t cancelled_id =
      GroupInfoOf(address, "workers").members(1).member_id();
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  // Every connection assigned before the cancel, so member 1 holds exactly
  // its third (a client's connect returns before the server accepts it).
  ASSERT_TRUE(
      WaitFor([&] { return CountOpened(members) == kClients; }, Deadline()));
  clients.Send(2048, 1);
  // The clients keep sending while member 1 is cancelled in the middle.
  std::atomic<bool> sending{true};
  std::thread sender([&] {
    for (int round = 2; round < 40; ++round) clients.Send(512, round);
    sending = false;
  });
  ASSERT_TRUE(members[1]->WaitUntil(
      [](const Subscriber::State& s) { return s.data_bytes > 90 * 2048 / 3; },
      Deadline()));
  members[1]->Cancel();
  sender.join();
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  int moved = 0;
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (!a.members[ids[i]].contains(1)) continue;
    ++moved;
    // Its new member heard of it first, from the cancelled member's id.
    ASSERT_EQ(a.assigned[ids[i]].size(), 1u) << "connection " << ids[i];
    const Assigned& as = a.assigned[ids[i]][0];
    EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    EXPECT_EQ(as.previous_member(), cancelled_id);
    if (HasFailure()) break;
  }
  EXPECT_EQ(moved, kClients / 3);
  fanin::v1::GroupInfo info = GroupInfoOf(address, "workers");
  EXPECT_EQ(info.members_size(), 2);
  EXPECT_EQ(info.handovers(), static_cast<uint64_t>(kClients / 3));
}

// Lossless, with only the unfinished write redelivered: a member that stops
// reading is ended by --subscriber_stall_timeout with a write stuck; its
// connections move with that write marked, and once it reads again it gets
// exactly what the server finished writing to it.
TEST_P(GroupTest, StalledMemberHandsOverItsUnfinishedWriteMarked) {
  constexpr int kClients = 60;
  ServerConfig config = BaseConfig(GetParam());
  config.service.subscriber_stall_timeout = absl::Milliseconds(500);
  config.service.groups.redelivery_bytes = 0;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  // Member 1 takes small batches. Its reader is already inside Read when it
  // is held, and that one message gets through whatever its size: with the
  // default batch (up to 1 MiB) a server that read the next round coalesced
  // (16 KiB per read on a busy machine) sent member 1 its whole share in one
  // message, which never stalled. 4 events of at most 16 KiB, plus the 64 KiB
  // HTTP/2 window, are well under its 480 KiB share.
  SubscribeRequest small_batches = GroupRequest("workers");
  small_batches.set_max_batch_events(4);
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < 2; ++i) {
    members.push_back(Subscriber::Start(
        address, i == 1 ? small_batches : GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  clients.Send(1024, 1);
  ASSERT_TRUE(members[1]->WaitUntil(
      [](const Subscriber::State& s) { return s.data_bytes >= 30 * 1024; },
      Deadline()));
  members[1]->Hold();
  // Enough for member 1's stream to fill its window and stall.
  clients.Send(16 << 10, 2);
  ASSERT_TRUE(WaitFor(
      [&] { return GroupInfoOf(address, "workers").members_size() == 1; },
      Deadline()))
      << GroupInfoOf(address, "workers").ShortDebugString();
  members[1]->Release();
  // ABORTED (the stall); or CANCELLED when the server, ending the call after
  // the stall, had to cancel it too (a late heartbeat tick on a busy machine
  // found the stall ~40 ms before the cancel deadline): either way what it
  // had written is handed over, marked.
  const grpc::StatusCode ended = members[1]->WaitDone(Deadline()).error_code();
  EXPECT_TRUE(ended == grpc::StatusCode::ABORTED ||
              ended == grpc::StatusCode::CANCELLED)
      << ended;
  clients.Send(1024, 3);
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  int marked = 0;
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    for (const Receipt& r : a.receipts[ids[i]]) marked += r.marked ? 1 : 0;
    if (HasFailure()) break;
  }
  EXPECT_GT(marked, 0) << "the stuck write was redelivered, marked";
  EXPECT_EQ(GroupInfoOf(address, "workers").redelivered_events(),
            static_cast<uint64_t>(marked));
}

// Lossy: a member that falls behind the (small) history loses events; when
// it is ended, its connections' new members are told exactly which events of
// each were lost, and everything else arrives.
TEST_P(GroupTest, LossyHandoverReportsExactPerConnectionGaps) {
  constexpr int kClients = 30;
  ServerConfig config = BaseConfig(GetParam());
  config.hub.history_events = 64;
  config.service.subscriber_stall_timeout = absl::Seconds(2);
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  auto reference = Subscriber::Start(address, LosslessRequest());
  ASSERT_TRUE(reference->WaitStarted(Deadline()).ok());
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(
        Subscriber::Start(address, GroupRequest("workers", false)));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  clients.Send(512, 1);
  ASSERT_TRUE(members[1]->WaitUntil(
      [](const Subscriber::State& s) { return s.data_bytes >= 10 * 512; },
      Deadline()));
  members[1]->Hold();
  // Member 1's window fills, its write sticks, the history evicts what waits
  // in its queue; its stream is ended (--subscriber_stall_timeout) while the
  // clients keep sending.
  const absl::Time give_up = Deadline();
  for (int round = 2; absl::Now() < give_up; ++round) {
    clients.Send(256, round);
    if (GroupInfoOf(address, "workers").members_size() == 2) break;
  }
  ASSERT_EQ(GroupInfoOf(address, "workers").members_size(), 2);
  ASSERT_GT(GroupInfoOf(address, "workers").events_lost(), 0u)
      << "member 1 lost nothing before it was ended";
  members[1]->Release();
  clients.Send(512, 40);
  clients.CloseAll();
  ASSERT_TRUE(reference->WaitUntil(
      [&](const Subscriber::State& s) { return s.closed.size() == kClients; },
      Deadline(absl::Seconds(60))));
  // Lossy: a Closed may be lost too. Done when the group holds nothing and
  // each live member has read what the server wrote to it.
  // ABORTED; or CANCELLED when the server gave up writing even that (a slow
  // machine): what it had written is handed over too, marked.
  const grpc::StatusCode ended = members[1]->WaitDone(Deadline()).error_code();
  EXPECT_TRUE(ended == grpc::StatusCode::ABORTED ||
              ended == grpc::StatusCode::CANCELLED)
      << ended;
  ASSERT_TRUE(WaitFor(
      [&] {
        fanin::v1::GroupInfo info = GroupInfoOf(address, "workers");
        if (info.connections() != 0 || info.queued_events() != 0 ||
            info.members_size() != 2) {
          return false;
        }
        return members[0]->Snapshot().events.size() >=
                   info.members(0).delivered_events() &&
               members[2]->Snapshot().events.size() >=
                   info.members(1).delivered_events();
      },
      Deadline(absl::Seconds(60))))
      << GroupInfoOf(address, "workers").ShortDebugString() << " read "
      << members[0]->Snapshot().events.size() << " and "
      << members[2]->Snapshot().events.size();
  Subscriber::State ref = reference->Snapshot();
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  uint64_t total_lost = 0;
  const std::vector<uint64_t> ids = IdsOf(clients, {ref});
  for (int i = 0; i < kClients; ++i) {
    const uint64_t id = ids[i];
    std::set<uint64_t> want;
    for (const Event& e : EventsOf(ref.events, id)) want.insert(e.seq());
    std::set<uint64_t> got;
    for (const Event& e : UniqueEvents(a, id)) {
      EXPECT_TRUE(want.contains(e.seq())) << "connection " << id;
      got.insert(e.seq());
    }
    uint64_t reported = 0;
    std::vector<std::pair<uint64_t, uint64_t>> holes;
    for (const Assigned& as : a.assigned[id]) {
      if (!as.has_gap()) continue;
      reported += as.gap().lost();
      holes.push_back({as.gap().first_seq(), as.gap().last_seq()});
    }
    uint64_t missing = 0;
    for (uint64_t seq : want) {
      if (got.contains(seq)) continue;
      ++missing;
      bool covered = false;
      for (auto [first, last] : holes) covered |= first <= seq && seq <= last;
      EXPECT_TRUE(covered) << "connection " << id << " seq " << seq
                           << " missing without a gap";
    }
    EXPECT_EQ(missing, reported) << "connection " << id;
    total_lost += reported;
    if (HasFailure()) break;
  }
  EXPECT_GT(total_lost, 0u) << "the test must make the member lose events";
  EXPECT_EQ(GroupInfoOf(address, "workers").events_lost(), total_lost);
}

// Lossless: every member gone; the group keeps what arrives (and pauses the
// sockets past --subscriber_queue_bytes) until members come back.
TEST_P(GroupTest, AllMembersGoneAndBackLoseNothing) {
  constexpr int kClients = 60;
  ServerConfig config = BaseConfig(GetParam());
  config.hub.lossless_queue_bytes = 128 << 10;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(Subscriber::Start(address, GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  clients.Send(1024, 1);
  ASSERT_TRUE(WaitFor(
      [&] {
        uint64_t bytes = 0;
        for (const auto& s : Snapshots(members)) bytes += s.data_bytes;
        return bytes >= kClients * 1024;
      },
      Deadline()));
  for (auto& m : members) m->Cancel();
  ASSERT_TRUE(WaitFor(
      [&] { return GroupInfoOf(address, "workers").members_size() == 0; },
      Deadline()));
  clients.Send(8 << 10, 2);
  ASSERT_TRUE(WaitFor([&] { return GroupInfoOf(address, "workers").paused(); },
                      Deadline()))
      << "an empty lossless group past its budget holds back its sockets";
  EXPECT_EQ(GroupInfoOf(address, "workers").unassigned_connections(),
            static_cast<uint64_t>(kClients));
  for (int i = 0; i < 3; ++i) {
    members.push_back(Subscriber::Start(address, GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
  }
  clients.Send(1024, 3);
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (HasFailure()) break;
  }
  EXPECT_FALSE(GroupInfoOf(address, "workers").paused());
}

// Lossy: the next member of an empty group gets a Gap, and per connection
// exactly what it lost.
TEST_P(GroupTest, LossyEmptyGroupsNextMemberGetsAGap) {
  constexpr int kClients = 10;
  ServerConfig config = BaseConfig(GetParam());
  config.hub.history_events = 64;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  auto first = Subscriber::Start(address, GroupRequest("workers", false));
  ASSERT_TRUE(first->WaitStarted(Deadline()).ok());
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  ASSERT_TRUE(first->WaitUntil(
      [](const Subscriber::State& s) { return s.opened.size() == kClients; },
      Deadline()));
  first->Cancel();
  ASSERT_TRUE(WaitFor(
      [&] { return GroupInfoOf(address, "workers").members_size() == 0; },
      Deadline()));
  // Many more events than the history keeps (each round read before the
  // next is sent), all published before the next member comes.
  for (int round = 0; round < 20; ++round) {
    clients.Send(64, round + 1);
    ASSERT_TRUE(WaitFor(
        [&] {
          return server->core()->GetStats().bytes_received ==
                 static_cast<uint64_t>(kClients * 64 * (round + 1));
        },
        Deadline()));
  }
  auto next = Subscriber::Start(address, GroupRequest("workers", false));
  ASSERT_TRUE(next->WaitUntil(
      [](const Subscriber::State& s) { return !s.messages.empty(); },
      Deadline()));
  clients.CloseAll();
  ASSERT_TRUE(next->WaitUntil(
      [](const Subscriber::State& s) { return s.closed.size() == kClients; },
      Deadline()));
  Subscriber::State s = next->Snapshot();
  ASSERT_TRUE(s.messages[0].has_gap()) << s.messages[0].ShortDebugString();
  EXPECT_GT(s.messages[0].gap().lost(), 0u);
  uint64_t per_connection = 0;
  for (const Assigned& as : s.assigned) per_connection += as.gap().lost();
  // This member may lose more while it catches up: every Gap it got is
  // accounted for, per connection, in the Assigned messages.
  EXPECT_EQ(per_connection, s.lost);
  Analysis a = Analyze({first->Snapshot(), s});
  ExpectNoErrors(a);
}

TEST_P(GroupTest, MismatchedRequestsAreRefused) {
  // Two listeners, so that asking for one of them is a filter of its own.
  ServerConfig config = BaseConfig(GetParam());
  config.core.listen.push_back({"other", net::Endpoint::Loopback(0)});
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  SubscribeRequest data_only = GroupRequest("workers");
  data_only.add_kinds(fanin::v1::EVENT_KIND_DATA);
  auto first = Subscriber::Start(address, data_only);
  ASSERT_TRUE(first->WaitStarted(Deadline()).ok());
  struct Case {
    SubscribeRequest request;
    grpc::StatusCode code;
    const char* says;
  };
  std::vector<Case> cases;
  cases.push_back({GroupRequest("workers"),
                   grpc::StatusCode::FAILED_PRECONDITION,
                   "kinds: the group has EVENT_KIND_DATA, this request asks "
                   "for all"});
  // A member that differs from the group's terms in one field.
  auto differs = [&](absl::FunctionRef<void(SubscribeRequest*)> edit,
                     const char* says) {
    SubscribeRequest request = data_only;
    edit(&request);
    cases.push_back({request, grpc::StatusCode::FAILED_PRECONDITION, says});
  };
  differs(
      [](SubscribeRequest* r) { r->set_delivery(fanin::v1::DELIVERY_LOSSY); },
      "delivery: the group has DELIVERY_LOSSLESS, this request asks for "
      "DELIVERY_LOSSY");
  differs([](SubscribeRequest* r) { r->set_max_payload_bytes(10); },
          "max_payload_bytes: the group has 0, this request asks for 10");
  differs([](SubscribeRequest* r) { r->add_listeners("other"); },
          "listeners: the group has all, this request asks for other");
  differs([](SubscribeRequest* r) { r->add_connection_ids(7); },
          "connection_ids: the group has all, this request asks for 7");
  differs([](SubscribeRequest* r) { r->set_omit_payload(true); },
          "omit_payload: the group has false, this request asks for true");
  SubscribeRequest bad_name = data_only;
  bad_name.set_group("no spaces");
  cases.push_back(
      {bad_name, grpc::StatusCode::INVALID_ARGUMENT, "is not a group name"});
  SubscribeRequest stray = LosslessRequest();
  stray.set_rebalance(true);
  cases.push_back({stray, grpc::StatusCode::INVALID_ARGUMENT,
                   "rebalance: only for group members"});
  for (const Case& c : cases) {
    auto refused = Subscriber::Start(address, c.request);
    grpc::Status status = refused->WaitDone(Deadline());
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.says))
        << status.error_message();
  }
  fanin::v1::GroupInfo info = GroupInfoOf(address, "workers");
  EXPECT_EQ(info.members_size(), 1);
  EXPECT_EQ(info.delivery(), fanin::v1::DELIVERY_LOSSLESS);
  auto stub = NewStub(address);
  auto context = NewContext();
  fanin::v1::ListGroupsRequest request;
  request.set_group("nobody");
  fanin::v1::ListGroupsResponse response;
  EXPECT_EQ(stub->ListGroups(context.get(), request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  fanin::v1::GetStatsResponse stats;
  auto stats_context = NewContext();
  ASSERT_TRUE(stub->GetStats(stats_context.get(), {}, &stats).ok());
  EXPECT_EQ(stats.groups(), 1u);
  EXPECT_EQ(stats.group_members(), 1u);
}

// A member joining with rebalance takes its share of existing connections;
// both members are told, and each connection's events then go to one member.
TEST_P(GroupTest, RebalanceMovesExistingConnections) {
  constexpr int kClients = 20;
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> members;
  members.push_back(Subscriber::Start(address, GroupRequest("workers")));
  ASSERT_TRUE(members[0]->WaitStarted(Deadline()).ok());
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  clients.Send(256, 1);
  ASSERT_TRUE(members[0]->WaitUntil(
      [](const Subscriber::State& s) { return s.data_bytes >= kClients * 256; },
      Deadline()));
  SubscribeRequest rebalance = GroupRequest("workers");
  rebalance.set_rebalance(true);
  members.push_back(Subscriber::Start(address, rebalance));
  ASSERT_TRUE(members[1]->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(members[1]->WaitUntil(
      [](const Subscriber::State& s) {
        return s.assigned.size() == kClients / 2;
      },
      Deadline()));
  clients.Send(256, 2);
  clients.CloseAll();
  ASSERT_TRUE(
      WaitFor([&] { return CountClosed(members) == kClients; }, Deadline()));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  int revoked = 0;
  for (const Assigned& as : states[0].assigned) revoked += as.revoked();
  EXPECT_EQ(revoked, kClients / 2);
  for (const Assigned& as : states[1].assigned) {
    EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_REBALANCE);
    EXPECT_EQ(as.possibly_redelivered_through_seq(), 0u);
  }
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    for (const Receipt& r : a.receipts[ids[i]]) EXPECT_FALSE(r.marked);
    if (HasFailure()) break;
  }
}

// Members join and leave every few milliseconds while 100 connections send:
// no connection's bytes are ever split (each event to one member, but for
// marked redeliveries) or lost.
TEST_P(GroupTest, MemberChurnNeverSplitsOrLosesAConnection) {
  constexpr int kClients = 100;
  auto server = StartServer(BaseConfig(GetParam()));
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> members;
  members.push_back(Subscriber::Start(address, GroupRequest("workers")));
  ASSERT_TRUE(members[0]->WaitStarted(Deadline()).ok());
  Clients clients;
  clients.Connect(ListenAddress(*server, "default"), kClients);
  std::atomic<bool> sending{true};
  std::thread sender([&] {
    for (int round = 1; round <= 30; ++round) {
      clients.Send(512, round);
      // Spreads the load over the churn.
      absl::SleepFor(absl::Milliseconds(10));
    }
    sending = false;
  });
  std::mt19937 rng(7);
  std::vector<size_t> live = {0};
  while (sending && members.size() < 150) {
    members.push_back(Subscriber::Start(address, GroupRequest("workers")));
    ASSERT_TRUE(members.back()->WaitStarted(Deadline()).ok());
    live.push_back(members.size() - 1);
    // The churn itself: a member lives a few milliseconds (what is tested).
    absl::SleepFor(absl::Milliseconds(2 + rng() % 6));
    if (live.size() > 1 + rng() % 3) {
      const size_t pick = rng() % (live.size() - 1);  // never the newest
      members[live[pick]]->Cancel();
      live.erase(live.begin() + pick);
    }
  }
  sender.join();
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (HasFailure()) break;
  }
  EXPECT_GT(GroupInfoOf(address, "workers").handovers(), 0u);
}

INSTANTIATE_TEST_SUITE_P(AllPollers, GroupTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
