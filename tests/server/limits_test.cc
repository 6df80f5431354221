// Connection limits and the idle timeout on every poller.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::v1::Event;

class LimitsTest : public ::testing::TestWithParam<reactor::PollerKind> {
 protected:
  void Start(ServerConfig config) {
    server_ = StartServer(std::move(config));
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(server_->grpc_address());
    watch_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
  }

  fanin::v1::GetStatsResponse Stats() {
    fanin::v1::GetStatsResponse stats;
    auto context = NewContext();
    grpc::Status s = stub_->GetStats(context.get(), {}, &stats);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return stats;
  }

  // The client is served: its bytes arrive as Data and a Write reaches it.
  void ExpectServed(TcpClient& client, uint64_t id, const std::string& word) {
    ASSERT_TRUE(client.SendAll(word).ok());
    ASSERT_TRUE(watch_->WaitUntil(
        [&](const Subscriber::State& s) {
          return PayloadOf(s.events, id).size() >= word.size();
        },
        Deadline()));
    EXPECT_EQ(PayloadOf(watch_->Snapshot().events, id), word);
    fanin::v1::WriteRequest w;
    w.set_connection_id(id);
    w.set_data(word);
    fanin::v1::WriteResponse response;
    auto context = NewContext();
    ASSERT_TRUE(stub_->Write(context.get(), w, &response).ok());
    auto echoed = client.RecvExactly(word.size(), Deadline());
    ASSERT_TRUE(echoed.ok()) << echoed.status();
    EXPECT_EQ(*echoed, word);
  }

  // The client's connection was refused: Opened then Closed(REJECTED), and
  // the socket is closed under it.
  void ExpectRejected(TcpClient& client) {
    uint64_t id = watch_->WaitOpened(client.fd(), Deadline());
    ASSERT_NE(id, 0u);
    auto closed = watch_->WaitClosed(id, Deadline());
    ASSERT_TRUE(closed.has_value());
    EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_REJECTED);
    EXPECT_NE(closed->closed().detail().find("max_connections"),
              std::string::npos)
        << closed->closed().detail();
    std::vector<Event> mine = EventsOf(watch_->Snapshot().events, id);
    ASSERT_EQ(mine.size(), 2u);
    EXPECT_TRUE(mine[0].has_opened());
    EXPECT_TRUE(client.WaitForPeerClose(Deadline()))
        << "the rejected socket stayed open";
  }

  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<Subscriber> watch_;
};

// --loops=0 (the default) runs one loop per core less one, at least one, and
// serves clients and subscribers with it.
TEST_P(LimitsTest, DefaultLoopsLeaveACoreForGrpc) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.loops = 0;
  Start(config);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  EXPECT_EQ(server_->core()->loops()->size(), std::max(1, cores - 1));
  EXPECT_EQ(core::DefaultLoops(), std::max(1, cores - 1));
  auto client = ConnectTcp(ListenAddress(*server_, "default"));
  ASSERT_TRUE(client.ok());
  uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  ExpectServed(*client, id, "one loop is enough");
}

TEST_P(LimitsTest, MaxConnectionsRejectsTheFourth) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.max_connections = 3;
  Start(config);
  const std::string listen = ListenAddress(*server_, "default");
  std::vector<TcpClient> clients;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto c = ConnectTcp(listen);
    ASSERT_TRUE(c.ok());
    ids.push_back(watch_->WaitOpened(c->fd(), Deadline()));
    ASSERT_NE(ids.back(), 0u);
    clients.push_back(*std::move(c));
  }
  auto fourth = ConnectTcp(listen);
  ASSERT_TRUE(fourth.ok());
  ExpectRejected(*fourth);
  fanin::v1::GetStatsResponse stats = Stats();
  EXPECT_EQ(stats.connections_rejected(), 1u);
  EXPECT_EQ(stats.connections_open(), 3u);
  EXPECT_EQ(stats.connections_accepted(), 3u);
  for (int i = 0; i < 3; ++i) ExpectServed(clients[i], ids[i], "still fine");

  // A slot freed is a slot usable again.
  clients[0].Close();
  ASSERT_TRUE(watch_->WaitClosed(ids[0], Deadline()).has_value());
  auto fifth = ConnectTcp(listen);
  ASSERT_TRUE(fifth.ok());
  uint64_t id = watch_->WaitOpened(fifth->fd(), Deadline());
  ASSERT_NE(id, 0u);
  ExpectServed(*fifth, id, "welcome");
  EXPECT_EQ(Stats().connections_rejected(), 1u);
}

TEST_P(LimitsTest, MaxConnectionsPerIp) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.max_connections_per_ip = 2;
  Start(config);
  const std::string listen = ListenAddress(*server_, "default");
  std::vector<TcpClient> clients;
  std::vector<uint64_t> ids;
  for (const char* source : {"127.0.0.1", "127.0.0.1", "127.0.0.2"}) {
    absl::StatusOr<TcpClient> c = ConnectFrom(source, listen);
    ASSERT_TRUE(c.ok()) << c.status();
    ids.push_back(watch_->WaitOpened(c->fd(), Deadline()));
    ASSERT_NE(ids.back(), 0u);
    clients.push_back(*std::move(c));
  }
  absl::StatusOr<TcpClient> third = ConnectFrom("127.0.0.1", listen);
  ASSERT_TRUE(third.ok()) << third.status();
  ExpectRejected(*third);
  EXPECT_EQ(Stats().connections_rejected(), 1u);
  for (size_t i = 0; i < clients.size(); ++i) {
    ExpectServed(clients[i], ids[i], "per ip ok");
  }
  EXPECT_EQ(Stats().connections_open(), 3u);
}

TEST_P(LimitsTest, IdleTimeoutClosesASilentConnection) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.idle_timeout = absl::Milliseconds(300);
  Start(config);
  auto client = ConnectTcp(ListenAddress(*server_, "default"));
  ASSERT_TRUE(client.ok());
  uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  auto closed = watch_->WaitClosed(id, Deadline());
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_IDLE_TIMEOUT)
      << closed->closed().detail();
  EXPECT_GE(
      absl::FromUnixNanos(closed->time_unix_nano()) -
          absl::FromUnixNanos(
              EventsOf(watch_->Snapshot().events, id)[0].time_unix_nano()),
      absl::Milliseconds(300))
      << "closed before the timeout";
  EXPECT_TRUE(client->WaitForPeerClose(Deadline()));
}

INSTANTIATE_TEST_SUITE_P(AllPollers, LimitsTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
