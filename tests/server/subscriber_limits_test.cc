// Bounds on what one subscriber may cost the others, on every poller: a
// lossless subscriber that stops reading is ended after
// --subscriber_stall_timeout (ingestion resumes at once) and can resume
// without loss; lossless backlog across subscribers has one global bound.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/pollers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;

class SubscriberLimitsTest
    : public ::testing::TestWithParam<reactor::PollerKind> {};

// A lossless subscriber stops reading while a client streams 8 MiB: its
// back-pressure pauses the client, then the stall timeout ends the stream
// (ABORTED, naming the flag), the client's bytes flow again, and a new
// subscription resuming after the last seq received gets the rest: together
// the two streams hold every byte once, in order.
TEST_P(SubscriberLimitsTest, StalledLosslessSubscriberIsEndedAndCanResume) {
  ServerConfig config = BaseConfig(GetParam());
  config.hub.lossless_queue_bytes = 256 << 10;
  config.service.subscriber_stall_timeout = absl::Milliseconds(500);
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  auto first = Subscriber::Start(address, LosslessRequest());
  auto started = first->WaitStarted(Deadline());
  ASSERT_TRUE(started.ok()) << started.status();
  auto client = ConnectTcp(ListenAddress(*server, "default"));
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t id = first->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  first->Hold();

  const std::string sent = RandomBytes(8 << 20, 77);
  std::atomic<bool> done{false};
  absl::Status send_status;
  std::thread sender([&] {
    send_status = client->SendAll(sent, Deadline(absl::Seconds(60)));
    done = true;
  });
  // The stalled stream is ended, its back-pressure with it: every byte goes
  // in although the subscriber never reads again before the end.
  sender.join();
  ASSERT_TRUE(send_status.ok()) << send_status;
  ASSERT_TRUE(client->ShutdownWrite().ok());
  EXPECT_TRUE(fanin::testing::WaitFor(
      [&] { return server->hub()->GetStats().subscribers == 0; }, Deadline()))
      << "the stalled subscription is still in the hub";

  first->Release();
  grpc::Status end = first->WaitDone(Deadline());
  EXPECT_EQ(end.error_code(), grpc::StatusCode::ABORTED) << end.error_message();
  EXPECT_TRUE(
      absl::StrContains(end.error_message(), "--subscriber_stall_timeout"))
      << end.error_message();
  Subscriber::State a = first->Snapshot();
  EXPECT_TRUE(a.gaps.empty());
  uint64_t last_seq = 0;
  for (const auto& e : a.events) last_seq = std::max(last_seq, e.seq());
  ASSERT_GT(last_seq, 0u);

  fanin::v1::SubscribeRequest resume = LosslessRequest();
  resume.set_resume_after_seq(last_seq);
  resume.set_resume_epoch(started->server_epoch());
  auto second = Subscriber::Start(address, resume);
  ASSERT_TRUE(second->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(second->WaitClosed(id, Deadline()).has_value());
  Subscriber::State b = second->Snapshot();
  EXPECT_TRUE(b.gaps.empty()) << "lost events the history still held";
  ASSERT_FALSE(b.events.empty());
  EXPECT_EQ(b.events.front().seq(), last_seq + 1);
  const std::string got = PayloadOf(a.events, id) + PayloadOf(b.events, id);
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent) << "bytes differ";
}

// Each lossless subscription reserves --subscriber_queue_bytes of
// --lossless_total_bytes: a third is refused with RESOURCE_EXHAUSTED while
// lossy ones are not, and one leaving makes room again.
TEST_P(SubscriberLimitsTest, LosslessTotalBytesBoundsLosslessSubscribers) {
  ServerConfig config = BaseConfig(GetParam());
  config.hub.lossless_queue_bytes = 1 << 20;
  config.hub.lossless_total_bytes = 2 << 20;
  auto server = StartServer(config);
  ASSERT_NE(server, nullptr);
  const std::string address = server->grpc_address();
  auto one = Subscriber::Start(address, LosslessRequest());
  auto two = Subscriber::Start(address, LosslessRequest());
  ASSERT_TRUE(one->WaitStarted(Deadline()).ok());
  ASSERT_TRUE(two->WaitStarted(Deadline()).ok());
  auto three = Subscriber::Start(address, LosslessRequest());
  auto refused = three->WaitStarted(Deadline());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  EXPECT_TRUE(
      absl::StrContains(refused.status().message(), "--lossless_total_bytes"))
      << refused.status();
  auto lossy = Subscriber::Start(address, fanin::v1::SubscribeRequest());
  EXPECT_TRUE(lossy->WaitStarted(Deadline()).ok());

  one->Cancel();
  ASSERT_TRUE(fanin::testing::WaitFor(
      [&] { return server->hub()->GetStats().subscribers == 2; }, Deadline()));
  auto four = Subscriber::Start(address, LosslessRequest());
  EXPECT_TRUE(four->WaitStarted(Deadline()).ok());
}

INSTANTIATE_TEST_SUITE_P(AllPollers, SubscriberLimitsTest,
                         ::testing::ValuesIn(fanin::testing::AllPollerKinds()),
                         fanin::testing::PollerTestName);

}  // namespace
}  // namespace fanin::servertest
