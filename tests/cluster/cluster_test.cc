// Cluster mode end to end: a real nats-server with JetStream and three real
// fanin_server nodes on loopback, real raw clients and gRPC subscribers.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/net/address.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/nats_server.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin {
namespace {

using ::fanin::testing::ConnectTcp;
using ::fanin::testing::Deadline;
using ::fanin::testing::NatsServer;
using ::fanin::testing::NewContext;
using ::fanin::testing::NewStub;
using ::fanin::testing::ServerProcess;
using ::fanin::testing::Subscriber;
using ::fanin::testing::TcpClient;
using ::testing::HasSubstr;

std::string LocalAddressOf(const TcpClient& c) {
  return net::LocalAddressOf(c.fd());
}

class ClusterTest : public ::testing::Test {
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
      const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {
        "--cluster_storage=memory", "--listen=pull=127.0.0.1:0", "--pull=pull"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    return testing::StartClusterNode(*nats_, name, std::move(flags));
  }

  const std::string& grpc(int i) const { return nodes_[i]->grpc_address(); }
  std::string listen(int i, const char* name = "default") const {
    return nodes_[i]->listen_address(name).value();
  }

  fanin::v1::GetStatsResponse Stats(int i) {
    fanin::v1::GetStatsResponse r;
    auto ctx = NewContext();
    grpc::Status s =
        NewStub(grpc(i))->GetStats(ctx.get(), fanin::v1::GetStatsRequest(), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  std::unique_ptr<NatsServer> nats_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

// The events of a stream up to `last_seq`, each serialized: what must be
// identical on every node.
std::vector<std::string> Prefix(const Subscriber::State& s, uint64_t last_seq) {
  std::vector<std::string> out;
  for (const auto& e : s.events) {
    if (e.seq() <= last_seq) out.push_back(e.SerializeAsString());
  }
  return out;
}

TEST_F(ClusterTest, EveryNodeServesTheSameOrderedStreamByteExact) {
  // Subscribers on all three nodes, from one seq, lossless.
  const uint64_t from = Stats(0).cluster_head_seq();
  std::vector<std::unique_ptr<Subscriber>> subs;
  for (int i = 0; i < 3; ++i) {
    fanin::v1::SubscribeRequest req = testing::LosslessRequest();
    req.set_resume_after_seq(from);
    subs.push_back(Subscriber::Start(grpc(i), req));
    auto started = subs.back()->WaitStarted(Deadline());
    ASSERT_TRUE(started.ok()) << started.status();
    EXPECT_EQ(started->node(), std::string(1, static_cast<char>('a' + i)));
  }
  // 300 clients spread over the nodes, each sending its own bytes.
  constexpr int kClients = 300;
  std::vector<TcpClient> clients;
  std::map<std::string, std::string> sent;  // "client|server" -> bytes
  std::map<std::string, std::string> node_of;
  for (int i = 0; i < kClients; ++i) {
    auto c = ConnectTcp(listen(i % 3));
    ASSERT_TRUE(c.ok()) << c.status();
    clients.push_back(*std::move(c));
  }
  for (int i = 0; i < kClients; ++i) {
    std::string bytes;
    for (int k = 0; k < 1 + i % 7; ++k) {
      absl::StrAppend(&bytes, "client-", i, "-part-", k, ";");
    }
    ASSERT_TRUE(clients[i].SendAll(bytes).ok());
    // A client port may repeat towards another node: key by both ends.
    const std::string key =
        absl::StrCat(LocalAddressOf(clients[i]), "|", listen(i % 3));
    sent[key] = bytes;
    node_of[key] = std::string(1, 'a' + i % 3);
  }
  for (auto& c : clients) c.Close();

  auto all_closed = [&](const Subscriber::State& s) {
    return s.closed.size() >= static_cast<size_t>(kClients);
  };
  uint64_t last = 0;
  for (auto& sub : subs) {
    ASSERT_TRUE(sub->WaitUntil(all_closed, Deadline(absl::Seconds(60))))
        << "closed " << sub->Snapshot().closed.size();
    last = std::max(last, sub->Snapshot().covered_seq);
  }
  for (auto& sub : subs) {
    ASSERT_TRUE(sub->WaitUntil(
        [&](const Subscriber::State& s) { return s.covered_seq >= last; },
        Deadline()));
  }
  const Subscriber::State a = subs[0]->Snapshot();
  const std::vector<std::string> want = Prefix(a, last);
  EXPECT_EQ(Prefix(subs[1]->Snapshot(), last), want) << "node b differs";
  EXPECT_EQ(Prefix(subs[2]->Snapshot(), last), want) << "node c differs";
  EXPECT_TRUE(a.gaps.empty());

  // Contiguous seqs, every connection byte-exact and closed once, its node
  // named.
  std::map<uint64_t, std::string> got;
  std::map<uint64_t, std::string> remote;
  std::map<uint64_t, int> closes;
  uint64_t prev = from;
  for (const auto& e : a.events) {
    if (e.seq() > last) break;
    EXPECT_EQ(e.seq(), prev + 1);
    prev = e.seq();
    if (e.has_opened()) {
      const std::string key = absl::StrCat(e.opened().remote_address(), "|",
                                           e.opened().local_address());
      remote[e.connection_id()] = key;
      EXPECT_EQ(e.node(), node_of[key]);
    }
    if (e.has_data()) got[e.connection_id()] += e.data().payload();
    if (e.has_closed()) ++closes[e.connection_id()];
  }
  ASSERT_EQ(remote.size(), static_cast<size_t>(kClients));
  for (const auto& [id, addr] : remote) {
    EXPECT_EQ(got[id], sent[addr]) << "connection " << id;
    EXPECT_EQ(closes[id], 1) << "connection " << id;
  }
}

TEST_F(ClusterTest, ResumeOnAnotherNodeContinuesExactly) {
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  req.set_resume_after_seq(Stats(0).cluster_head_seq());
  auto full = Subscriber::Start(grpc(2), req);
  ASSERT_TRUE(full->WaitStarted(Deadline()).ok());
  auto first = Subscriber::Start(grpc(0), req);
  auto started = first->WaitStarted(Deadline());
  ASSERT_TRUE(started.ok());
  auto c = ConnectTcp(listen(1));
  ASSERT_TRUE(c.ok());
  uint64_t sent = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string m = absl::StrCat("m", i, ";");
    ASSERT_TRUE(c->SendAll(m).ok());
    sent += m.size();
    // Wait for each, so the stream has many events to cut between.
    ASSERT_TRUE(first->WaitUntil(
        [&](const Subscriber::State& s) { return s.data_bytes >= sent; },
        Deadline()));
  }
  first->Cancel();
  first->WaitDone(Deadline());
  const uint64_t cut = first->Snapshot().covered_seq;
  for (int i = 20; i < 30; ++i) {
    ASSERT_TRUE(c->SendAll(absl::StrCat("m", i, ";")).ok());
  }
  c->Close();
  fanin::v1::SubscribeRequest resume = testing::LosslessRequest();
  resume.set_resume_after_seq(cut);
  resume.set_resume_epoch(started->server_epoch());
  auto second = Subscriber::Start(grpc(1), resume);
  ASSERT_TRUE(second->WaitStarted(Deadline()).ok());
  EXPECT_EQ(second->WaitStarted(Deadline())->server_epoch(),
            started->server_epoch());
  ASSERT_TRUE(full->WaitUntil(
      [](const Subscriber::State& s) { return !s.closed.empty(); },
      Deadline()));
  const uint64_t end = full->Snapshot().covered_seq;
  ASSERT_TRUE(second->WaitUntil(
      [&](const Subscriber::State& s) { return s.covered_seq >= end; },
      Deadline()));
  std::vector<std::string> want, got;
  for (const auto& e : full->Snapshot().events) {
    if (e.seq() > cut && e.seq() <= end) want.push_back(e.SerializeAsString());
  }
  for (const auto& e : second->Snapshot().events) {
    if (e.seq() <= end) got.push_back(e.SerializeAsString());
  }
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(got, want);
  EXPECT_TRUE(second->Snapshot().gaps.empty());
}

TEST_F(ClusterTest, RequestsReachTheOwningNodeFromAnyNode) {
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  auto sub = Subscriber::Start(grpc(0), req);
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
  // One push client on each node, one pull client on node c.
  std::vector<TcpClient> clients;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(ConnectTcp(listen(i)).value());
    ids.push_back(sub->WaitOpened(clients.back().fd(), Deadline()));
    ASSERT_NE(ids.back(), 0u);
  }
  TcpClient pull = ConnectTcp(listen(2, "pull")).value();
  const uint64_t pull_id = sub->WaitOpened(pull.fd(), Deadline());
  ASSERT_NE(pull_id, 0u);

  // Write to node a's client through node b: the bytes arrive.
  {
    fanin::v1::WriteRequest w;
    w.set_connection_id(ids[0]);
    w.set_data("through-b");
    fanin::v1::WriteResponse r;
    auto ctx = NewContext();
    grpc::Status s = NewStub(grpc(1))->Write(ctx.get(), w, &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(clients[0].RecvExactly(9).value(), "through-b");
  }
  // Read node c's pull connection through node a.
  {
    ASSERT_TRUE(pull.SendAll("pulled").ok());
    ASSERT_TRUE(
        sub->WaitEvent(pull_id, fanin::v1::EVENT_KIND_READABLE, Deadline())
            .has_value());
    fanin::v1::ReadRequest rr;
    rr.set_connection_id(pull_id);
    fanin::v1::ReadResponse r;
    auto ctx = NewContext();
    grpc::Status s = NewStub(grpc(0))->Read(ctx.get(), rr, &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(r.data(), "pulled");
  }
  // List from node c, two per page: every connection once, in id order.
  {
    std::vector<uint64_t> listed;
    std::set<std::string> nodes_seen;
    std::string token;
    int pages = 0;
    do {
      fanin::v1::ListConnectionsRequest lr;
      lr.set_page_size(2);
      lr.set_page_token(token);
      fanin::v1::ListConnectionsResponse r;
      auto ctx = NewContext();
      grpc::Status s = NewStub(grpc(2))->ListConnections(ctx.get(), lr, &r);
      ASSERT_TRUE(s.ok()) << s.error_message();
      for (const auto& c : r.connections()) {
        listed.push_back(c.connection_id());
        nodes_seen.insert(c.node());
      }
      token = r.next_page_token();
      ASSERT_LT(++pages, 10);
    } while (!token.empty());
    std::vector<uint64_t> want = ids;
    want.push_back(pull_id);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(listed, want);
    EXPECT_EQ(nodes_seen, (std::set<std::string>{"a", "b", "c"}));
    // The node filter narrows it.
    fanin::v1::ListConnectionsRequest lr;
    lr.set_node("b");
    fanin::v1::ListConnectionsResponse r;
    auto ctx = NewContext();
    ASSERT_TRUE(NewStub(grpc(0))->ListConnections(ctx.get(), lr, &r).ok());
    ASSERT_EQ(r.connections_size(), 1);
    EXPECT_EQ(r.connections(0).connection_id(), ids[1]);
  }
  // Close node b's client gracefully through node c, abort node c's through
  // node a.
  {
    fanin::v1::CloseConnectionRequest cr;
    cr.set_connection_id(ids[1]);
    fanin::v1::CloseConnectionResponse r;
    auto ctx = NewContext();
    ASSERT_TRUE(NewStub(grpc(2))->CloseConnection(ctx.get(), cr, &r).ok());
    EXPECT_TRUE(clients[1].WaitForPeerClose(Deadline()));
    auto closed = sub->WaitClosed(ids[1], Deadline());
    ASSERT_TRUE(closed.has_value());
    EXPECT_EQ(closed->closed().reason(),
              fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
    EXPECT_EQ(closed->node(), "b");

    cr.set_connection_id(ids[2]);
    cr.set_abort(true);
    auto ctx2 = NewContext();
    ASSERT_TRUE(NewStub(grpc(0))->CloseConnection(ctx2.get(), cr, &r).ok());
    EXPECT_TRUE(clients[2].WaitForPeerClose(Deadline()));
    ASSERT_TRUE(sub->WaitClosed(ids[2], Deadline()).has_value());
  }
  // Closed or unknown ids: NOT_FOUND from any node.
  for (uint64_t id : {ids[1], ids[0] + 1000, uint64_t{7} << 40}) {
    fanin::v1::WriteRequest w;
    w.set_connection_id(id);
    w.set_data("x");
    fanin::v1::WriteResponse r;
    auto ctx = NewContext();
    grpc::Status s = NewStub(grpc(0))->Write(ctx.get(), w, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << id;
  }
}

TEST_F(ClusterTest, NodeFilterAndListNodes) {
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  req.add_nodes("b");
  auto only_b = Subscriber::Start(grpc(0), req);
  ASSERT_TRUE(only_b->WaitStarted(Deadline()).ok());
  auto all = Subscriber::Start(grpc(0), testing::LosslessRequest());
  ASSERT_TRUE(all->WaitStarted(Deadline()).ok());
  std::vector<TcpClient> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(ConnectTcp(listen(i)).value());
    ASSERT_TRUE(clients.back().SendAll("hi").ok());
  }
  for (auto& c : clients) c.Close();
  ASSERT_TRUE(all->WaitUntil(
      [](const Subscriber::State& s) { return s.closed.size() >= 3; },
      Deadline()));
  ASSERT_TRUE(only_b->WaitUntil(
      [](const Subscriber::State& s) { return s.closed.size() >= 1; },
      Deadline()));
  // A node joining shows in order, as a NodeChange.
  auto d = StartNode("d");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(all->WaitUntil(
      [](const Subscriber::State& s) {
        for (const auto& e : s.events) {
          if (e.has_node_change() && e.node() == "d" &&
              e.node_change().state() == fanin::v1::NODE_STATE_JOINED) {
            return true;
          }
        }
        return false;
      },
      Deadline()));
  const auto snapshot = only_b->Snapshot();
  EXPECT_EQ(snapshot.closed.size(), 1u);
  for (const auto& e : snapshot.events) EXPECT_EQ(e.node(), "b");

  fanin::v1::ListNodesResponse nodes;
  auto ctx = NewContext();
  ASSERT_TRUE(NewStub(grpc(1))
                  ->ListNodes(ctx.get(), fanin::v1::ListNodesRequest(), &nodes)
                  .ok());
  std::vector<std::string> names;
  for (const auto& n : nodes.nodes()) {
    names.push_back(n.name());
    EXPECT_EQ(n.state(), fanin::v1::NODE_STATE_UP) << n.name();
    EXPECT_GT(n.incarnation(), 0u);
  }
  EXPECT_THAT(names, ::testing::IsSupersetOf({"a", "b", "c"}));
  EXPECT_EQ(nodes.nodes_size(), 4);
}

// The value of a counter on a node's /metrics; -1 when it cannot be read.
double Metric(const std::string& address, absl::string_view name) {
  auto c = ConnectTcp(address);
  if (!c.ok() || !c->SendAll("GET /metrics HTTP/1.0\r\n\r\n").ok()) return -1;
  auto body = c->RecvUntilEof(Deadline());
  if (!body.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*body, '\n')) {
    if (absl::ConsumePrefix(&line, name) && absl::ConsumePrefix(&line, " ")) {
      double v = -1;
      return absl::SimpleAtod(line, &v) ? v : -1;
    }
  }
  return -1;
}

// A publish whose acknowledgement is lost (the broker paused past the
// publish timeout) is sent again with the same message id: JetStream keeps
// one, so every byte reaches the stream exactly once, in order.
TEST_F(ClusterTest, RepublishAfterATimeoutStoresNoSecondEvent) {
  const std::string metrics =
      absl::StrCat("127.0.0.1:", testing::FreeLoopbackPort());
  auto d = StartNode(
      "d", {"--cluster_request_timeout=300ms", "--metrics_address=" + metrics});
  ASSERT_TRUE(d.ok()) << d.status();
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  req.add_kinds(fanin::v1::EVENT_KIND_DATA);
  req.set_resume_after_seq(Stats(0).cluster_head_seq());
  auto sub = Subscriber::Start(grpc(0), req);
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
  auto c = ConnectTcp((*d)->listen_address().value());
  ASSERT_TRUE(c.ok());
  std::string sent;
  auto send = [&](int i) {
    const std::string m = absl::StrCat("m", i, ";");
    ASSERT_TRUE(c->SendAll(m).ok());
    sent += m;
  };
  for (int i = 0; i < 10; ++i) {
    send(i);
    ASSERT_TRUE(sub->WaitUntil(
        [&](const Subscriber::State& s) { return s.data_bytes >= sent.size(); },
        Deadline()));
  }
  const double retries_before =
      Metric(metrics, "fanin_cluster_publish_retries_total");
  ASSERT_GE(retries_before, 0);
  ASSERT_TRUE(nats_->Pause().ok());
  for (int i = 10; i < 30; ++i) send(i);
  // Wait until node d has timed out and retried at least twice.
  const bool retried = testing::WaitFor(
      [&] {
        return Metric(metrics, "fanin_cluster_publish_retries_total") >=
               retries_before + 2;
      },
      Deadline());
  ASSERT_TRUE(nats_->Resume().ok());
  ASSERT_TRUE(retried) << "retries before " << retries_before << ", now "
                       << Metric(metrics, "fanin_cluster_publish_retries_total")
                       << "; buffer bytes "
                       << Metric(metrics, "fanin_cluster_buffer_bytes")
                       << ", received bytes "
                       << Metric(metrics, "fanin_bytes_received_total")
                       << ", published "
                       << Metric(metrics,
                                 "fanin_cluster_published_events_total");
  for (int i = 30; i < 40; ++i) send(i);
  ASSERT_TRUE(sub->WaitUntil(
      [&](const Subscriber::State& s) { return s.data_bytes >= sent.size(); },
      Deadline(absl::Seconds(60))));
  const auto s = sub->Snapshot();
  std::string got;
  uint64_t prev = 0;
  for (const auto& e : s.events) {
    EXPECT_GT(e.seq(), prev);
    prev = e.seq();
    got += e.data().payload();
  }
  EXPECT_EQ(got, sent) << "a retried batch was stored twice or lost";
  EXPECT_TRUE(s.gaps.empty());
}

// A node keeps only --history_events in memory; older events are read from
// the cluster's stream, so a resume or a slow lossless subscriber loses
// nothing the stream still holds, and never holds back the node's others.
TEST_F(ClusterTest, OlderThanANodesHistoryIsReadFromTheStream) {
  auto e = StartNode("e", {"--history_events=40"});
  ASSERT_TRUE(e.ok()) << e.status();
  const std::string e_grpc = (*e)->grpc_address();
  const uint64_t from = Stats(0).cluster_head_seq();
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  req.set_resume_after_seq(from);
  req.set_max_batch_events(8);
  // Held from the start; resume_after_seq makes its start exact anyway.
  auto held = Subscriber::Start(e_grpc, req, /*held=*/true);
  fanin::v1::SubscribeRequest lossy = req;
  lossy.set_delivery(fanin::v1::DELIVERY_LOSSY);
  auto other = Subscriber::Start(e_grpc, lossy);
  ASSERT_TRUE(other->WaitStarted(Deadline()).ok());
  // 400 events, ten times the node's history, while `held` reads nothing.
  auto c = ConnectTcp(listen(1));
  ASSERT_TRUE(c.ok());
  std::string sent;
  for (int i = 0; i < 398; ++i) {
    const std::string m = absl::StrCat("e", i, ";");
    ASSERT_TRUE(c->SendAll(m).ok());
    sent += m;
    // Each send its own event: wait until the other subscriber has it.
    ASSERT_TRUE(other->WaitUntil(
        [&](const Subscriber::State& s) { return s.data_bytes >= sent.size(); },
        Deadline()));
  }
  c->Close();
  // The other subscriber of node e was not held back.
  ASSERT_TRUE(other->WaitUntil(
      [](const Subscriber::State& s) { return !s.closed.empty(); },
      Deadline()));
  held->Release();
  ASSERT_TRUE(held->WaitUntil(
      [](const Subscriber::State& s) { return !s.closed.empty(); },
      Deadline(absl::Seconds(60))));
  const auto h = held->Snapshot();
  EXPECT_TRUE(h.gaps.empty());
  std::string got;
  uint64_t prev = from;
  for (const auto& ev : h.events) {
    EXPECT_EQ(ev.seq(), prev + 1) << "every seq, in order";
    prev = ev.seq();
    if (ev.has_data()) got += ev.data().payload();
  }
  EXPECT_EQ(got, sent);
  EXPECT_GT(h.events.size(), 400u) << "ten times node e's history";
  // A subscriber resuming from the start on node e (40 events of history)
  // gets the same events as one on node a.
  fanin::v1::SubscribeRequest again = testing::LosslessRequest();
  again.set_resume_after_seq(from);
  again.set_resume_epoch(h.started->server_epoch());
  auto late = Subscriber::Start(e_grpc, again);
  ASSERT_TRUE(late->WaitUntil(
      [&](const Subscriber::State& s) { return s.covered_seq >= prev; },
      Deadline()));
  std::vector<std::string> want, have;
  for (const auto& ev : h.events) want.push_back(ev.SerializeAsString());
  for (const auto& ev : late->Snapshot().events) {
    if (ev.seq() <= prev) have.push_back(ev.SerializeAsString());
  }
  EXPECT_EQ(have, want);
}

// What retention removed from the stream is the only loss, and it is an
// exact Gap: the seqs are contiguous, so the first retained message's base
// says how many went.
TEST_F(ClusterTest, ExpiredStreamHistoryIsAnExactGap) {
  auto f = StartNode("f", {"--cluster_name=tiny", "--history_events=10",
                           "--cluster_stream_max_bytes=6000"});
  ASSERT_TRUE(f.ok()) << f.status();
  auto live =
      Subscriber::Start((*f)->grpc_address(), testing::LosslessRequest());
  auto started = live->WaitStarted(Deadline());
  ASSERT_TRUE(started.ok());
  auto c = ConnectTcp((*f)->listen_address().value());
  ASSERT_TRUE(c.ok());
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(c->SendAll(absl::StrCat("t", i, ";")).ok());
    // One event per message: wait for each.
    ASSERT_TRUE(live->WaitUntil(
        [&](const Subscriber::State& s) {
          return s.events.size() >= static_cast<size_t>(i + 2);
        },
        Deadline()));
  }
  const uint64_t head = live->Snapshot().covered_seq;
  fanin::v1::SubscribeRequest req = testing::LosslessRequest();
  req.set_resume_after_seq(1);
  req.set_resume_epoch(started->server_epoch());
  auto late = Subscriber::Start((*f)->grpc_address(), req);
  ASSERT_TRUE(late->WaitUntil(
      [&](const Subscriber::State& s) { return s.covered_seq >= head; },
      Deadline()));
  const auto s = late->Snapshot();
  ASSERT_EQ(s.gaps.size(), 1u);
  const fanin::v1::Gap& gap = s.gaps[0];
  EXPECT_EQ(gap.reason(), fanin::v1::GAP_REASON_HISTORY_EXPIRED);
  EXPECT_EQ(gap.first_seq(), 2u);
  EXPECT_GT(gap.last_seq(), 20u) << "retention removed early messages";
  EXPECT_GT(head - gap.last_seq(), 30u)
      << "events older than node f's 10 came from the stream";
  EXPECT_EQ(gap.lost(), gap.last_seq() - gap.first_seq() + 1);
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.front().seq(), gap.last_seq() + 1);
  uint64_t prev = gap.last_seq();
  for (const auto& e : s.events) {
    if (e.seq() > head) break;
    EXPECT_EQ(e.seq(), prev + 1);
    prev = e.seq();
  }
  EXPECT_EQ(prev, head);
}

TEST_F(ClusterTest, StartUpErrorsAreClear) {
  auto run = [](std::vector<std::string> argv) {
    argv.insert(argv.begin(), "server/fanin_server");
    auto r = testing::RunCommand(argv, "", {.timeout = absl::Seconds(30)});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : testing::CommandResult{};
  };
  // The name of a live node.
  auto same = run({"--cluster_nats=" + nats_->url(), "--node_name=a",
                   "--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0"});
  EXPECT_NE(same.exit_code, 0);
  EXPECT_THAT(same.stderr_data, HasSubstr("in use by a live node"));
  // Nothing listens there.
  const int dead = testing::FreeLoopbackPort();
  auto unreachable =
      run({absl::StrCat("--cluster_nats=nats://127.0.0.1:", dead),
           "--cluster_connect_timeout=1s", "--listen=127.0.0.1:0",
           "--grpc_address=127.0.0.1:0"});
  EXPECT_NE(unreachable.exit_code, 0);
  EXPECT_THAT(unreachable.stderr_data,
              HasSubstr("cannot reach the NATS broker"));
  // Not a URL.
  auto bad = run({"--cluster_nats=127.0.0.1:4222"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.stderr_data, HasSubstr("is not a NATS URL"));
}

}  // namespace
}  // namespace fanin
