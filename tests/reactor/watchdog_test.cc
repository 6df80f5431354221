// The watchdog on real loops: loops blocked on purpose are counted stuck,
// health flips once each way, and released loops turn healthy again.
#include "server/reactor/watchdog.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/reactor/loop_group.h"
#include "tests/testing/subprocess.h"

namespace fanin::reactor {
namespace {

using fanin::testing::WaitFor;

TEST(WatchdogTest, CountsEachStuckLoop) {
  auto group = reactor::LoopGroup::Create(reactor::PollerKind::kPoll, 3);
  ASSERT_TRUE(group.ok()) << group.status();
  (*group)->Start();
  std::atomic<int> changes{0};
  std::atomic<bool> last{true};
  reactor::Watchdog dog(group->get(),
                        {.period = absl::Milliseconds(20),
                         .stuck_after = absl::Milliseconds(150)},
                        [&](bool healthy) {
                          last.store(healthy);
                          changes.fetch_add(1);
                        });
  dog.Start();
  absl::Notification release;
  for (int i : {0, 2}) {
    (*group)->loop(i)->Post([&] { release.WaitForNotification(); });
  }
  EXPECT_TRUE(WaitFor([&] { return dog.stuck_loops() == 2; },
                      absl::Now() + absl::Seconds(30)));
  EXPECT_FALSE(last.load());
  release.Notify();
  EXPECT_TRUE(
      WaitFor([&] { return dog.healthy(); }, absl::Now() + absl::Seconds(30)));
  EXPECT_TRUE(
      WaitFor([&] { return last.load(); }, absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(changes.load(), 2);
  dog.Stop();
  (*group)->Stop();
}

}  // namespace
}  // namespace fanin::reactor
