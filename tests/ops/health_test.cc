// Health follows the loops: a loop blocked on purpose turns grpc.health.v1
// NOT_SERVING, and releasing it turns it SERVING again; draining turns it
// NOT_SERVING for good.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/subprocess.h"

namespace fanin::opstest {
namespace {

using fanin::testing::WaitFor;

constexpr int kServing = 1;
constexpr int kNotServing = 2;

std::unique_ptr<FaninServer> StartServer() {
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.loops = 2;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.drain_timeout = absl::Seconds(2);
  config.watchdog = {.period = absl::Milliseconds(50),
                     .stuck_after = absl::Milliseconds(300)};
  auto server = FaninServer::Start(std::move(config));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

bool HealthIs(const std::shared_ptr<grpc::Channel>& channel, int want) {
  auto h = HealthCheck(channel);
  return h.ok() && *h == want;
}

TEST(HealthTest, StuckLoopTurnsNotServingUntilReleased) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto channel = NewChannel(server->grpc_address());
  ASSERT_TRUE(HealthIs(channel, kServing));
  // Healthy over several watchdog periods while idle: idle is not stuck.
  const uint64_t before = server->core()->loops()->loop(1)->iterations();
  ASSERT_TRUE(WaitFor(
      [&] {
        return server->core()->loops()->loop(1)->iterations() >= before + 10;
      },
      Deadline()));
  EXPECT_TRUE(HealthIs(channel, kServing));
  EXPECT_TRUE(server->serving());

  for (int round = 0; round < 2; ++round) {
    absl::Notification release, blocked;
    server->core()->loops()->loop(1)->Post([&] {
      blocked.Notify();
      release.WaitForNotification();
    });
    ASSERT_TRUE(blocked.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(
        WaitFor([&] { return HealthIs(channel, kNotServing); }, Deadline()))
        << "round " << round;
    EXPECT_FALSE(server->serving());
    release.Notify();
    EXPECT_TRUE(
        WaitFor([&] { return HealthIs(channel, kServing); }, Deadline()))
        << "round " << round;
    EXPECT_TRUE(server->serving());
  }
}

TEST(HealthTest, ShutdownTurnsNotServingForGood) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto channel = NewChannel(server->grpc_address());
  ASSERT_TRUE(HealthIs(channel, kServing));
  // A stream keeps the server draining a moment; health must already say no.
  auto watch = Subscriber::Start(server->grpc_address(), LosslessRequest());
  ASSERT_TRUE(watch->WaitStarted(Deadline()).ok());
  std::thread stopper([&] { server->Shutdown(); });
  EXPECT_TRUE(WaitFor([&] { return !server->serving(); }, Deadline()));
  stopper.join();
  EXPECT_FALSE(server->serving());
  EXPECT_TRUE(watch->WaitDone(Deadline()).ok());
}

// Start failures after the loops exist unwind cleanly (no crash, no leak under
// ASan) and say what is wrong.
TEST(StartTest, FailuresUnwindAndNameTheCause) {
  // The metrics port is taken.
  auto blocker = FaninServer::Start([] {
    ServerConfig c;
    c.core.listen = {{"default", net::Endpoint::Loopback(0)}};
    c.core.loops = 1;
    c.grpc_address = net::Endpoint::Loopback(0);
    c.metrics_address = net::Endpoint::Loopback(0);
    return c;
  }());
  ASSERT_TRUE(blocker.ok()) << blocker.status();
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.loops = 1;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.metrics_address = *net::Endpoint::Parse((*blocker)->metrics_address());
  auto taken = FaninServer::Start(config);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(taken.status().message(), "metrics"))
      << taken.status();

  config.metrics_address.reset();
  config.tls = {.cert_file = "/nonexistent/server.pem",
                .key_file = "/nonexistent/server.key"};
  auto no_cert = FaninServer::Start(config);
  ASSERT_FALSE(no_cert.ok());
  EXPECT_EQ(no_cert.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_cert.status().message(), "--tls_cert"))
      << no_cert.status();

  config.tls = {};
  config.auth.tokens_file = "/nonexistent/tokens";
  auto no_tokens = FaninServer::Start(config);
  ASSERT_FALSE(no_tokens.ok());
  EXPECT_TRUE(
      absl::StrContains(no_tokens.status().message(), "--auth_tokens_file"))
      << no_tokens.status();
}

}  // namespace
}  // namespace fanin::opstest
