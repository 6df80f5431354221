// Keeps the reactor benchmark from rotting: every implementation completes the
// write chain once at N = 100, and the harness's own pieces (chain, probe)
// behave.

#include <sys/socket.h>

#include <cctype>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tests/bench/reactor/chain.h"
#include "tests/bench/reactor/impls.h"
#include "tests/bench/reactor/runner.h"

namespace fanin::bench {
namespace {

constexpr int kPairs = 100;
constexpr int64_t kWrites = 1000;

class EveryImplTest : public ::testing::TestWithParam<Impl> {};

TEST_P(EveryImplTest, CompletesTheWriteChainAtN100) {
  absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(kPairs);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  for (int active : {1, 100}) {
    absl::StatusOr<Sample> sample =
        MeasureOnce(GetParam(), *pairs, active, kWrites);
    ASSERT_TRUE(sample.ok())
        << GetParam().name << " A=" << active << ": " << sample.status();
    EXPECT_EQ(sample->events, active + kWrites)
        << GetParam().name << " A=" << active;
    EXPECT_GT(sample->run, absl::ZeroDuration());
    EXPECT_TRUE(pairs->ExpectDrained().ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Reactor, EveryImplTest,
                         ::testing::ValuesIn(AllImpls()),
                         [](const ::testing::TestParamInfo<Impl>& info) {
                           std::string name;
                           for (char c : info.param.name) {
                             if (std::isalnum(static_cast<unsigned char>(c))) {
                               name += c;
                             }
                           }
                           return name;
                         });

TEST(ChainTest, CountsEveryForwardedByteAndStopsAtTheTarget) {
  absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(3);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  Chain chain(&*pairs, 1, 2);
  ASSERT_TRUE(chain.Start().ok());
  // The token starts in pair 0 and moves to 1, then 2, where the write budget
  // is spent.
  EXPECT_FALSE(chain.OnReadable(0));
  EXPECT_FALSE(chain.OnReadable(0)) << "pair 0 is empty now";
  EXPECT_EQ(chain.empty_reads(), 1);
  EXPECT_FALSE(chain.OnReadable(1));
  EXPECT_TRUE(chain.OnReadable(2));
  EXPECT_EQ(chain.reads(), 3);
  EXPECT_TRUE(chain.Verify().ok());
  EXPECT_TRUE(pairs->ExpectDrained().ok());
}

TEST(ChainTest, EdgeStepSaysWhenBytesRemainWithoutAnotherSyscall) {
  absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(4);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  Chain chain(&*pairs, 4, 2);
  ASSERT_TRUE(chain.Start().ok());
  bool more = true;
  // Pair 0 forwards into pair 1, which then holds two bytes.
  EXPECT_FALSE(chain.OnReadableEdge(0, &more));
  EXPECT_FALSE(more);
  // Pair 1 forwards into pair 2, and the write budget is spent.
  EXPECT_FALSE(chain.OnReadableEdge(1, &more));
  EXPECT_TRUE(more) << "pair 1 still holds a byte";
  EXPECT_FALSE(chain.OnReadableEdge(1, &more));
  EXPECT_FALSE(more);
  EXPECT_FALSE(chain.OnReadableEdge(2, &more));
  EXPECT_TRUE(more);
  EXPECT_FALSE(chain.OnReadableEdge(2, &more));
  EXPECT_FALSE(more);
  EXPECT_TRUE(chain.OnReadableEdge(3, &more));
  EXPECT_EQ(chain.reads(), 6);
  EXPECT_EQ(chain.empty_reads(), 0);
  EXPECT_TRUE(chain.Verify().ok()) << chain.Verify();
  EXPECT_TRUE(pairs->ExpectDrained().ok());
}

TEST(ChainTest, VerifyFailsWhenTheChainIsIncomplete) {
  absl::StatusOr<SocketPairs> pairs = SocketPairs::Create(2);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  Chain chain(&*pairs, 1, 5);
  ASSERT_TRUE(chain.Start().ok());
  EXPECT_FALSE(chain.OnReadable(0));
  EXPECT_FALSE(chain.done());
  EXPECT_FALSE(chain.Verify().ok());
  EXPECT_FALSE(pairs->ExpectDrained().ok())
      << "pair 1 holds the forwarded byte";
  pairs->Drain();
  EXPECT_TRUE(pairs->ExpectDrained().ok());
}

TEST(ProbeTest, FloorRunsWithFdsPastFdSetsize) {
  const Impl floor = AllImpls().front();
  ASSERT_TRUE(floor.floor);
  EXPECT_TRUE(ProbeHighFd(floor, FD_SETSIZE + 10).ok());
}

TEST(ProbeTest, ReportsAChildThatDies) {
  Impl crashing{"aborts", false, false, false,
                []() -> std::unique_ptr<Runner> { abort(); }};
  const absl::Status s = ProbeHighFd(crashing, 10);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
}

}  // namespace
}  // namespace fanin::bench
