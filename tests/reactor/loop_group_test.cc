// LoopGroup: N loops on N threads, round-robin placement, clean stop.
#include "server/reactor/loop_group.h"

#include <atomic>
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/reactor/test_util.h"
#include "tests/testing/pollers.h"

namespace fanin::reactor {
namespace {

using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::WaitFor;

class LoopGroupTest : public ::testing::TestWithParam<PollerKind> {};

TEST_P(LoopGroupTest, LoopsRunOnDistinctThreadsAndNextIsRoundRobin) {
  auto group = LoopGroup::Create(GetParam(), 3);
  ASSERT_TRUE(group.ok()) << group.status();
  LoopGroup& g = **group;
  ASSERT_EQ(g.size(), 3);
  g.Start();
  absl::Mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<int> ran{0};
  for (int i = 0; i < g.size(); ++i) {
    EventLoop* loop = g.loop(i);
    EXPECT_EQ(loop->poller_name(), PollerKindName(GetParam()));
    EXPECT_FALSE(loop->IsInLoopThread());
    loop->Post([&, loop] {
      EXPECT_TRUE(loop->IsInLoopThread());
      absl::MutexLock lock(&mu);
      threads.insert(std::this_thread::get_id());
      ++ran;
    });
  }
  ASSERT_TRUE(WaitFor([&] { return ran == 3; }));
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(threads.size(), 3u);
    EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
  }
  // Next() visits every loop once per round.
  for (int round = 0; round < 2; ++round) {
    std::set<EventLoop*> seen;
    for (int i = 0; i < g.size(); ++i) seen.insert(g.Next());
    EXPECT_EQ(seen.size(), 3u);
  }
  g.Stop();
  g.Stop();  // idempotent
  for (int i = 0; i < g.size(); ++i) EXPECT_FALSE(g.loop(i)->IsInLoopThread());
}

TEST_P(LoopGroupTest, FewerThanOneLoopIsRefused) {
  for (int n : {0, -1}) {
    auto group = LoopGroup::Create(GetParam(), n);
    ASSERT_FALSE(group.ok()) << n;
    EXPECT_EQ(group.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(group.status().message().find(">= 1"), std::string::npos)
        << group.status();
  }
}

TEST_P(LoopGroupTest, StopJoinsEvenWithWorkQueuedAndDestructorStops) {
  auto group = LoopGroup::Create(GetParam(), 2);
  ASSERT_TRUE(group.ok());
  (*group)->Start();
  std::atomic<int> ticks{0};
  EventLoop* loop0 = (*group)->loop(0);
  loop0->Post(
      [&] { loop0->RunEvery(absl::Milliseconds(1), [&] { ++ticks; }); });
  ASSERT_TRUE(WaitFor([&] { return ticks >= 3; }));
  // A task that keeps re-posting itself must not keep Stop from returning.
  EventLoop* loop1 = (*group)->loop(1);
  std::function<void()> again = [&] { loop1->Post(again); };
  loop1->Post(again);
  group->reset();  // destructor: stop, join, destroy leftover tasks
}

INSTANTIATE_TEST_SUITE_P(AllBackends, LoopGroupTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::reactor
