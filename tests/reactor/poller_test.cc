// The Poller backends, each against real sockets: what they report, when they
// stay quiet, and the fd limits of select.
#include "server/reactor/poller.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/reactor/select_poller.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"

namespace fanin::reactor {
namespace {

using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::TcpPair;
using ::fanin::testing::UnixPair;

// Events reported for fd by one Wait (0 if not reported).
uint32_t EventsFor(const std::vector<Poller::Ready>& ready, int fd) {
  uint32_t events = 0;
  int seen = 0;
  for (const Poller::Ready& r : ready) {
    if (r.fd == fd) {
      events |= r.events;
      ++seen;
    }
  }
  EXPECT_LE(seen, 1) << "fd " << fd << " reported twice by one Wait";
  return events;
}

class PollerTest : public ::testing::TestWithParam<PollerKind> {
 protected:
  void SetUp() override {
    auto poller = NewPoller(GetParam());
    ASSERT_TRUE(poller.ok()) << poller.status();
    poller_ = *std::move(poller);
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
  }
  std::pair<int, int> Pair() {
    auto p = UnixPair();
    fds_.push_back(p.first);
    fds_.push_back(p.second);
    return p;
  }
  std::pair<int, int> Tcp() {
    auto p = TcpPair();
    fds_.push_back(p.first);
    fds_.push_back(p.second);
    return p;
  }
  // Waits up to `timeout` and returns what was reported for fd.
  uint32_t WaitFor(int fd, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      std::vector<Poller::Ready> ready;
      absl::Status s = poller_->Wait(deadline - absl::Now(), &ready);
      EXPECT_TRUE(s.ok()) << s;
      uint32_t events = EventsFor(ready, fd);
      if (events != 0 || absl::Now() >= deadline) return events;
    }
  }
  bool edge() const { return GetParam() == PollerKind::kEpollEdge; }
  bool select() const { return GetParam() == PollerKind::kSelect; }

  std::unique_ptr<Poller> poller_;
  std::vector<int> fds_;
};

TEST(PollerKindTest, ParsesAndNamesEveryKind) {
  for (PollerKind kind : AllPollerKinds()) {
    auto parsed = ParsePollerKind(PollerKindName(kind));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, kind);
    auto poller = NewPoller(kind);
    ASSERT_TRUE(poller.ok());
    EXPECT_EQ((*poller)->name(), PollerKindName(kind));
    EXPECT_EQ((*poller)->edge_triggered(), kind == PollerKind::kEpollEdge);
  }
  EXPECT_EQ(*ParsePollerKind("epoll-level"), PollerKind::kEpollLevel);
  auto bad = ParsePollerKind("kqueue");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_NE(bad.status().message().find("epoll-edge"), absl::string_view::npos)
      << bad.status();
}

TEST_P(PollerTest, ReportsReadableOnlyWhenDataArrives) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  EXPECT_EQ(WaitFor(a, absl::ZeroDuration()), 0u);
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(a), kReadable);
  // Level-triggered backends keep reporting unread data; edge does not.
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(20)), edge() ? 0u : kReadable);
}

TEST_P(PollerTest, ReportsWritableAndRewatchChangesInterest) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kWritable).ok());
  EXPECT_EQ(WaitFor(a), kWritable);
  ASSERT_TRUE(poller_->Rewatch(a, kReadable).ok());
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(20)), 0u);
  ASSERT_TRUE(poller_->Rewatch(a, kReadable | kWritable).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(a), kReadable | kWritable);
}

TEST_P(PollerTest, InterestZeroSilencesEvenHangup) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable | kWritable).ok());
  EXPECT_NE(WaitFor(a), 0u);
  ASSERT_TRUE(poller_->Rewatch(a, 0).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  close(b);
  fds_.erase(std::find(fds_.begin(), fds_.end(), b));
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(30)), 0u);
  // And interest can come back after having been zero.
  ASSERT_TRUE(poller_->Rewatch(a, kReadable).ok());
  EXPECT_TRUE(WaitFor(a) & kReadable);
}

TEST_P(PollerTest, WatchWithZeroInterestThenRewatch) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, 0).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(20)), 0u);
  ASSERT_TRUE(poller_->Rewatch(a, kReadable).ok());
  EXPECT_EQ(WaitFor(a), kReadable);
  ASSERT_TRUE(poller_->Unwatch(a).ok());
}

TEST_P(PollerTest, UnwatchStopsReports) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(a), kReadable);
  ASSERT_TRUE(poller_->Unwatch(a).ok());
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(20)), 0u);
  // Watching again works (the slot was really freed).
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  EXPECT_EQ(WaitFor(a), kReadable);
}

TEST_P(PollerTest, PeerHalfCloseIsReadClosedOrReadOfZero) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  ASSERT_EQ(shutdown(b, SHUT_WR), 0);
  const uint32_t events = WaitFor(a);
  EXPECT_TRUE(events & kReadable);
  if (select()) {
    char c;
    EXPECT_EQ(read(a, &c, 1), 0);  // how select's users learn of the FIN
  } else {
    EXPECT_TRUE(events & kReadClosed) << events;
    EXPECT_FALSE(events & kHangup) << "only one direction is closed";
  }
}

TEST_P(PollerTest, PeerCloseIsHangup) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  close(b);
  fds_.erase(std::find(fds_.begin(), fds_.end(), b));
  const uint32_t events = WaitFor(a);
  if (select()) {
    EXPECT_EQ(events, kReadable);
  } else {
    EXPECT_TRUE(events & kHangup) << events;
    EXPECT_TRUE(events & kReadClosed) << events;
  }
}

TEST_P(PollerTest, ResetIsError) {
  auto [client, server] = Tcp();
  ASSERT_TRUE(poller_->Watch(server, kReadable).ok());
  linger lg{1, 0};  // close with RST
  ASSERT_EQ(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(client);
  fds_.erase(std::find(fds_.begin(), fds_.end(), client));
  const uint32_t events = WaitFor(server);
  char c;
  if (select()) {
    EXPECT_EQ(events, kReadable);
  } else {
    EXPECT_TRUE(events & kError) << events;
    EXPECT_TRUE(events & kHangup) << events;
    int err = 0;
    socklen_t len = sizeof(err);
    ASSERT_EQ(getsockopt(server, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    EXPECT_EQ(err, ECONNRESET);
    return;
  }
  EXPECT_EQ(read(server, &c, 1), -1);
  EXPECT_EQ(errno, ECONNRESET);
}

TEST_P(PollerTest, EdgeTriggeredReportsOnlyNewEdges) {
  auto [a, b] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(a), kReadable);
  EXPECT_EQ(WaitFor(a, absl::Milliseconds(20)), edge() ? 0u : kReadable);
  ASSERT_EQ(write(b, "y", 1), 1);  // a new edge
  EXPECT_EQ(WaitFor(a), kReadable);
}

TEST_P(PollerTest, RefusesBadFds) {
  absl::Status s = poller_->Watch(-1, kReadable);
  EXPECT_FALSE(s.ok());
  auto [a, b] = Pair();
  (void)b;
  int closed = dup(a);
  close(closed);
  s = poller_->Watch(closed, kReadable);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(absl::StrCat("fd ", closed)),
            absl::string_view::npos)
      << s;
  EXPECT_FALSE(poller_->Rewatch(closed, kReadable).ok());
  // The poller still serves the others.
  ASSERT_TRUE(poller_->Watch(a, kWritable).ok());
  EXPECT_EQ(WaitFor(a), kWritable);
}

TEST_P(PollerTest, WatchesFdsBeyondFdSetSize) {
  auto [a, b] = Pair();
  const int high = 4000;  // well past FD_SETSIZE (1024)
  ASSERT_EQ(dup2(a, high), high);
  fds_.push_back(high);
  ASSERT_TRUE(poller_->Watch(high, kReadable).ok());
  ASSERT_TRUE(poller_->Watch(b, kReadable).ok());
  ASSERT_EQ(write(b, "x", 1), 1);
  EXPECT_EQ(WaitFor(high), kReadable);
  ASSERT_EQ(write(high, "y", 1), 1);
  EXPECT_EQ(WaitFor(b), kReadable);
  ASSERT_TRUE(poller_->Unwatch(high).ok());
}

TEST_P(PollerTest, ClosedWhileWatchedDoesNotBreakOthers) {
  auto [a, b] = Pair();
  auto [c, d] = Pair();
  ASSERT_TRUE(poller_->Watch(a, kReadable).ok());
  ASSERT_TRUE(poller_->Watch(c, kReadable).ok());
  close(a);  // a caller bug: closed without Unwatch
  fds_.erase(std::find(fds_.begin(), fds_.end(), a));
  ASSERT_EQ(write(d, "x", 1), 1);
  std::vector<Poller::Ready> ready;
  ASSERT_TRUE(poller_->Wait(absl::Seconds(5), &ready).ok());
  if (GetParam() == PollerKind::kPoll || select()) {
    // Reported once as dead so that its handler can drop it.
    EXPECT_EQ(EventsFor(ready, a), kError | kHangup);
    ASSERT_TRUE(poller_->Unwatch(a).ok());
  }
  uint32_t c_events = EventsFor(ready, c);
  if (c_events == 0) c_events = WaitFor(c);
  EXPECT_EQ(c_events, kReadable);
  (void)b;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, PollerTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

TEST(SelectPollerTest, RefusesFdsBeyondItsLimitAndKeepsServing) {
  auto poller = NewSelectPoller(/*fd_limit=*/64);
  auto [a, b] = UnixPair();
  const int high = 100;
  ASSERT_EQ(dup2(a, high), high);
  absl::Status s = poller->Watch(high, kReadable);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find("select"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("fd 100"), absl::string_view::npos) << s;
  ASSERT_TRUE(poller->Watch(b, kReadable).ok());
  ASSERT_EQ(write(a, "x", 1), 1);
  std::vector<Poller::Ready> ready;
  ASSERT_TRUE(poller->Wait(absl::Seconds(5), &ready).ok());
  EXPECT_EQ(EventsFor(ready, b), kReadable);
  close(high);
  close(a);
  close(b);
}

}  // namespace
}  // namespace fanin::reactor
