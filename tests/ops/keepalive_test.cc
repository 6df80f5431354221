// Mesh transport settings: a subscriber that vanished (its process stopped:
// the kernel still ACKs TCP, nothing answers HTTP/2 pings) is noticed by the
// server's keepalive within keepalive_time + keepalive_timeout and its
// subscription ends; a healthy idle subscriber answers the pings and stays.
#include <signal.h>

#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/subprocess.h"

namespace fanin::opstest {
namespace {

using fanin::testing::Deadline;
using fanin::testing::Subprocess;
using fanin::testing::WaitFor;

TEST(KeepaliveTest, VanishedSubscriberIsNoticedWithinTheBound) {
  const absl::Duration kTime = absl::Milliseconds(500);
  const absl::Duration kTimeout = absl::Milliseconds(500);
  ServerConfig config;
  config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
  config.core.loops = 1;
  config.grpc_address = net::Endpoint::Loopback(0);
  config.drain_timeout = absl::Seconds(2);
  config.transport.keepalive_time = kTime;
  config.transport.keepalive_timeout = kTimeout;
  auto server = FaninServer::Start(std::move(config));
  ASSERT_TRUE(server.ok()) << server.status();
  auto subscribers = [&] { return (*server)->hub()->GetStats().subscribers; };

  // The real CLI as the subscriber, in a process of its own.
  auto watch = Subprocess::Start(
      {"client/fanin", "watch", "--server=" + (*server)->grpc_address()},
      {.capture_output = false});
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(WaitFor([&] { return subscribers() == 1; }, Deadline()));

  // Healthy but idle for several keepalive periods: it answers and stays.
  EXPECT_FALSE(WaitFor([&] { return subscribers() == 0; },
                       absl::Now() + 4 * (kTime + kTimeout)))
      << "a healthy idle subscriber was cut";

  ASSERT_TRUE((*watch)->Signal(SIGSTOP).ok());
  const absl::Time stopped = absl::Now();
  // The bound is kTime + kTimeout (1 s); allow for a loaded machine.
  ASSERT_TRUE(
      WaitFor([&] { return subscribers() == 0; }, stopped + absl::Seconds(10)))
      << "the stopped subscriber is still subscribed";
  const absl::Duration noticed = absl::Now() - stopped;
  EXPECT_LT(noticed, 3 * (kTime + kTimeout)) << noticed;
  (*watch)->Signal(SIGCONT).IgnoreError();
  (*watch)->Signal(SIGKILL).IgnoreError();
}

}  // namespace
}  // namespace fanin::opstest
