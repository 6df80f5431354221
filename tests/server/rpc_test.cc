// The unary side of the API on every poller: ListConnections paging and
// filters, GetStats counters, ListNodes, health, reflection and the
// subscriber limit.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "server/reactor/poller.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;

class RpcTest : public ::testing::TestWithParam<reactor::PollerKind> {
 protected:
  void Start(ServerConfig config) {
    server_ = StartServer(std::move(config));
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(server_->grpc_address());
  }

  grpc::Status List(const std::string& listener, uint32_t page_size,
                    const std::string& token,
                    fanin::v1::ListConnectionsResponse* response) {
    fanin::v1::ListConnectionsRequest request;
    request.set_listener(listener);
    request.set_page_size(page_size);
    request.set_page_token(token);
    auto context = NewContext();
    return stub_->ListConnections(context.get(), request, response);
  }

  // Every page, following next_page_token; checks the paging contract.
  std::vector<fanin::v1::Connection> ListAll(const std::string& listener,
                                             uint32_t page_size,
                                             size_t expect_per_page) {
    std::vector<fanin::v1::Connection> out;
    std::string token;
    for (int page = 0; page < 100; ++page) {
      fanin::v1::ListConnectionsResponse response;
      grpc::Status s = List(listener, page_size, token, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      EXPECT_LE(static_cast<size_t>(response.connections_size()),
                expect_per_page);
      if (!response.next_page_token().empty()) {
        EXPECT_EQ(static_cast<size_t>(response.connections_size()),
                  expect_per_page)
            << "only the last page may be short";
      }
      for (const auto& c : response.connections()) out.push_back(c);
      token = response.next_page_token();
      if (token.empty()) break;
    }
    EXPECT_TRUE(token.empty()) << "paging did not end";
    return out;
  }

  fanin::v1::GetStatsResponse Stats() {
    fanin::v1::GetStatsResponse stats;
    auto context = NewContext();
    grpc::Status s = stub_->GetStats(context.get(), {}, &stats);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return stats;
  }

  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
};

TEST_P(RpcTest, ListConnectionsPagesEveryConnectionOnce) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.listen.push_back({"other", net::Endpoint::Loopback(0)});
  Start(config);
  auto watch = Subscriber::Start(server_->grpc_address(), LosslessRequest());
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());
  constexpr int kDefault = 150, kOther = 100;
  std::vector<TcpClient> clients;
  // By "remote|local": clients of different listeners may share a port.
  absl::flat_hash_map<std::string, std::string> listener_of;
  for (int i = 0; i < kDefault + kOther; ++i) {
    const char* listener = i < kDefault ? "default" : "other";
    auto c = ConnectTcp(ListenAddress(*server_, listener));
    ASSERT_TRUE(c.ok()) << c.status();
    listener_of[absl::StrCat(LocalAddressOf(c->fd()), "|",
                             ListenAddress(*server_, listener))] = listener;
    clients.push_back(*std::move(c));
  }
  ASSERT_TRUE(watch->WaitUntil(
      [](const Subscriber::State& s) {
        return s.opened.size() >= kDefault + kOther;
      },
      Deadline()));
  Subscriber::State state = watch->Snapshot();

  std::vector<fanin::v1::Connection> all = ListAll("", 100, 100);
  ASSERT_EQ(all.size(), static_cast<size_t>(kDefault + kOther));
  absl::flat_hash_set<uint64_t> seen;
  for (size_t i = 0; i < all.size(); ++i) {
    const fanin::v1::Connection& c = all[i];
    if (i > 0) {
      EXPECT_LT(all[i - 1].connection_id(), c.connection_id())
          << "ordered by id, each once";
    }
    EXPECT_TRUE(seen.insert(c.connection_id()).second);
    EXPECT_TRUE(state.opened.contains(c.connection_id()));
    auto it = listener_of.find(
        absl::StrCat(c.remote_address(), "|", c.local_address()));
    ASSERT_NE(it, listener_of.end()) << c.remote_address();
    EXPECT_EQ(c.listener(), it->second);
    EXPECT_EQ(c.local_address(), ListenAddress(*server_, c.listener()));
    EXPECT_GT(c.opened_unix_nano(), 0u);
  }

  std::vector<fanin::v1::Connection> other = ListAll("other", 30, 30);
  ASSERT_EQ(other.size(), static_cast<size_t>(kOther));
  for (const auto& c : other) EXPECT_EQ(c.listener(), "other");

  EXPECT_EQ(ListAll("", 0, 100).size(), all.size()) << "0 means 100";
  fanin::v1::ListConnectionsResponse one;
  ASSERT_TRUE(List("", 5000, "", &one).ok());
  EXPECT_EQ(one.connections_size(), kDefault + kOther) << "capped at 1000";
  EXPECT_TRUE(one.next_page_token().empty());
  EXPECT_EQ(one.as_of_seq(), server_->hub()->head_seq());

  fanin::v1::ListConnectionsResponse bad;
  grpc::Status s = List("", 10, "not-a-token", &bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("page_token"), std::string::npos)
      << s.error_message();
  s = List("nope", 10, "", &bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("listener"), std::string::npos)
      << s.error_message();
}

TEST_P(RpcTest, GetStatsCountersMove) {
  Start(BaseConfig(GetParam()));
  fanin::v1::GetStatsResponse before = Stats();
  EXPECT_EQ(before.poller(), reactor::PollerKindName(GetParam()));
  EXPECT_EQ(before.connections_open(), 0u);
  EXPECT_EQ(before.connections_accepted(), 0u);
  EXPECT_EQ(before.events_published(), 0u);
  EXPECT_EQ(before.head_seq(), 0u);
  EXPECT_EQ(before.oldest_seq(), 0u);
  EXPECT_EQ(before.subscribers(), 0u);

  auto watch = Subscriber::Start(server_->grpc_address(), LosslessRequest());
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());
  std::vector<TcpClient> clients;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto c = ConnectTcp(ListenAddress(*server_, "default"));
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->SendAll(std::string(100, 'a' + i)).ok());
    ids.push_back(watch->WaitOpened(c->fd(), Deadline()));
    ASSERT_NE(ids.back(), 0u);
    clients.push_back(*std::move(c));
  }
  for (int i = 0; i < 3; ++i) {
    fanin::v1::WriteRequest w;
    w.set_connection_id(ids[i]);
    w.set_data(std::string(50, 'z'));
    fanin::v1::WriteResponse wr;
    auto context = NewContext();
    ASSERT_TRUE(stub_->Write(context.get(), w, &wr).ok());
    ASSERT_TRUE(clients[i].RecvExactly(50, Deadline()).ok());
  }
  // All 300 bytes read before the first client leaves.
  ASSERT_TRUE(watch->WaitUntil(
      [&](const Subscriber::State& s) {
        size_t bytes = 0;
        for (const auto& e : s.events) bytes += e.data().size();
        return bytes >= 300;
      },
      Deadline()));
  clients[0].Close();
  ASSERT_TRUE(watch->WaitClosed(ids[0], Deadline()).has_value());

  fanin::v1::GetStatsResponse after = Stats();
  Subscriber::State s = watch->Snapshot();
  EXPECT_EQ(after.poller(), reactor::PollerKindName(GetParam()));
  EXPECT_EQ(after.connections_open(), 2u);
  EXPECT_EQ(after.connections_accepted(), 3u);
  EXPECT_EQ(after.connections_rejected(), 0u);
  EXPECT_EQ(after.bytes_received(), 300u);
  EXPECT_EQ(after.bytes_sent(), 150u);
  EXPECT_EQ(after.subscribers(), 1u);
  EXPECT_EQ(after.events_published(), s.events.size());
  EXPECT_EQ(after.head_seq(), s.events.back().seq());
  EXPECT_EQ(after.oldest_seq(), 1u);
  EXPECT_EQ(after.events_lost(), 0u);
}

TEST_P(RpcTest, HealthAndReflection) {
  Start(BaseConfig(GetParam()));
  auto overall = HealthCheck(NewChannel(server_->grpc_address()), "");
  ASSERT_TRUE(overall.ok()) << overall.status();
  EXPECT_EQ(*overall, 1) << "SERVING";
  auto fanin_health =
      HealthCheck(NewChannel(server_->grpc_address()), "fanin.v1.FanIn");
  ASSERT_TRUE(fanin_health.ok()) << fanin_health.status();
  EXPECT_EQ(*fanin_health, 1) << "SERVING";
  auto unknown =
      HealthCheck(NewChannel(server_->grpc_address()), "no.such.Service");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);

  auto services = ReflectionListServices(server_->grpc_address());
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_NE(std::find(services->begin(), services->end(), "fanin.v1.FanIn"),
            services->end());
  EXPECT_NE(
      std::find(services->begin(), services->end(), "grpc.health.v1.Health"),
      services->end());
}

// Standalone: one node, this server, with an empty name.
TEST_P(RpcTest, ListNodesNamesThisServer) {
  Start(BaseConfig(GetParam()));
  auto client = ConnectTcp(ListenAddress(*server_, "default"));
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(fanin::testing::WaitFor(
      [&] { return Stats().connections_open() == 1; }, Deadline()));
  const uint64_t before = static_cast<uint64_t>(absl::GetCurrentTimeNanos());
  fanin::v1::ListNodesResponse nodes;
  auto context = NewContext();
  grpc::Status s = stub_->ListNodes(context.get(), {}, &nodes);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(nodes.nodes_size(), 1);
  const fanin::v1::NodeInfo& node = nodes.nodes(0);
  EXPECT_EQ(node.name(), "");
  EXPECT_EQ(node.state(), fanin::v1::NODE_STATE_UP);
  EXPECT_EQ(node.grpc_address(), server_->grpc_address());
  EXPECT_EQ(node.connections_open(), 1u);
  EXPECT_GE(node.last_seen_unix_nano(), before);
  EXPECT_EQ(node.incarnation(), 0u);
}

// Standalone has no node names: a node filter is a clear error, not a
// filter that matches nothing (Subscribe) or everything (ListConnections).
TEST_P(RpcTest, NodeFiltersNeedClusterMode) {
  Start(BaseConfig(GetParam()));
  fanin::v1::SubscribeRequest req;
  req.add_nodes("a");
  auto sub = Subscriber::Start(server_->grpc_address(), req);
  auto started = sub->WaitStarted(Deadline());
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(started.status().message()),
              ::testing::HasSubstr("not in cluster mode"));
  fanin::v1::ListConnectionsRequest list;
  list.set_node("a");
  fanin::v1::ListConnectionsResponse r;
  auto context = NewContext();
  grpc::Status s = stub_->ListConnections(context.get(), list, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("not in cluster mode"));
}

TEST_P(RpcTest, TooManySubscribers) {
  ServerConfig config = BaseConfig(GetParam());
  config.service.max_subscribers = 2;
  Start(config);
  auto a = Subscriber::Start(server_->grpc_address(), {});
  auto b = Subscriber::Start(server_->grpc_address(), {});
  ASSERT_TRUE(a->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(b->WaitStarted(Deadline()).ok());
  auto c = Subscriber::Start(server_->grpc_address(), {});
  auto started = c->WaitStarted(Deadline());
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(started.status().message().find("max_subscribers"),
            std::string::npos);
  EXPECT_EQ(Stats().subscribers(), 2u);
}

INSTANTIATE_TEST_SUITE_P(AllPollers, RpcTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
