// Connection on real sockets, on every poller: what it reads becomes Opened,
// Data, ReadClosed and Closed events in order; writes go out at once or queue
// within the outbound limit; graceful and aborted closes; pull mode; idle
// close. The peer end is driven by the test; events are read from the hub.
#include "server/core/connection.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/core_harness.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"
#include "tests/testing/tcp_client.h"

namespace fanin::coretest {
namespace {

using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::ReadAvailable;
using ::fanin::testing::ReadUntilEofOrError;
using ::fanin::testing::TcpPair;
using ::fanin::testing::UnixPair;
using ::fanin::testing::WaitFor;
using ::fanin::testing::WriteSome;
using ::fanin::v1::EventKind;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Le;

constexpr EventKind kOpened = fanin::v1::EVENT_KIND_OPENED;
constexpr EventKind kData = fanin::v1::EVENT_KIND_DATA;
constexpr EventKind kWritable = fanin::v1::EVENT_KIND_WRITABLE;
constexpr EventKind kReadClosed = fanin::v1::EVENT_KIND_READ_CLOSED;
constexpr EventKind kClosed = fanin::v1::EVENT_KIND_CLOSED;
constexpr EventKind kReadable = fanin::v1::EVENT_KIND_READABLE;

absl::Time Deadline() { return absl::Now() + absl::Seconds(10); }

// The connection's events with the Data ones collapsed: {OPENED, DATA,
// READ_CLOSED, CLOSED} whatever the number of reads.
std::vector<EventKind> Collapsed(const std::vector<EventKind>& kinds) {
  std::vector<EventKind> out;
  for (EventKind k : kinds) {
    if (k == kData && !out.empty() && out.back() == kData) continue;
    out.push_back(k);
  }
  return out;
}

class ConnectionTest : public ::testing::TestWithParam<reactor::PollerKind> {
 protected:
  std::unique_ptr<CoreHarness> Harness(HarnessOptions options = {}) {
    return std::make_unique<CoreHarness>(GetParam(), std::move(options));
  }
};

TEST_P(ConnectionTest, DataEventsCarryTheBytesInOrderSplitAtTheReadChunk) {
  HarnessOptions options;
  options.core.read_chunk_bytes = 512;
  auto h = Harness(options);
  auto [peer, mine] = UnixPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  const std::string sent = Pattern(5000);
  ASSERT_EQ(WriteSome(peer, sent), sent.size());

  ASSERT_TRUE(h->WaitUntil([&] { return h->Payload(id).size() >= 5000; }));
  EXPECT_TRUE(SameBytes(h->Payload(id), sent));
  std::vector<size_t> sizes = h->DataSizes(id);
  EXPECT_THAT(sizes, Each(Le(512u)));
  EXPECT_GE(sizes.size(), 10u);  // 5000 bytes in reads of at most 512
  const std::vector<fanin::v1::Event> events = h->Events(id);
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events[0].has_opened());
  EXPECT_EQ(events[0].opened().remote_address(), "peer-1");
  EXPECT_EQ(events[0].opened().local_address(), "local-end");
  EXPECT_EQ(events[0].listener(), "default");
  EXPECT_THAT(Collapsed(h->Kinds(id)), ElementsAre(kOpened, kData));
  EXPECT_EQ(h->shard().bytes_received(), 5000u);
  close(peer);
}

TEST_P(ConnectionTest, PeerFinGivesReadClosedThenClosedWithByteTotals) {
  HarnessOptions options;
  options.max_connections_per_ip = 1;
  auto h = Harness(options);
  auto [peer, mine] = UnixPair();
  const uint64_t id = h->Adopt(mine, "10.0.0.1");
  ASSERT_NE(id, 0u);
  EXPECT_EQ(h->slots().open(), 1);
  h->WithConnection(id, [](core::Connection& c) {
    absl::StatusOr<uint64_t> queued = c.Write("ab", false);
    ASSERT_TRUE(queued.ok()) << queued.status();
    EXPECT_EQ(*queued, 0u);
  });
  EXPECT_EQ(ReadBytes(peer, 2), "ab");
  ASSERT_EQ(WriteSome(peer, "hello"), 5u);
  ASSERT_EQ(shutdown(peer, SHUT_WR), 0);

  std::optional<fanin::v1::Event> closed = h->WaitEvent(id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_PEER_CLOSED);
  EXPECT_EQ(closed->closed().bytes_received(), 5u);
  EXPECT_EQ(closed->closed().bytes_sent(), 2u);
  EXPECT_EQ(h->Payload(id), "hello");
  EXPECT_THAT(Collapsed(h->Kinds(id)),
              ElementsAre(kOpened, kData, kReadClosed, kClosed));
  // The slot (total and per IP) was given back before Closed was published.
  EXPECT_EQ(h->slots().open(), 0);
  EXPECT_EQ(h->slots().TryAcquire("10.0.0.1"),
            core::ConnectionSlots::Refusal::kNone);
  h->slots().Release("10.0.0.1");
  EXPECT_EQ(h->ConnectionCount(), 0u);
  EXPECT_TRUE(PeerSeesEof(peer));
  close(peer);
}

TEST_P(ConnectionTest, KeepHalfOpenStaysWritableAfterPeerFin) {
  HarnessOptions options;
  options.core.keep_half_open = true;
  auto h = Harness(options);
  auto [peer, mine] = UnixPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  ASSERT_EQ(shutdown(peer, SHUT_WR), 0);
  ASSERT_TRUE(h->WaitEvent(id, kReadClosed).has_value());

  // Still open and writable: the reply reaches the peer.
  h->WithConnection(id, [](core::Connection& c) {
    absl::StatusOr<uint64_t> queued = c.Write("reply", false);
    EXPECT_TRUE(queued.ok()) << queued.status();
  });
  EXPECT_EQ(ReadBytes(peer, 5), "reply");
  EXPECT_EQ(h->Count(id, kClosed), 0u);
  // Closing now needs no linger: the peer's FIN already came.
  h->WithConnection(
      id, [](core::Connection& c) { EXPECT_TRUE(c.Close(false).ok()); });
  std::optional<fanin::v1::Event> closed = h->WaitEvent(id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  EXPECT_EQ(closed->closed().bytes_sent(), 5u);
  EXPECT_THAT(h->Kinds(id), ElementsAre(kOpened, kReadClosed, kClosed));
  close(peer);
}

TEST_P(ConnectionTest, WriteSendsAtOnceQueuesTheRestAndRefusesPastTheLimit) {
  HarnessOptions options;
  options.core.max_outbound_bytes = 512 << 10;
  auto h = Harness(options);
  auto [peer, mine] = UnixPair();
  ShrinkBuffers(mine);
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);

  // An empty queue: the bytes go out in the call itself.
  h->WithConnection(id, [](core::Connection& c) {
    absl::StatusOr<uint64_t> queued = c.Write("now", false);
    ASSERT_TRUE(queued.ok()) << queued.status();
    EXPECT_EQ(*queued, 0u);
  });
  EXPECT_EQ(ReadAvailable(peer), "now");

  const std::string big = Pattern(256 << 10);
  uint64_t queued = 0;
  h->WithConnection(id, [&](core::Connection& c) {
    absl::StatusOr<uint64_t> q = c.Write(big, false);
    ASSERT_TRUE(q.ok()) << q.status();
    queued = *q;
  });
  ASSERT_GT(queued, 0u);
  ASSERT_LT(queued, big.size());
  EXPECT_EQ(h->Info(id).queued_bytes(), queued);

  // One byte more than the room left: refused whole, nothing queued.
  const size_t room = options.core.max_outbound_bytes - queued;
  h->WithConnection(id, [&](core::Connection& c) {
    absl::StatusOr<uint64_t> q = c.Write(std::string(room + 1, 'x'), false);
    EXPECT_EQ(q.status().code(), absl::StatusCode::kResourceExhausted);
  });
  EXPECT_EQ(h->Info(id).queued_bytes(), queued);
  EXPECT_EQ(h->Count(id, kWritable), 0u);

  // The peer reads everything in order; then Writable, once.
  EXPECT_TRUE(SameBytes(ReadBytes(peer, big.size()), big));
  ASSERT_TRUE(h->WaitEvent(id, kWritable).has_value());
  const fanin::v1::Connection info = h->Info(id);
  EXPECT_EQ(info.queued_bytes(), 0u);
  EXPECT_EQ(info.bytes_sent(), big.size() + 3);
  EXPECT_EQ(h->Count(id, kWritable), 1u);
  close(peer);
}

TEST_P(ConnectionTest, GracefulCloseFlushesTheQueueBeforeFinAndLingers) {
  auto h = Harness();
  auto [peer, mine] = TcpPair();
  ShrinkBuffers(mine);
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  const std::string big = Pattern(1 << 20);
  h->WithConnection(id, [&](core::Connection& c) {
    absl::StatusOr<uint64_t> q = c.Write(big, false);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_GT(*q, 0u);  // Something waits, so Close has a queue to flush.
    EXPECT_TRUE(c.Close(false).ok());
    EXPECT_TRUE(c.closing());
  });

  int error = -2;
  EXPECT_TRUE(SameBytes(ReadUntilEofOrError(peer, Deadline(), &error), big));
  EXPECT_EQ(error, 0);  // EOF after the last byte, not a reset
  // Lingering for the peer's FIN: no Closed yet, and gone for new requests.
  h->Drain();
  EXPECT_EQ(h->Count(id, kClosed), 0u);
  h->WithConnection(id, [](core::Connection& c) {
    EXPECT_EQ(c.Write("late", false).status().code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(c.Close(false).code(), absl::StatusCode::kNotFound);
  });

  close(peer);
  std::optional<fanin::v1::Event> closed = h->WaitEvent(id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  EXPECT_EQ(closed->closed().detail(), "");
  EXPECT_EQ(closed->closed().bytes_sent(), big.size());
}

TEST_P(ConnectionTest, LingerEndsWhenThePeerNeverCloses) {
  HarnessOptions options;
  options.core.close_linger = absl::Milliseconds(100);
  auto h = Harness(options);
  auto [peer, mine] = TcpPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  h->WithConnection(id, [](core::Connection& c) {
    EXPECT_TRUE(c.Write("bye", /*close_after=*/true).ok());
  });
  int error = -2;
  EXPECT_EQ(ReadUntilEofOrError(peer, Deadline(), &error), "bye");
  EXPECT_EQ(error, 0);
  // Input while lingering is discarded, not published.
  ASSERT_EQ(WriteSome(peer, "ignored"), 7u);
  std::optional<fanin::v1::Event> closed = h->WaitEvent(id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  EXPECT_THAT(closed->closed().detail(), ::testing::HasSubstr("linger"));
  EXPECT_EQ(h->Count(id, kData), 0u);
  close(peer);
}

TEST_P(ConnectionTest, AbortResetsThePeer) {
  auto h = Harness();
  auto [peer, mine] = TcpPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  h->WithConnection(
      id, [](core::Connection& c) { EXPECT_TRUE(c.Close(true).ok()); });
  int error = -2;
  EXPECT_EQ(ReadUntilEofOrError(peer, Deadline(), &error), "");
  EXPECT_EQ(error, ECONNRESET);
  std::optional<fanin::v1::Event> closed = h->WaitEvent(id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  EXPECT_EQ(closed->closed().detail(), "aborted (RST)");
  close(peer);
}

TEST_P(ConnectionTest, PullModeAnnouncesReadableOnceAndAShortReadReArms) {
  HarnessOptions options;
  options.pull = true;
  auto h = Harness(options);
  auto [peer, mine] = UnixPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  ASSERT_EQ(WriteSome(peer, "abcdef"), 6u);
  ASSERT_TRUE(h->WaitEvent(id, kReadable).has_value());
  // More bytes, and two loop turns: still one Readable, and no Data at all.
  ASSERT_EQ(WriteSome(peer, "gh"), 2u);
  h->RunSync([] {});
  h->RunSync([] {});
  h->Drain();
  EXPECT_EQ(h->Count(id, kReadable), 1u);

  auto read = [&](uint32_t max) {
    core::Connection::ReadOutcome out;
    h->WithConnection(id, [&](core::Connection& c) {
      absl::StatusOr<core::Connection::ReadOutcome> r = c.Read(max);
      ASSERT_TRUE(r.ok()) << r.status();
      out = *std::move(r);
    });
    return out;
  };
  // A full read (as many bytes as asked) does not re-arm...
  EXPECT_EQ(read(3).data, "abc");
  ASSERT_EQ(WriteSome(peer, "i"), 1u);
  h->RunSync([] {});
  h->Drain();
  EXPECT_EQ(h->Count(id, kReadable), 1u);
  // ...a short one does: the next bytes bring a second Readable.
  EXPECT_EQ(read(100).data, "defghi");
  ASSERT_EQ(WriteSome(peer, "j"), 1u);
  ASSERT_TRUE(h->WaitUntil([&] { return h->Count(id, kReadable) == 2; }));
  EXPECT_EQ(read(100).data, "j");
  ASSERT_EQ(shutdown(peer, SHUT_WR), 0);
  ASSERT_TRUE(h->WaitUntil([&] { return h->Count(id, kReadable) == 3; }));
  core::Connection::ReadOutcome last = read(100);
  EXPECT_TRUE(last.read_closed);
  EXPECT_EQ(last.data, "");
  ASSERT_TRUE(h->WaitEvent(id, kClosed).has_value());
  EXPECT_EQ(h->Count(id, kData), 0u);
  EXPECT_THAT(h->Kinds(id), ElementsAre(kOpened, kReadable, kReadable,
                                        kReadable, kReadClosed, kClosed));
  close(peer);
}

TEST_P(ConnectionTest, ReadOnAPushListenerIsRefused) {
  auto h = Harness();
  auto [peer, mine] = UnixPair();
  const uint64_t id = h->Adopt(mine);
  ASSERT_NE(id, 0u);
  h->WithConnection(id, [](core::Connection& c) {
    EXPECT_EQ(c.Read(10).status().code(),
              absl::StatusCode::kFailedPrecondition);
  });
  close(peer);
}

TEST_P(ConnectionTest, CloseIfIdleClosesOnlyConnectionsQuietSinceTheCutoff) {
  auto h = Harness();
  auto [quiet_peer, quiet] = UnixPair();
  auto [busy_peer, busy] = UnixPair();
  const uint64_t quiet_id = h->Adopt(quiet);
  const uint64_t busy_id = h->Adopt(busy);
  ASSERT_NE(quiet_id, 0u);
  ASSERT_NE(busy_id, 0u);
  // The clock must move past both connections' last activity.
  const absl::Time opened = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return absl::Now() > opened; }));
  const absl::Time cutoff = absl::Now();
  ASSERT_EQ(WriteSome(busy_peer, "ping"), 4u);
  ASSERT_TRUE(h->WaitUntil([&] { return h->Payload(busy_id) == "ping"; }));

  h->RunSync([&] {
    h->shard().ForEachConnection(
        [cutoff](core::Connection& c) { c.CloseIfIdle(cutoff); });
  });
  std::optional<fanin::v1::Event> closed = h->WaitEvent(quiet_id, kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_IDLE_TIMEOUT);
  EXPECT_EQ(h->Count(busy_id, kClosed), 0u);
  EXPECT_EQ(h->ConnectionCount(), 1u);
  EXPECT_TRUE(PeerSeesEof(quiet_peer));
  close(quiet_peer);
  close(busy_peer);
}

INSTANTIATE_TEST_SUITE_P(AllPollers, ConnectionTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::coretest
