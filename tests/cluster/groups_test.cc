// Worker-pool groups in cluster mode: a real nats-server, three real
// fanin_server nodes, members subscribed through different nodes. They split
// the whole cluster's connections (each to one member, whole, in order,
// balanced) and hand them over across nodes when a member leaves, its node
// dies or the whole pool is gone for a while, losing nothing in lossless
// groups (redelivery only where marked).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/net/address.h"
#include "tests/testing/group_check.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/nats_server.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin {
namespace {

using ::fanin::testing::Analysis;
using ::fanin::testing::Analyze;
using ::fanin::testing::ConnectTcp;
using ::fanin::testing::CountClosed;
using ::fanin::testing::CountOpened;
using ::fanin::testing::Deadline;
using ::fanin::testing::ExpectNoErrors;
using ::fanin::testing::ExpectWholeLife;
using ::fanin::testing::GroupInfoOf;
using ::fanin::testing::GroupRequest;
using ::fanin::testing::NatsServer;
using ::fanin::testing::ServerProcess;
using ::fanin::testing::Snapshots;
using ::fanin::testing::Subscriber;
using ::fanin::testing::TcpClient;
using ::fanin::testing::WaitFor;
using ::fanin::v1::SubscribeRequest;

// Raw clients spread over the nodes, each with what it has sent.
struct Clients {
  std::vector<TcpClient> clients;
  std::vector<int> node;
  std::vector<std::string> ends;  // the server's "remote|local"
  std::vector<std::string> sent;

  void Connect(const std::string& address, int on_node) {
    auto c = ConnectTcp(address);
    ASSERT_TRUE(c.ok()) << c.status();
    ends.push_back(absl::StrCat(net::LocalAddressOf(c->fd()), "|",
                                net::PeerAddressOf(c->fd())));
    node.push_back(on_node);
    sent.emplace_back();
    clients.push_back(*std::move(c));
  }
  // Every client (of `only_node`, or all) sends one line of round `round`.
  void Send(int round, int only_node = -1) {
    for (size_t i = 0; i < clients.size(); ++i) {
      if (only_node >= 0 && node[i] != only_node) continue;
      const std::string line =
          absl::StrCat("client ", i, " round ", round, " ",
                       std::string(40 + (i * 7 + round) % 200, 'x'), "\n");
      ASSERT_TRUE(clients[i].SendAll(line).ok());
      sent[i] += line;
    }
  }
  // Every client (of `only_node`, or all) sends `bytes` bytes of round
  // `round`.
  void SendBytes(int round, size_t bytes, int only_node = -1) {
    for (size_t i = 0; i < clients.size(); ++i) {
      if (only_node >= 0 && node[i] != only_node) continue;
      std::string chunk(bytes, static_cast<char>('a' + (i + round) % 26));
      chunk.replace(0, 0, absl::StrCat("client ", i, " round ", round, " "));
      chunk.resize(bytes);
      ASSERT_TRUE(clients[i].SendAll(chunk).ok());
      sent[i] += chunk;
    }
  }
  size_t SentBytes() const {
    size_t n = 0;
    for (const std::string& s : sent) n += s.size();
    return n;
  }
  void CloseAll(int only_node = -1) {
    for (size_t i = 0; i < clients.size(); ++i) {
      if (only_node >= 0 && node[i] != only_node) continue;
      clients[i].ShutdownWrite().IgnoreError();
    }
  }
};

class GroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    for (const char* name : {"a", "b", "c"}) {
      auto node = StartNode(name);
      ASSERT_TRUE(node.ok()) << node.status();
      nodes_.push_back(*std::move(node));
    }
  }

  absl::StatusOr<std::unique_ptr<ServerProcess>> StartNode(
      const std::string& name) {
    return testing::StartClusterNode(
        *nats_, name,
        {"--cluster_storage=memory", "--cluster_node_timeout=3s",
         "--drain_timeout=2s"});
  }

  const std::string& grpc(int i) const { return nodes_[i]->grpc_address(); }
  std::string listen(int i) const {
    return nodes_[i]->listen_address().value();
  }

  // A member through node `n`, started.
  std::unique_ptr<Subscriber> Join(int n, const std::string& group,
                                   bool lossless = true) {
    auto m = Subscriber::Start(grpc(n), GroupRequest(group, lossless));
    EXPECT_TRUE(m->WaitStarted(Deadline()).ok());
    return m;
  }

  // Every node in `on` lists `members` members of `group`.
  bool WaitMembers(const std::string& group, int members,
                   std::vector<int> on = {0, 1, 2}) {
    return WaitFor(
        [&] {
          for (int n : on) {
            if (GroupInfoOf(grpc(n), group).members_size() != members) {
              return false;
            }
          }
          return true;
        },
        Deadline());
  }

  // Each client's connection id, from whichever member saw it.
  static std::vector<uint64_t> IdsOf(
      const Clients& clients, const std::vector<Subscriber::State>& states) {
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

  // A member cancelled on node b while its connections (on every node)
  // stream: they move to the members on the other nodes, each announced
  // first, and nothing is lost; what may have been delivered twice is
  // marked.
  void CancelOneMember(bool lossless);

  std::unique_ptr<NatsServer> nats_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

TEST_F(GroupsTest, MembersOnThreeNodesSplitTheClustersConnections) {
  constexpr int kClients = 300;
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int n = 0; n < 3; ++n) members.push_back(Join(n, "workers"));
  ASSERT_TRUE(WaitMembers("workers", 3));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  for (int round = 0; round < 5; ++round) clients.Send(round);
  // Every node agrees on who holds how many.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto a = GroupInfoOf(grpc(0), "workers");
        if (a.connections() != kClients || a.members_size() != 3) return false;
        for (int n : {1, 2}) {
          auto other = GroupInfoOf(grpc(n), "workers");
          if (other.members_size() != 3) return false;
          for (int k = 0; k < 3; ++k) {
            if (other.members(k).member_id() != a.members(k).member_id() ||
                other.members(k).connections() != a.members(k).connections()) {
              return false;
            }
          }
        }
        return true;
      },
      Deadline()));
  auto info = GroupInfoOf(grpc(1), "workers");
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(info.members(k).connections(), kClients / 3)
        << info.ShortDebugString();
    EXPECT_EQ(info.members(k).node(), std::string(1, 'a' + k));
  }
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  std::vector<int> held(3);
  std::set<std::pair<int, int>> member_and_node;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u) << "client " << i << " never opened";
    ASSERT_EQ(a.members[ids[i]].size(), 1u)
        << "connection " << ids[i] << " reached several members";
    const int k = static_cast<int>(*a.members[ids[i]].begin());
    ++held[k];
    member_and_node.insert({k, clients.node[i]});
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (HasFailure()) break;
  }
  EXPECT_LE(*std::max_element(held.begin(), held.end()) -
                *std::min_element(held.begin(), held.end()),
            1);
  // Members take connections of every node, not only their own node's.
  EXPECT_EQ(member_and_node.size(), 9u);
  for (const auto& s : states) {
    EXPECT_FALSE(s.done) << s.status.error_message();
    EXPECT_TRUE(s.gaps.empty());
  }
}

void GroupsTest::CancelOneMember(bool lossless) {
  constexpr int kClients = 90;
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int n = 0; n < 3; ++n) members.push_back(Join(n, "workers", lossless));
  ASSERT_TRUE(WaitMembers("workers", 3));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  for (int round = 0; round < 10; ++round) clients.Send(round);
  // Every connection has its member (a connect returns before the server
  // accepts), and member 1, a third of them, had half of its share.
  ASSERT_TRUE(
      WaitFor([&] { return CountOpened(members) == kClients; }, Deadline()));
  size_t total = 0;
  for (const std::string& bytes : clients.sent) total += bytes.size();
  ASSERT_TRUE(members[1]->WaitUntil(
      [&](const Subscriber::State& s) { return s.data_bytes >= total / 6; },
      Deadline()));
  std::atomic<bool> sending{true};
  std::thread sender([&] {
    for (int round = 10; round < 60; ++round) clients.Send(round);
    sending = false;
  });
  members[1]->Cancel();
  sender.join();
  ASSERT_TRUE(WaitMembers("workers", 2));
  clients.CloseAll();
  std::vector<std::unique_ptr<Subscriber>> left;
  left.push_back(std::move(members[0]));
  left.push_back(std::move(members[2]));
  ASSERT_TRUE(WaitFor([&] { return CountClosed(left) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(left);
  states.push_back(members[1]->Snapshot());
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  int moved = 0;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u);
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    for (const auto& as : a.assigned[ids[i]]) {
      EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
      EXPECT_EQ(as.previous_node(), "b");
      ++moved;
    }
    if (HasFailure()) break;
  }
  EXPECT_EQ(moved, kClients / 3) << "the cancelled member's connections";
  for (const auto& st : states) EXPECT_TRUE(st.gaps.empty());
}

TEST_F(GroupsTest, AMemberCancelledOnOneNodeLosesNothing) {
  CancelOneMember(/*lossless=*/true);
}

// Lossy groups hand over the same way (nothing is evicted here, so nothing
// may be missing either).
TEST_F(GroupsTest, ALossyMemberCancelledOnOneNodeHandsOverTheSameWay) {
  CancelOneMember(/*lossless=*/false);
}

// kill -9 of the node behind one member: the member's connections on the
// surviving nodes go to the other members (announced, nothing lost), the
// dead node's own connections close as NODE_LOST.
TEST_F(GroupsTest, ANodeKilledHandsItsMembersConnectionsOver) {
  constexpr int kClients = 60;
  std::vector<std::unique_ptr<Subscriber>> members;
  for (int n = 0; n < 3; ++n) members.push_back(Join(n, "workers"));
  ASSERT_TRUE(WaitMembers("workers", 3));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  for (int round = 0; round < 10; ++round) clients.Send(round);
  ASSERT_TRUE(
      WaitFor([&] { return CountOpened(members) == kClients; }, Deadline()));
  ASSERT_TRUE(nodes_[2]->Signal(SIGKILL).ok());
  for (int round = 10; round < 30; ++round) {
    clients.Send(round, 0);
    clients.Send(round, 1);
  }
  ASSERT_TRUE(WaitMembers("workers", 2, {0, 1}));
  for (int round = 30; round < 40; ++round) {
    clients.Send(round, 0);
    clients.Send(round, 1);
  }
  clients.CloseAll(0);
  clients.CloseAll(1);
  std::vector<std::unique_ptr<Subscriber>> alive;
  alive.push_back(std::move(members[0]));
  alive.push_back(std::move(members[1]));
  ASSERT_TRUE(WaitFor([&] { return CountClosed(alive) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(alive);
  states.push_back(members[2]->Snapshot());
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  int moved = 0;
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u);
    if (clients.node[i] == 2) continue;  // closed as NODE_LOST
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    // Those the dead node's member (index 2) held moved, announced, once.
    if (a.members[ids[i]].contains(2)) {
      ++moved;
      ASSERT_EQ(a.assigned[ids[i]].size(), 1u) << "connection " << ids[i];
      EXPECT_EQ(a.assigned[ids[i]][0].previous_node(), "c");
      EXPECT_EQ(a.assigned[ids[i]][0].reason(),
                fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    } else {
      EXPECT_TRUE(a.assigned[ids[i]].empty()) << "connection " << ids[i];
    }
    if (HasFailure()) break;
  }
  EXPECT_GT(moved, 0);
}

// A slow member holds up only its own group: the node's group queues have a
// share per group, and past it that group's events are read back from the
// stream later instead of the node's router stopping for every group.
TEST_F(GroupsTest, ASlowGroupDoesNotHoldUpAnotherGroupOnItsNode) {
  constexpr int kClients = 20;
  // A node whose group queues may hold 64 KiB in all, a third of it per
  // group (joining now, before the groups below are founded), where no stall
  // ends a held member.
  auto small = testing::StartClusterNode(
      *nats_, "d",
      {"--cluster_storage=memory", "--cluster_node_timeout=3s",
       "--drain_timeout=2s", "--subscriber_queue_bytes=65536",
       "--subscriber_stall_timeout=300s"});
  ASSERT_TRUE(small.ok()) << small.status();
  const std::string d = (*small)->grpc_address();
  std::vector<std::unique_ptr<Subscriber>> slow, fast;
  slow.push_back(Subscriber::Start(d, GroupRequest("slow")));
  fast.push_back(Subscriber::Start(d, GroupRequest("fast")));
  ASSERT_TRUE(slow[0]->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(fast[0]->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return GroupInfoOf(d, "slow").members_size() == 1 &&
               GroupInfoOf(d, "fast").members_size() == 1;
      },
      Deadline()));
  Clients clients;
  for (int i = 0; i < kClients; ++i) {
    clients.Connect((*small)->listen_address().value(), 3);
  }
  clients.Send(0);
  const size_t first = clients.SentBytes();
  ASSERT_TRUE(slow[0]->WaitUntil(
      [&](const Subscriber::State& s) { return s.data_bytes == first; },
      Deadline()));
  slow[0]->Hold();
  // 8 MB: far more than the held member's HTTP/2 window takes.
  for (int round = 1; round <= 40; ++round) clients.SendBytes(round, 10000);
  const size_t total = clients.SentBytes();
  EXPECT_TRUE(fast[0]->WaitUntil(
      [&](const Subscriber::State& s) { return s.data_bytes == total; },
      Deadline(absl::Seconds(60))))
      << "the fast group's member got " << fast[0]->Snapshot().data_bytes
      << " of " << total << " bytes while the slow group's was held; fast: "
      << GroupInfoOf(d, "fast").ShortDebugString()
      << "; slow: " << GroupInfoOf(d, "slow").ShortDebugString();
  EXPECT_LT(slow[0]->Snapshot().data_bytes, total / 2)
      << "the slow member was not held up: this test shows nothing";
  slow[0]->Release();
  clients.CloseAll();
  ASSERT_TRUE(WaitFor(
      [&] {
        return CountClosed(slow) == kClients && CountClosed(fast) == kClients;
      },
      Deadline(absl::Seconds(90))))
      << "slow has " << slow[0]->Snapshot().data_bytes << " of " << total;
  for (auto* group : {&slow, &fast}) {
    std::vector<Subscriber::State> states = Snapshots(*group);
    Analysis a = Analyze(states);
    ExpectNoErrors(a);
    std::vector<uint64_t> ids = IdsOf(clients, states);
    for (int i = 0; i < kClients; ++i) {
      ASSERT_NE(ids[i], 0u);
      ExpectWholeLife(a, ids[i], clients.sent[i]);
      EXPECT_TRUE(a.assigned[ids[i]].empty()) << "never moved";
      if (HasFailure()) return;
    }
  }
}

TEST_F(GroupsTest, MismatchedRequestsAcrossNodesAreRefused) {
  auto first = Join(0, "workers", /*lossless=*/true);
  ASSERT_TRUE(WaitMembers("workers", 1));
  auto other = Subscriber::Start(grpc(1), GroupRequest("workers", false));
  grpc::Status status = other->WaitDone(Deadline());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "delivery"))
      << status.error_message();
  // Two founders racing with different terms: one group, one refused.
  auto x = Subscriber::Start(grpc(1), GroupRequest("race", true));
  auto y = Subscriber::Start(grpc(2), GroupRequest("race", false));
  ASSERT_TRUE(WaitFor(
      [&] {
        return GroupInfoOf(grpc(0), "race").members_size() == 1 &&
               (x->Snapshot().done || y->Snapshot().done);
      },
      Deadline()));
  const bool x_refused = x->Snapshot().done;
  EXPECT_NE(x_refused, y->Snapshot().done);
  EXPECT_EQ((x_refused ? x : y)->Snapshot().status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// Lossless: every member gone while the clients keep sending, then one
// member back on another node: it gets every connection, announced, and
// nothing was lost meanwhile.
TEST_F(GroupsTest, AllMembersGoneAndBackLoseNothing) {
  constexpr int kClients = 30;
  std::vector<std::unique_ptr<Subscriber>> members;
  members.push_back(Join(0, "pool"));
  members.push_back(Join(1, "pool"));
  ASSERT_TRUE(WaitMembers("pool", 2));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  for (int round = 0; round < 5; ++round) clients.Send(round);
  ASSERT_TRUE(
      WaitFor([&] { return CountOpened(members) == kClients; }, Deadline()));
  members[0]->Cancel();
  members[1]->Cancel();
  ASSERT_TRUE(WaitMembers("pool", 0));
  for (int round = 5; round < 15; ++round) clients.Send(round);
  members.push_back(Join(2, "pool"));
  for (int round = 15; round < 20; ++round) clients.Send(round);
  clients.CloseAll();
  ASSERT_TRUE(WaitFor(
      [&] {
        return members[2]->Snapshot().closed.size() ==
               static_cast<size_t>(kClients);
      },
      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u);
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    ASSERT_FALSE(a.assigned[ids[i]].empty());
    EXPECT_EQ(a.assigned[ids[i]].back().reason(),
              fanin::v1::ASSIGN_REASON_MEMBER_LEFT);
    if (HasFailure()) break;
  }
}

// A member joining through another node with rebalance takes half of the
// connections the first member held, each announced to both; nothing lost.
TEST_F(GroupsTest, RebalanceAcrossNodesMovesExistingConnections) {
  constexpr int kClients = 30;
  std::vector<std::unique_ptr<Subscriber>> members;
  members.push_back(Join(0, "workers"));
  ASSERT_TRUE(WaitMembers("workers", 1));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  for (int round = 0; round < 5; ++round) clients.Send(round);
  size_t total = 0;
  for (const std::string& bytes : clients.sent) total += bytes.size();
  ASSERT_TRUE(members[0]->WaitUntil(
      [&](const Subscriber::State& s) { return s.data_bytes == total; },
      Deadline()));
  SubscribeRequest rebalance = GroupRequest("workers");
  rebalance.set_rebalance(true);
  members.push_back(Subscriber::Start(grpc(1), rebalance));
  ASSERT_TRUE(members[1]->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(members[1]->WaitUntil(
      [](const Subscriber::State& s) {
        return s.assigned.size() == kClients / 2;
      },
      Deadline()));
  for (int round = 5; round < 10; ++round) clients.Send(round);
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))));
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  int revoked = 0;
  for (const auto& as : states[0].assigned) revoked += as.revoked();
  EXPECT_EQ(revoked, kClients / 2);
  for (const auto& as : states[1].assigned) {
    EXPECT_EQ(as.reason(), fanin::v1::ASSIGN_REASON_REBALANCE);
    EXPECT_EQ(as.previous_node(), "a");
  }
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (int i = 0; i < kClients; ++i) {
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (HasFailure()) break;
  }
}

// Members joining and leaving through all three nodes every few
// milliseconds while the clients send: every node applies the changes at
// the same seq, so no connection's bytes are ever split unmarked or lost.
TEST_F(GroupsTest, MemberChurnAcrossNodesNeverSplitsOrLosesAConnection) {
  constexpr int kClients = 60;
  std::vector<std::unique_ptr<Subscriber>> members;
  members.push_back(Join(0, "workers"));
  // Founded on every node before the clients connect: a connection opened
  // before its group existed joins it at its next event, without its Opened.
  ASSERT_TRUE(WaitMembers("workers", 1));
  Clients clients;
  for (int i = 0; i < kClients; ++i) clients.Connect(listen(i % 3), i % 3);
  std::atomic<bool> sending{true};
  std::thread sender([&] {
    for (int round = 0; round < 30; ++round) {
      clients.Send(round);
      absl::SleepFor(absl::Milliseconds(10));  // spreads the load
    }
    sending = false;
  });
  std::mt19937 rng(11);
  std::vector<size_t> live = {0};
  while (sending && members.size() < 60) {
    members.push_back(Join(static_cast<int>(members.size() % 3), "workers"));
    live.push_back(members.size() - 1);
    // The churn itself: a member lives a few milliseconds (what is tested).
    absl::SleepFor(absl::Milliseconds(2 + rng() % 8));
    if (live.size() > 1 + rng() % 3) {
      const size_t pick = rng() % (live.size() - 1);  // never the newest
      members[live[pick]]->Cancel();
      live.erase(live.begin() + pick);
    }
  }
  sender.join();
  clients.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return CountClosed(members) == kClients; },
                      Deadline(absl::Seconds(60))))
      << "node a: " << GroupInfoOf(grpc(0), "workers").ShortDebugString()
      << "\nnode b: " << GroupInfoOf(grpc(1), "workers").ShortDebugString()
      << "\nnode c: " << GroupInfoOf(grpc(2), "workers").ShortDebugString();
  std::vector<Subscriber::State> states = Snapshots(members);
  Analysis a = Analyze(states);
  ExpectNoErrors(a);
  std::vector<uint64_t> ids = IdsOf(clients, states);
  for (const auto& [id, receipts] : a.receipts) {
    bool opened = false;
    for (const auto& r : receipts) opened |= r.event.has_opened();
    EXPECT_TRUE(opened) << "connection " << id
                        << " without its Opened: " << testing::Story(a, id);
  }
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NE(ids[i], 0u);
    ExpectWholeLife(a, ids[i], clients.sent[i]);
    if (HasFailure()) break;
  }
  // All nodes agree on who holds what.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto first = GroupInfoOf(grpc(0), "workers");
        for (int n : {1, 2}) {
          auto other = GroupInfoOf(grpc(n), "workers");
          if (other.members_size() != first.members_size()) return false;
          for (int k = 0; k < first.members_size(); ++k) {
            if (other.members(k).member_id() != first.members(k).member_id()) {
              return false;
            }
          }
        }
        return first.members_size() == static_cast<int>(live.size());
      },
      Deadline()));
  EXPECT_GT(GroupInfoOf(grpc(0), "workers").handovers(), 0u);
}

// A node that joins the cluster after a group was founded has not seen its
// membership: it refuses members of that group (clearly, naming why)
// rather than founding a second group of the same name.
TEST_F(GroupsTest, ANodeJoiningLaterRefusesMembersOfOlderGroups) {
  auto first = Join(0, "workers");
  ASSERT_TRUE(WaitMembers("workers", 1));
  auto late = StartNode("d");
  ASSERT_TRUE(late.ok()) << late.status();
  auto refused =
      Subscriber::Start((*late)->grpc_address(), GroupRequest("workers"));
  grpc::Status status = refused->WaitDone(Deadline());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "another node"))
      << status.error_message();
  // A group founded after it joined is fine there.
  auto fresh =
      Subscriber::Start((*late)->grpc_address(), GroupRequest("fresh"));
  ASSERT_TRUE(fresh->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(WaitMembers("fresh", 1));
  EXPECT_FALSE(fresh->Snapshot().done);
}

}  // namespace
}  // namespace fanin
