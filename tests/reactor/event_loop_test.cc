// EventLoop on every backend: dispatch, fairness, stale events, half-close,
// resets, idleness, timers, cross-thread posts and stopping.
#include "server/reactor/event_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"

namespace fanin::reactor {
namespace {

using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::LoopThread;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::ProcessCpuTime;
using ::fanin::testing::RunLoopUntil;
using ::fanin::testing::TcpPair;
using ::fanin::testing::UnixPair;
using ::fanin::testing::WaitFor;
using ::fanin::testing::WriteSome;

// A connection the way the server is expected to write one: reads at most
// `budget` bytes per OnIo, asks for a redispatch in edge mode when the budget
// ran out, learns EOF and errors from read(), and unwatches and closes the fd
// when the connection is over.
class Conn : public IoHandler {
 public:
  Conn(EventLoop* loop, int fd, size_t budget = 1 << 20)
      : loop_(loop), fd_(fd), budget_(budget) {}
  ~Conn() override {
    if (fd_ >= 0) close(fd_);
  }

  void OnIo(uint32_t events) override {
    ++calls;
    all_events |= events;
    last_call_iteration = loop_->iterations();
    if (fd_ < 0) {
      stale_calls++;  // must never happen: we unwatched before closing
      return;
    }
    if (events & kError) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) error = err;
    }
    size_t left = budget_;
    char buf[4096];
    bool drained = false;
    while (left > 0) {
      ssize_t n = read(fd_, buf, std::min(sizeof(buf), left));
      if (n > 0) {
        if (eof) data_after_eof = true;
        data.append(buf, n);
        left -= n;
      } else if (n == 0) {
        eof = true;
        drained = true;
        break;
      } else if (errno == EAGAIN) {
        drained = true;
        break;
      } else if (errno != EINTR) {
        error = errno;
        drained = true;
        break;
      }
    }
    if (!drained && loop_->edge_triggered()) {
      loop_->Redispatch(fd_, kReadable);
    }
    // kReadClosed alone is no reason to stop: unread data comes first.
    if (eof || error != 0 || (events & kHangup && drained)) Finish();
  }

  void Finish() {
    loop_->Unwatch(fd_);
    close(fd_);
    fd_ = -1;
    finished = true;
  }

  int fd() const { return fd_; }

  int calls = 0;
  int stale_calls = 0;
  uint32_t all_events = 0;
  uint64_t last_call_iteration = 0;
  std::string data;
  bool eof = false;
  bool data_after_eof = false;
  int error = 0;
  bool finished = false;

 private:
  EventLoop* const loop_;
  int fd_;
  const size_t budget_;
};

class EventLoopTest : public ::testing::TestWithParam<PollerKind> {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create(GetParam());
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }
  bool select() const { return GetParam() == PollerKind::kSelect; }

  std::unique_ptr<EventLoop> loop_;
};

TEST_P(EventLoopTest, ReportsBackendName) {
  EXPECT_EQ(loop_->poller_name(), PollerKindName(GetParam()));
  EXPECT_EQ(loop_->edge_triggered(), GetParam() == PollerKind::kEpollEdge);
}

TEST_P(EventLoopTest, DeliversDataThenEof) {
  const std::pair<int, int> a_b = UnixPair();
  const int a = a_b.first;
  const int b = a_b.second;
  Conn conn(loop_.get(), a);
  ASSERT_TRUE(loop_->Watch(a, kReadable, &conn).ok());
  EXPECT_EQ(loop_->Watch(a, kReadable, &conn).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_EQ(write(b, "hello", 5), 5);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return conn.data == "hello"; }));
  close(b);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return conn.finished; }));
  EXPECT_TRUE(conn.eof);
  EXPECT_EQ(conn.stale_calls, 0);
  EXPECT_EQ(loop_->watched_count(), 1u);  // only the loop's own eventfd
}

// The peer writes and shuts down its side before the loop runs at all; every
// byte must reach the handler before the half-close does, on every backend,
// even with a small read budget (edge mode: via Redispatch).
TEST_P(EventLoopTest, HalfCloseWithUnreadDataDeliversDataFirst) {
  const std::pair<int, int> client_server = TcpPair();
  const int client = client_server.first;
  const int server = client_server.second;
  std::string sent(256 * 1024, '\0');
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 7);
  Conn conn(loop_.get(), server, /*budget=*/4096);
  ASSERT_TRUE(loop_->Watch(server, kReadable, &conn).ok());
  size_t written = 0;
  // The socket buffers may not take it all at once: keep feeding from a timer.
  EventLoop::TimerId feeder = loop_->RunEvery(absl::Milliseconds(1), [&] {
    if (written < sent.size()) {
      written += WriteSome(client, sent.substr(written));
      if (written == sent.size()) shutdown(client, SHUT_WR);
    }
  });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return conn.finished; }));
  loop_->Cancel(feeder);
  EXPECT_TRUE(conn.eof);
  EXPECT_FALSE(conn.data_after_eof);
  EXPECT_EQ(conn.error, 0);
  ASSERT_EQ(conn.data.size(), sent.size());
  EXPECT_TRUE(conn.data == sent);
  if (!select()) {
    EXPECT_TRUE(conn.all_events & kReadClosed);
  }
  close(client);
}

TEST_P(EventLoopTest, ResetIsReportedAndHandlerStopsIt) {
  const std::pair<int, int> client_server = TcpPair();
  const int client = client_server.first;
  const int server = client_server.second;
  Conn conn(loop_.get(), server);
  ASSERT_TRUE(loop_->Watch(server, kReadable, &conn).ok());
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(client);
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return conn.finished; }));
  EXPECT_EQ(conn.error, ECONNRESET);
  if (!select()) {
    EXPECT_TRUE(conn.all_events & kError) << conn.all_events;
  }
  EXPECT_EQ(conn.stale_calls, 0);
}

// Readiness that nobody consumes must not keep the loop busy once the handler
// removed its interest (data left unread) or unwatched (hung-up/errored fd).
TEST_P(EventLoopTest, NoBusyLoopOnIgnoredOrDeadFds) {
  struct Quiet : IoHandler {
    EventLoop* loop;
    int fd;
    bool unwatch;
    std::atomic<int> calls{0};
    void OnIo(uint32_t) override {
      ++calls;
      if (unwatch) {
        loop->Unwatch(fd);
      } else {
        ASSERT_TRUE(loop->Rewatch(fd, 0).ok());
      }
    }
  };
  const std::pair<int, int> a_b = UnixPair();
  const int a = a_b.first;
  const int b = a_b.second;  // data left unread, interest removed
  const std::pair<int, int> c_d = UnixPair();
  const int c = c_d.first;
  const int d = c_d.second;  // hung up, interest removed
  const std::pair<int, int> client_server = TcpPair();
  const int client = client_server.first;
  const int server = client_server.second;  // reset, unwatched
  Quiet qa, qc, qs;
  qa.loop = qc.loop = qs.loop = loop_.get();
  qa.fd = a;
  qc.fd = c;
  qs.fd = server;
  qa.unwatch = qc.unwatch = false;
  qs.unwatch = true;
  ASSERT_EQ(write(b, "unread", 6), 6);
  close(d);
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(client);
  {
    LoopThread thread(loop_.get());
    thread.RunSync([&] {
      ASSERT_TRUE(loop_->Watch(a, kReadable, &qa).ok());
      ASSERT_TRUE(loop_->Watch(c, kReadable | kWritable, &qc).ok());
      ASSERT_TRUE(loop_->Watch(server, kReadable, &qs).ok());
    });
    ASSERT_TRUE(
        WaitFor([&] { return qa.calls > 0 && qc.calls > 0 && qs.calls > 0; }));
    thread.RunSync([] {});
    const uint64_t iterations = loop_->iterations();
    const absl::Duration cpu = ProcessCpuTime();
    absl::SleepFor(absl::Milliseconds(200));  // a window of idleness
    EXPECT_LE(loop_->iterations() - iterations, 2u);
    EXPECT_LT(ProcessCpuTime() - cpu, absl::Milliseconds(50));
    EXPECT_EQ(qa.calls.load(), 1);
    EXPECT_EQ(qc.calls.load(), 1);
    EXPECT_EQ(qs.calls.load(), 1);
    thread.RunSync([&] {
      loop_->Unwatch(a);
      loop_->Unwatch(c);
    });
  }
  close(a);
  close(b);
  close(c);
  close(server);
}

// fd X is closed and its number reused inside one iteration in which X was
// already reported ready: the new owner must not see the old X's event.
TEST_P(EventLoopTest, ReusedFdNeverGetsStaleEvents) {
  struct Fresh : IoHandler {
    EventLoop* loop;
    uint64_t first_call_iteration = 0;
    int calls = 0;
    void OnIo(uint32_t) override {
      if (calls++ == 0) first_call_iteration = loop->iterations();
    }
  };
  struct Swapper : IoHandler {
    EventLoop* loop;
    int fd;
    Swapper* other;
    bool* swapped;
    int fresh_source;  // an fd with pending data to dup2 onto the old number
    Fresh* fresh;
    uint64_t swap_iteration = 0;
    int calls_after_close = 0;
    bool closed = false;
    void OnIo(uint32_t) override {
      if (closed) {
        ++calls_after_close;
        return;
      }
      if (*swapped) return;
      *swapped = true;
      // Close the other fd and put a new, readable socket on its number.
      loop->Unwatch(other->fd);
      close(other->fd);
      other->closed = true;
      ASSERT_EQ(dup2(fresh_source, other->fd), other->fd);
      ASSERT_TRUE(loop->Watch(other->fd, kReadable, fresh).ok());
      other->swap_iteration = swap_iteration = loop->iterations();
    }
  };
  for (int round = 0; round < 20; ++round) {
    const std::pair<int, int> a_a_peer = UnixPair();
    const int a = a_a_peer.first;
    const int a_peer = a_a_peer.second;
    const std::pair<int, int> b_b_peer = UnixPair();
    const int b = b_b_peer.first;
    const int b_peer = b_b_peer.second;
    const std::pair<int, int> f_f_peer = UnixPair();
    const int f = f_f_peer.first;
    const int f_peer = f_f_peer.second;
    ASSERT_EQ(write(a_peer, "x", 1), 1);
    ASSERT_EQ(write(b_peer, "x", 1), 1);
    ASSERT_EQ(write(f_peer, "x", 1), 1);
    bool swapped = false;
    Fresh fresh;
    fresh.loop = loop_.get();
    Swapper sa, sb;
    sa.loop = sb.loop = loop_.get();
    sa.fd = a;
    sb.fd = b;
    sa.other = &sb;
    sb.other = &sa;
    sa.swapped = sb.swapped = &swapped;
    sa.fresh_source = sb.fresh_source = f;
    sa.fresh = sb.fresh = &fresh;
    ASSERT_TRUE(loop_->Watch(a, kReadable, &sa).ok());
    ASSERT_TRUE(loop_->Watch(b, kReadable, &sb).ok());
    ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return fresh.calls > 0; }));
    EXPECT_EQ(sa.calls_after_close + sb.calls_after_close, 0);
    EXPECT_GT(fresh.first_call_iteration, sa.swap_iteration)
        << "the new fd got the old fd's event in the same iteration";
    Swapper* survivor = sa.closed ? &sb : &sa;
    Swapper* victim = sa.closed ? &sa : &sb;
    loop_->Unwatch(survivor->fd);
    loop_->Unwatch(victim->fd);  // now the fresh socket's registration
    close(a);
    close(b);
    close(a_peer);
    close(b_peer);
    close(f);
    close(f_peer);
  }
}

// A fire-hose connection with a deep backlog must not starve the others: it
// gets a bounded slice per iteration and, in edge mode, keeps being called
// through Redispatch until drained, with no new readiness edge.
TEST_P(EventLoopTest, FireHoseDoesNotStarveOthers) {
  const std::pair<int, int> hose_hose_peer = UnixPair();
  const int hose = hose_hose_peer.first;
  const int hose_peer = hose_hose_peer.second;
  int big = 4 << 20;
  setsockopt(hose_peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  setsockopt(hose, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  const std::string backlog(1 << 20, 'h');
  const size_t queued = WriteSome(hose_peer, backlog);
  ASSERT_GE(queued, 256u * 1024);
  Conn hose_conn(loop_.get(), hose, /*budget=*/4096);
  ASSERT_TRUE(loop_->Watch(hose, kReadable, &hose_conn).ok());

  constexpr int kQuiet = 20;
  std::vector<std::pair<int, int>> quiet_fds;
  std::vector<std::unique_ptr<Conn>> quiet;
  for (int i = 0; i < kQuiet; ++i) {
    quiet_fds.push_back(UnixPair());
    quiet.push_back(
        std::make_unique<Conn>(loop_.get(), quiet_fds.back().first, 4096));
    ASSERT_TRUE(
        loop_->Watch(quiet_fds.back().first, kReadable, quiet.back().get())
            .ok());
    ASSERT_EQ(write(quiet_fds.back().second, "q", 1), 1);
  }
  size_t hose_bytes_when_quiet_done = 0;
  auto all_quiet = [&] {
    for (auto& q : quiet)
      if (q->data.empty()) return false;
    return true;
  };
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] {
    if (hose_bytes_when_quiet_done == 0 && all_quiet()) {
      hose_bytes_when_quiet_done = hose_conn.data.size();
    }
    return hose_conn.data.size() == queued;
  }));
  // The quiet ones were served while the hose still had most of its backlog.
  EXPECT_GT(hose_bytes_when_quiet_done, 0u);
  EXPECT_LE(hose_bytes_when_quiet_done, queued / 4);
  // It took many iterations, each bounded by the budget.
  EXPECT_GE(hose_conn.calls, static_cast<int>(queued / 4096));
  EXPECT_EQ(hose_conn.data.size(), queued);
  for (auto& q : quiet) loop_->Unwatch(q->fd());
  loop_->Unwatch(hose);
  for (auto& [x, y] : quiet_fds) close(y);
  close(hose_peer);
}

TEST_P(EventLoopTest, RedispatchMergesAndIsDroppedAfterUnwatch) {
  struct Recorder : IoHandler {
    std::vector<uint32_t> events;
    void OnIo(uint32_t e) override { events.push_back(e); }
  };
  const std::pair<int, int> a_b = UnixPair();
  const int a = a_b.first;
  const int b = a_b.second;
  Recorder rec;
  ASSERT_TRUE(loop_->Watch(a, 0, &rec).ok());
  loop_->Redispatch(a, kReadable);
  loop_->Redispatch(a, kWritable);  // coalesced into one call
  int iterations_seen = 0;
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return ++iterations_seen > 3; }));
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0], kReadable | kWritable);
  loop_->Redispatch(a, kReadable);
  loop_->Unwatch(a);
  ASSERT_TRUE(loop_->Watch(a, 0, &rec).ok());  // same fd, new generation
  iterations_seen = 0;
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return ++iterations_seen > 3; }));
  EXPECT_EQ(rec.events.size(), 1u) << "redispatch survived Unwatch";
  loop_->Unwatch(a);
  close(a);
  close(b);
}

// 10,000 fds (5,000 socketpairs, both ends watched) on every backend,
// select included.
TEST_P(EventLoopTest, ServesTenThousandFds) {
  constexpr int kPairs = 5000;
  std::vector<std::pair<int, int>> pairs;
  std::vector<std::unique_ptr<Conn>> conns;
  pairs.reserve(kPairs);
  conns.reserve(2 * kPairs);
  int max_fd = 0;
  for (int i = 0; i < kPairs; ++i) {
    auto p = UnixPair();
    ASSERT_GE(p.first, 0);
    pairs.push_back(p);
    for (int fd : {p.first, p.second}) {
      conns.push_back(std::make_unique<Conn>(loop_.get(), fd, 64));
      ASSERT_TRUE(loop_->Watch(fd, kReadable, conns.back().get()).ok())
          << "fd " << fd;
      max_fd = std::max(max_fd, fd);
    }
  }
  EXPECT_GE(max_fd, 10000);
  for (auto& [x, y] : pairs) {
    ASSERT_EQ(write(x, "1", 1), 1);
    ASSERT_EQ(write(y, "2", 1), 1);
  }
  auto received = [&] {
    size_t n = 0;
    for (auto& c : conns) n += c->data.size();
    return n;
  };
  ASSERT_TRUE(
      RunLoopUntil(loop_.get(), [&] { return received() == 2u * kPairs; }));
  for (auto& c : conns) EXPECT_EQ(c->data.size(), 1u);
  for (auto& c : conns) loop_->Unwatch(c->fd());
  EXPECT_EQ(loop_->watched_count(), 1u);
}

TEST_P(EventLoopTest, PostFromManyThreadsRunsEverythingInOrder) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<int> last(kThreads, -1);  // loop thread only
  int out_of_order = 0;
  int ran = 0;
  std::atomic<int> ran_atomic{0};
  {
    LoopThread thread(loop_.get());
    std::vector<std::thread> posters;
    for (int t = 0; t < kThreads; ++t) {
      posters.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          loop_->Post([&, t, i] {
            EXPECT_TRUE(loop_->IsInLoopThread());
            if (i != last[t] + 1) ++out_of_order;
            last[t] = i;
            ++ran;
            ran_atomic.fetch_add(1, std::memory_order_relaxed);
          });
        }
      });
    }
    for (auto& p : posters) p.join();
    ASSERT_TRUE(WaitFor([&] { return ran_atomic == kThreads * kPerThread; }));
  }
  EXPECT_EQ(ran, kThreads * kPerThread);
  EXPECT_EQ(out_of_order, 0);
  EXPECT_FALSE(loop_->IsInLoopThread());
}

// One eventfd write per batch: posts from other threads wake the loop, posts
// from the loop itself never write the eventfd.
TEST_P(EventLoopTest, WakeupsAreCountedOncePerBatchAndNotFromTheLoop) {
  EXPECT_EQ(loop_->wakeups(), 0u);
  int ran = 0;
  for (int i = 0; i < 100; ++i) loop_->Post([&] { ++ran; });
  EXPECT_EQ(loop_->wakeups(), 1u);  // the loop is not running: one batch
  bool done = false;
  loop_->Post([&] {
    for (int i = 0; i < 100; ++i) loop_->Post([&] { ++ran; });
    loop_->Post([&] { done = true; });
  });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return done; }));
  EXPECT_EQ(ran, 200);
  EXPECT_EQ(loop_->wakeups(), 1u);
}

TEST_P(EventLoopTest, PostFromLoopRunsNextIteration) {
  uint64_t first = 0, second = 0;
  loop_->Post([&] {
    first = loop_->iterations();
    loop_->Post([&] { second = loop_->iterations(); });
  });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return second != 0; }));
  EXPECT_GT(second, first);
}

TEST_P(EventLoopTest, StopFromAnotherThreadWakesABlockedLoop) {
  absl::Notification ran;
  loop_->Post([&] { ran.Notify(); });
  std::thread runner([&] { loop_->Run(); });
  // After the task's iteration the loop has nothing to do and blocks with an
  // infinite timeout.
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  const absl::Time start = absl::Now();
  loop_->Stop();
  runner.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_GE(loop_->iterations(), 1u);
  EXPECT_LE(loop_->iterations(), 2u);
  // Runs again after a Stop; and a Stop before Run ends it after one pass.
  loop_->Stop();
  const uint64_t before = loop_->iterations();
  loop_->Run();
  EXPECT_EQ(loop_->iterations(), before + 1);
}

TEST_P(EventLoopTest, TasksLeftAtDestructionAreDestroyedNotRun) {
  auto token = std::make_shared<int>(7);
  bool ran = false;
  loop_->Post([token, &ran] { ran = true; });
  EXPECT_EQ(token.use_count(), 2);
  loop_.reset();
  EXPECT_FALSE(ran);
  EXPECT_EQ(token.use_count(), 1);
}

TEST_P(EventLoopTest, TimersFireInDeadlineOrderNotEarly) {
  std::vector<int> order;
  std::vector<absl::Duration> late_by;
  const absl::Time start = absl::Now();
  for (int ms : {30, 10, 20, 0}) {
    EventLoop::TimerId id = loop_->RunAfter(absl::Milliseconds(ms), [&, ms] {
      order.push_back(ms);
      late_by.push_back(absl::Now() - start - absl::Milliseconds(ms));
    });
    EXPECT_NE(id, 0u);
  }
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return order.size() == 4; }));
  EXPECT_EQ(order, (std::vector<int>{0, 10, 20, 30}));
  for (absl::Duration d : late_by) EXPECT_GE(d, absl::ZeroDuration());
}

TEST_P(EventLoopTest, PeriodicTimerCancelsItselfAndCancelledTimersNeverRun) {
  int ticks = 0;
  EventLoop::TimerId every = 0;
  every = loop_->RunEvery(absl::Milliseconds(2), [&] {
    if (++ticks == 3) loop_->Cancel(every);
  });
  bool cancelled_ran = false;
  EventLoop::TimerId doomed =
      loop_->RunAfter(absl::Milliseconds(5), [&] { cancelled_ran = true; });
  EXPECT_NE(doomed, every);
  loop_->Cancel(doomed);
  loop_->Cancel(doomed);  // idempotent
  bool later = false;
  loop_->RunAfter(absl::Milliseconds(40), [&] { later = true; });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return later; }));
  EXPECT_EQ(ticks, 3);
  EXPECT_FALSE(cancelled_ran);
}

// Idle timeouts get re-armed on every read: cancelled timers must not pile up
// in the heap (memory stays bounded by the live timers).
TEST_P(EventLoopTest, CancelledTimersDoNotAccumulate) {
  for (int i = 0; i < 20000; ++i) {
    loop_->Cancel(loop_->RunAfter(absl::Hours(1), [] {}));
  }
  EXPECT_LE(loop_->timer_heap_size(), 128u);
  int fired = 0;
  loop_->RunAfter(absl::Milliseconds(1), [&] { ++fired; });
  ASSERT_TRUE(RunLoopUntil(loop_.get(), [&] { return fired == 1; }));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, EventLoopTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::reactor
