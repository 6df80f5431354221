// Every limit a hostile client could push against, set through fanin_server's
// flags (or FANIN_* variables) on the real binary, hit, and reported: in the
// RPC status, in the CLOSED event and in the Prometheus endpoint.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::ServerProcess;
using fanin::testing::TcpClient;
using fanin::testing::WaitFor;
using grpc::StatusCode;

class LimitsFlagsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags,
             std::vector<std::pair<std::string, std::string>> env = {}) {
    metrics_ = absl::StrCat("127.0.0.1:", FreePort());
    flags.push_back("--grpc_address=127.0.0.1:0");
    flags.push_back("--listen=127.0.0.1:0");
    flags.push_back("--loops=2");
    flags.push_back(absl::StrCat("--metrics_address=", metrics_));
    ServerProcess::Options options{.flags = flags};
    options.process.env = std::move(env);
    auto server = ServerProcess::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    raw_ = *server_->listen_address();
    stub_ = fanin::v1::FanIn::NewStub(NewChannel(server_->grpc_address()));
    watch_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
  }
  void TearDown() override {
    watch_.reset();
    if (server_) {
      auto code = server_->Stop();
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0);
    }
  }

  // Waits until the metric reaches `want`; its last value.
  double WaitMetric(const std::string& series, double want) {
    double value = -1;
    WaitFor(
        [&] {
          auto text = HttpGet(metrics_, "/metrics");
          if (!text.ok()) return false;
          auto v = MetricValue(*text, series);
          if (v.ok()) value = *v;
          return v.ok() && *v == want;
        },
        Deadline());
    return value;
  }

  // Connects and waits for the server's verdict: the Closed event of a
  // rejected connection, or none (accepted) once its Opened arrived.
  uint64_t Opened(const TcpClient& c) {
    return watch_->WaitOpened(c.fd(), Deadline());
  }
  std::optional<fanin::v1::Closed> WaitClosed(uint64_t id) {
    std::optional<fanin::v1::Event> event = watch_->WaitClosed(id, Deadline());
    if (!event.has_value()) return std::nullopt;
    return event->closed();
  }

  std::string metrics_, raw_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<Subscriber> watch_;
};

TEST_F(LimitsFlagsTest, MaxConnections) {
  Start({"--max_connections=3"});
  std::vector<TcpClient> held;
  for (int i = 0; i < 3; ++i) {
    auto c = ConnectTcp(raw_);
    ASSERT_TRUE(c.ok());
    ASSERT_NE(Opened(*c), 0u);
    held.push_back(*std::move(c));
  }
  auto extra = ConnectTcp(raw_);
  ASSERT_TRUE(extra.ok());
  uint64_t id = Opened(*extra);
  ASSERT_NE(id, 0u);
  auto closed = WaitClosed(id);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->reason(), fanin::v1::CLOSE_REASON_REJECTED);
  EXPECT_TRUE(absl::StrContains(closed->detail(), "max_connections"))
      << closed->detail();
  EXPECT_TRUE(extra->WaitForPeerClose(Deadline()));
  EXPECT_EQ(
      WaitMetric("fanin_connections_rejected_total{reason=\"max_connections\"}",
                 1),
      1);
  EXPECT_EQ(WaitMetric("fanin_connections_open", 3), 3);
  // The held ones are untouched.
  EXPECT_TRUE(watch_->Snapshot().closed.size() == 1);
}

TEST_F(LimitsFlagsTest, MaxConnectionsPerIpFromTheEnvironment) {
  Start({}, {{"FANIN_MAX_CONNECTIONS_PER_IP", "2"}});
  std::vector<TcpClient> held;
  for (int i = 0; i < 2; ++i) {
    auto c = ConnectFrom("127.0.0.1", raw_);
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_NE(Opened(*c), 0u);
    held.push_back(*std::move(c));
  }
  auto third = ConnectFrom("127.0.0.1", raw_);
  ASSERT_TRUE(third.ok()) << third.status();
  uint64_t id = Opened(*third);
  ASSERT_NE(id, 0u);
  auto closed = WaitClosed(id);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->reason(), fanin::v1::CLOSE_REASON_REJECTED);
  EXPECT_TRUE(absl::StrContains(closed->detail(), "max_connections_per_ip"))
      << closed->detail();
  // Another source address is still welcome.
  auto other = ConnectFrom("127.0.0.2", raw_);
  ASSERT_TRUE(other.ok()) << other.status();
  uint64_t other_id = Opened(*other);
  ASSERT_NE(other_id, 0u);
  EXPECT_EQ(WaitMetric("fanin_connections_rejected_total{reason=\"max_"
                       "connections_per_ip\"}",
                       1),
            1);
  EXPECT_EQ(watch_->Snapshot().closed.count(other_id), 0u);
}

TEST_F(LimitsFlagsTest, MaxSubscribers) {
  Start({"--max_subscribers=2"});  // watch_ is the first
  auto second = Subscriber::Start(server_->grpc_address(), LosslessRequest());
  ASSERT_TRUE(second->WaitStarted(Deadline()).ok());
  auto third = Subscriber::Start(server_->grpc_address(), LosslessRequest());
  grpc::Status refused = third->WaitDone(Deadline());
  EXPECT_EQ(refused.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "max_subscribers"))
      << refused.error_message();
  EXPECT_EQ(WaitMetric("fanin_subscriber_streams", 2), 2);
}

TEST_F(LimitsFlagsTest, MaxOutboundBytesAndGrpcMessageSize) {
  Start({"--max_outbound_bytes=65536", "--max_grpc_message_bytes=131072"});
  auto client = ConnectTcp(raw_);
  ASSERT_TRUE(client.ok());
  uint64_t id = Opened(*client);
  ASSERT_NE(id, 0u);
  auto write = [&](size_t n) {
    fanin::v1::WriteRequest req;
    req.set_connection_id(id);
    req.set_data(std::string(n, 'w'));
    fanin::v1::WriteResponse r;
    return stub_->Write(NewContext().get(), req, &r);
  };
  // Over the outbound buffer (but within the message size): refused whole.
  grpc::Status big = write(100000);
  EXPECT_EQ(big.error_code(), StatusCode::RESOURCE_EXHAUSTED)
      << big.error_message();
  // Over the gRPC message size: refused by gRPC before fanin sees it.
  grpc::Status huge = write(200000);
  EXPECT_EQ(huge.error_code(), StatusCode::RESOURCE_EXHAUSTED)
      << huge.error_message();
  // A client that never reads: writes pile up to the limit, then fail.
  int accepted = 0;
  grpc::Status last;
  for (int i = 0; i < 2000 && last.ok(); ++i) {
    last = write(32768);
    if (last.ok()) ++accepted;
  }
  EXPECT_EQ(last.error_code(), StatusCode::RESOURCE_EXHAUSTED)
      << last.error_message();
  EXPECT_GT(accepted, 0);
  // Exactly what was accepted arrives; nothing of the refused writes.
  std::string got;
  while (got.size() < static_cast<size_t>(accepted) * 32768) {
    auto more = client->Recv(1 << 20, Deadline());
    ASSERT_TRUE(more.ok()) << more.status();
    ASSERT_FALSE(more->empty());
    got += *more;
  }
  EXPECT_EQ(got.size(), static_cast<size_t>(accepted) * 32768);
  auto extra = client->Recv(1, absl::Now() + absl::Milliseconds(200));
  EXPECT_FALSE(extra.ok());
}

TEST_F(LimitsFlagsTest, IdleTimeout) {
  Start({"--idle_timeout=400ms"});
  const absl::Time start = absl::Now();
  auto silent = ConnectTcp(raw_);
  ASSERT_TRUE(silent.ok());
  uint64_t id = Opened(*silent);
  ASSERT_NE(id, 0u);
  auto closed = WaitClosed(id);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->reason(), fanin::v1::CLOSE_REASON_IDLE_TIMEOUT);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  EXPECT_TRUE(silent->WaitForPeerClose(Deadline()));
  EXPECT_EQ(WaitMetric("fanin_events_total{kind=\"closed\"}", 1), 1);
}

TEST_F(LimitsFlagsTest, BadLimitFlagsAreRefused) {
  for (const char* flag :
       {"--max_connections=0", "--max_connections_per_ip=-1",
        "--max_grpc_message_bytes=0", "--max_subscribers=0",
        "--max_outbound_bytes=-5", "--log_level=loud", "--log_format=xml",
        "--tls_client_role=admin", "--tls_cert=/x.pem",
        "--tls_client_ca=/ca.pem", "--drain_timeout=0s"}) {
    auto result = fanin::testing::RunCommand({"server/fanin_server",
                                              "--grpc_address=127.0.0.1:0",
                                              "--listen=127.0.0.1:0", flag});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 2) << flag << ": " << result->stderr_data;
  }
}

}  // namespace
}  // namespace fanin::opstest
