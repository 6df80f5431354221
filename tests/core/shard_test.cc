// Shard on real sockets, on every poller: reaching a connection from another
// thread (WithConnection), back-pressure from a lossless subscriber, server
// shutdown (flush, or force), and the shared ConnectionSlots.
#include "server/core/shard.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/core/core_harness.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"
#include "tests/testing/tcp_client.h"

namespace fanin::coretest {
namespace {

using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::ReadUntilEofOrError;
using ::fanin::testing::UnixPair;
using ::fanin::testing::WaitFor;
using ::fanin::testing::WriteSome;
using ::fanin::v1::EventKind;
using Refusal = core::ConnectionSlots::Refusal;

constexpr EventKind kClosed = fanin::v1::EVENT_KIND_CLOSED;

// True when `fd` could take a byte now.
bool Writable(int fd) {
  pollfd p = {fd, POLLOUT, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) != 0;
}

// Two connections: `busy` with bytes queued (its peer not reading yet) and
// `idle` with none.
struct BusyAndIdle {
  int busy_peer = -1, idle_peer = -1;
  uint64_t busy_id = 0, idle_id = 0;
};
BusyAndIdle OpenBusyAndIdle(CoreHarness& h, const std::string& queued) {
  BusyAndIdle out;
  auto [busy_peer, busy] = UnixPair();
  auto [idle_peer, idle] = UnixPair();
  ShrinkBuffers(busy);
  out.busy_peer = busy_peer;
  out.idle_peer = idle_peer;
  out.busy_id = h.Adopt(busy);
  out.idle_id = h.Adopt(idle);
  EXPECT_NE(out.busy_id, 0u);
  EXPECT_NE(out.idle_id, 0u);
  h.WithConnection(out.busy_id, [&](core::Connection& c) {
    absl::StatusOr<uint64_t> q = c.Write(queued, false);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_GT(*q, 0u);
  });
  return out;
}

class ShardTest : public ::testing::TestWithParam<reactor::PollerKind> {};

TEST_P(ShardTest, WithConnectionRunsOnTheLoopOrAnswersNotFound) {
  CoreHarness h(GetParam(), {});
  auto [peer, mine] = UnixPair();
  const uint64_t id = h.Adopt(mine);
  ASSERT_NE(id, 0u);

  absl::Notification found_done;
  absl::StatusOr<uint64_t> found;
  bool on_loop = false;
  h.shard().WithConnection<absl::StatusOr<uint64_t>>(
      id,
      [&](core::Connection& c) {
        on_loop = h.loop().IsInLoopThread();
        return c.Write("via-post", false);
      },
      [&](absl::StatusOr<uint64_t> r) {
        found = std::move(r);
        found_done.Notify();
      });
  ASSERT_TRUE(found_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(on_loop);
  EXPECT_EQ(ReadBytes(peer, 8), "via-post");

  absl::Notification missing_done;
  absl::Status missing;
  bool ran = false;
  h.shard().WithConnection<absl::Status>(
      id + 1000,
      [&](core::Connection&) {
        ran = true;
        return absl::OkStatus();
      },
      [&](absl::Status s) {
        missing = s;
        missing_done.Notify();
      });
  ASSERT_TRUE(missing_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(ran);
  close(peer);
}

TEST_P(ShardTest, WithConnectionAnswersUnavailableWhenTheLoopStopsFirst) {
  auto loop = reactor::EventLoop::Create(GetParam());
  ASSERT_TRUE(loop.ok()) << loop.status();
  core::CoreOptions options;
  fanout::EventHub hub({});
  core::ConnectionSlots slots(10, 0);
  core::SetupCounters counters;
  core::Shard shard(&options, &hub, loop->get(), &slots, &counters);
  bool ran = false;
  int answers = 0;
  absl::Status answer;
  (*loop)->Stop();
  shard.WithConnection<absl::Status>(
      1,
      [&](core::Connection&) {
        ran = true;
        return absl::OkStatus();
      },
      [&](absl::Status s) {
        ++answers;
        answer = s;
      });
  EXPECT_EQ(answers, 0);
  loop->reset();  // The loop goes away with the task unrun.
  EXPECT_FALSE(ran);
  EXPECT_EQ(answers, 1);
  EXPECT_EQ(answer.code(), absl::StatusCode::kUnavailable);
}

TEST_P(ShardTest, BackPressureStopsReadingUntilTheSubscriberReads) {
  HarnessOptions options;
  options.lossless = true;
  options.hub.lossless_queue_bytes = 64 << 10;
  options.core.read_chunk_bytes = 4096;
  CoreHarness h(GetParam(), options);
  // Not a structured binding: clang 14 cannot capture one in a lambda.
  const auto pair = UnixPair();
  const int peer = pair.first;
  const uint64_t id = h.Adopt(pair.second);
  ASSERT_NE(id, 0u);

  // The test's lossless subscription does not read: the hub pauses it...
  const std::string data = Pattern(4 << 20);
  size_t sent = 0;
  auto send_more = [&] {
    sent += WriteSome(peer, data.substr(sent, 16 << 10));
    return sent;
  };
  ASSERT_TRUE(WaitFor([&] {
    send_more();
    return h.hub().AnyPaused();
  }));
  // ...and the connection stops reading, so the peer's writes block.
  ASSERT_TRUE(WaitFor([&] {
    const size_t before = sent;
    return send_more() == before;
  }));
  ASSERT_LT(sent, data.size());
  const uint64_t received = h.shard().bytes_received();
  h.RunSync([] {});
  h.RunSync([] {});
  EXPECT_EQ(h.shard().bytes_received(), received);
  EXPECT_FALSE(Writable(peer));
  EXPECT_LT(received, sent);

  // The subscriber catches up: the hub resumes and so does the connection.
  h.Drain();
  EXPECT_FALSE(h.hub().AnyPaused());
  h.RunSync([&] { h.shard().ResumeReadingWherePossible(); });
  ASSERT_TRUE(WaitFor([&] { return h.shard().bytes_received() > received; }));
  // Everything the peer managed to send arrives, in order, with the
  // subscriber reading and the shard resuming as FaninCore's observer would.
  ASSERT_TRUE(h.WaitUntil([&] {
    h.RunSync([&] { h.shard().ResumeReadingWherePossible(); });
    return h.Payload(id).size() >= sent;
  }));
  EXPECT_TRUE(SameBytes(h.Payload(id), data.substr(0, sent)));
  close(peer);
}

TEST_P(ShardTest, BeginShutdownFlushesThenClosesWithServerShutdown) {
  CoreHarness h(GetParam(), {});
  const std::string big = Pattern(512 << 10);
  const BusyAndIdle c = OpenBusyAndIdle(h, big);
  size_t left = 0;
  h.RunSync([&] {
    h.shard().BeginShutdown();
    left = h.shard().connection_count();
  });
  EXPECT_TRUE(h.shard().shutting_down());
  EXPECT_EQ(left, 1u);  // the idle one closed at once; the busy one flushes

  int error = -2;
  EXPECT_TRUE(SameBytes(
      ReadUntilEofOrError(c.busy_peer, absl::Now() + absl::Seconds(10), &error),
      big));
  EXPECT_EQ(error, 0);
  for (uint64_t id : {c.busy_id, c.idle_id}) {
    std::optional<fanin::v1::Event> closed = h.WaitEvent(id, kClosed);
    ASSERT_TRUE(closed.has_value()) << id;
    EXPECT_EQ(closed->closed().reason(),
              fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN);
    EXPECT_EQ(closed->closed().detail(), "");
  }
  EXPECT_EQ(h.Events(c.busy_id).back().closed().bytes_sent(), big.size());
  EXPECT_EQ(h.slots().open(), 0);
  close(c.busy_peer);
  close(c.idle_peer);
}

TEST_P(ShardTest, ForceCloseAllClosesEveryConnectionAtOnce) {
  CoreHarness h(GetParam(), {});
  const BusyAndIdle c = OpenBusyAndIdle(h, Pattern(512 << 10));
  size_t left = 1;
  h.RunSync([&] {
    h.shard().ForceCloseAll();
    left = h.shard().connection_count();
  });
  EXPECT_EQ(left, 0u);
  EXPECT_EQ(h.slots().open(), 0);
  for (uint64_t id : {c.busy_id, c.idle_id}) {
    std::optional<fanin::v1::Event> closed = h.WaitEvent(id, kClosed);
    ASSERT_TRUE(closed.has_value()) << id;
    EXPECT_EQ(closed->closed().reason(),
              fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN);
  }
  // The queue was dropped, not flushed.
  EXPECT_LT(h.Events(c.busy_id).back().closed().bytes_sent(), 512u << 10);
  EXPECT_TRUE(PeerSeesEof(c.idle_peer));
  close(c.busy_peer);
  close(c.idle_peer);
}

INSTANTIATE_TEST_SUITE_P(AllPollers, ShardTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

TEST(ConnectionSlotsTest, TotalAndPerIpLimitsAndRelease) {
  core::ConnectionSlots slots(/*max_total=*/3, /*max_per_ip=*/2);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kPerIp);
  EXPECT_EQ(slots.open(), 2);  // a refusal takes nothing
  EXPECT_EQ(slots.TryAcquire("10.0.0.2"), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire("10.0.0.3"), Refusal::kTotal);
  EXPECT_EQ(slots.TryAcquire(""), Refusal::kTotal);
  EXPECT_EQ(slots.open(), 3);

  slots.Release("10.0.0.1");
  EXPECT_EQ(slots.open(), 2);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  EXPECT_FALSE(slots.WaitUntilNoneOpen(absl::Now() + absl::Milliseconds(5)));
  slots.Release("10.0.0.1");
  slots.Release("10.0.0.1");
  slots.Release("10.0.0.2");
  EXPECT_EQ(slots.open(), 0);
  EXPECT_TRUE(slots.WaitUntilNoneOpen(absl::Now()));
}

TEST(ConnectionSlotsTest, UnixPeersAreNotCountedPerIp) {
  core::ConnectionSlots slots(/*max_total=*/10, /*max_per_ip=*/1);
  EXPECT_EQ(slots.TryAcquire(""), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire(""), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kPerIp);
  slots.Release("10.0.0.1");
  EXPECT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  EXPECT_EQ(slots.open(), 3);
}

TEST(ConnectionSlotsTest, WaitUntilNoneOpenWakesWhenTheLastIsReleased) {
  core::ConnectionSlots slots(10, 0);
  ASSERT_EQ(slots.TryAcquire("10.0.0.1"), Refusal::kNone);
  std::thread releaser([&] { slots.Release("10.0.0.1"); });
  EXPECT_TRUE(slots.WaitUntilNoneOpen(absl::Now() + absl::Seconds(10)));
  releaser.join();
}

}  // namespace
}  // namespace fanin::coretest
