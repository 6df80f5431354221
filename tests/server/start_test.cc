// Where a new stream starts in the retained history, end to end: start_back
// (the last N events, then live) and start_time_unix_nano (the first event at
// or after a time), against events made by real raw clients, and the
// requests that ask for more than one start.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::v1::Event;
using fanin::v1::SubscribeRequest;

class StartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two loops: events of different loops are stamped by different threads,
    // so times need not increase along the history.
    server_ = StartServer(BaseConfig(reactor::PollerKind::kEpollLevel));
    ASSERT_NE(server_, nullptr);
    reference_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(reference_->WaitStarted(Deadline()).ok());
  }

  // Each client makes four events: Opened, Data, ReadClosed, Closed. Waits
  // until the reference subscriber has all of them.
  void RunClients(int n) {
    const std::string listen = ListenAddress(*server_, "default");
    for (int i = 0; i < n; ++i) {
      auto c = ConnectTcp(listen);
      ASSERT_TRUE(c.ok()) << c.status();
      ASSERT_TRUE(c->SendAll("x").ok());
      ASSERT_TRUE(c->ShutdownWrite().ok());
      ASSERT_TRUE(c->WaitForPeerClose(Deadline()));
      ++clients_;
    }
    ASSERT_TRUE(reference_->WaitUntil(
        [&](const Subscriber::State& s) {
          return static_cast<int>(s.closed.size()) >= clients_;
        },
        Deadline()));
  }

  // Waits for n events on `sub` and returns them.
  static std::vector<Event> WaitEvents(Subscriber& sub, size_t n) {
    EXPECT_TRUE(sub.WaitUntil(
        [n](const Subscriber::State& s) { return s.events.size() >= n; },
        Deadline()))
        << "got " << sub.Snapshot().events.size() << " of " << n;
    return sub.Snapshot().events;
  }

  static void ExpectSameEvents(const std::vector<Event>& got,
                               const std::vector<Event>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].SerializeAsString(), want[i].SerializeAsString())
          << "event " << i << ": " << got[i].ShortDebugString() << " vs "
          << want[i].ShortDebugString();
    }
  }

  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<Subscriber> reference_;
  int clients_ = 0;
};

TEST_F(StartTest, StartBackGetsExactlyTheLastNThenLive) {
  RunClients(25);
  std::vector<Event> ref = reference_->Snapshot().events;
  ASSERT_EQ(ref.size(), 100u);

  SubscribeRequest request;
  request.set_start_back(10);
  auto sub = Subscriber::Start(server_->grpc_address(), request);
  auto started = sub->WaitStarted(Deadline());
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->head_seq(), 100u);
  ExpectSameEvents(WaitEvents(*sub, 10),
                   std::vector<Event>(ref.begin() + 90, ref.end()));

  // Then live: the next client's four events, and nothing before them.
  RunClients(1);
  ref = reference_->Snapshot().events;
  std::vector<Event> got = WaitEvents(*sub, 14);
  ExpectSameEvents(got, std::vector<Event>(ref.begin() + 90, ref.end()));
  EXPECT_TRUE(sub->Snapshot().gaps.empty());

  // With a filter, the last N matching events.
  SubscribeRequest data;
  data.add_kinds(fanin::v1::EVENT_KIND_DATA);
  data.set_start_back(3);
  auto only_data = Subscriber::Start(server_->grpc_address(), data);
  std::vector<Event> want;
  for (const Event& e : ref) {
    if (e.has_data()) want.push_back(e);
  }
  want.erase(want.begin(), want.end() - 3);
  ExpectSameEvents(WaitEvents(*only_data, 3), want);
}

TEST_F(StartTest, StartTimeInTheMiddle) {
  RunClients(25);
  std::vector<Event> ref = reference_->Snapshot().events;
  ASSERT_EQ(ref.size(), 100u);
  const uint64_t t = ref[49].time_unix_nano();
  // The first event in seq order at or after t (the two loops' times may
  // interleave, so it can come before index 49).
  size_t first = 0;
  while (ref[first].time_unix_nano() < t) ++first;
  ASSERT_LE(first, 49u);

  SubscribeRequest request;
  request.set_start_time_unix_nano(t);
  auto sub = Subscriber::Start(server_->grpc_address(), request);
  ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
  ExpectSameEvents(WaitEvents(*sub, ref.size() - first),
                   std::vector<Event>(ref.begin() + first, ref.end()));

  // A time after every event: live.
  SubscribeRequest later;
  later.set_start_time_unix_nano(ref.back().time_unix_nano() + 1);
  auto live = Subscriber::Start(server_->grpc_address(), later);
  ASSERT_TRUE(live->WaitStarted(Deadline()).ok());
  RunClients(1);
  ref = reference_->Snapshot().events;
  ExpectSameEvents(WaitEvents(*live, 4),
                   std::vector<Event>(ref.begin() + 100, ref.end()));
}

TEST_F(StartTest, MoreThanOneStartIsRefusedNamingTheFields) {
  RunClients(1);
  struct Case {
    SubscribeRequest request;
    std::vector<std::string> names;
  };
  std::vector<Case> cases(4);
  cases[0].request.set_resume_after_seq(1);
  cases[0].request.set_start_back(2);
  cases[0].names = {"start_back", "resume_after_seq"};
  cases[1].request.set_resume_after_seq(1);
  cases[1].request.set_start_time_unix_nano(5);
  cases[1].names = {"start_time_unix_nano", "resume_after_seq"};
  cases[2].request.set_start_back(2);
  cases[2].request.set_start_time_unix_nano(5);
  cases[2].names = {"start_back", "start_time_unix_nano"};
  cases[3].request.set_resume_epoch("e");
  cases[3].request.set_start_back(2);
  cases[3].names = {"start_back", "resume_epoch"};
  for (const Case& c : cases) {
    auto sub = Subscriber::Start(server_->grpc_address(), c.request);
    auto started = sub->WaitStarted(Deadline());
    ASSERT_FALSE(started.ok()) << c.request.ShortDebugString();
    EXPECT_EQ(started.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& name : c.names) {
      EXPECT_TRUE(absl::StrContains(started.status().message(), name))
          << started.status();
    }
    EXPECT_TRUE(absl::StartsWith(started.status().message(), "Subscribe"))
        << started.status();
  }
}

}  // namespace
}  // namespace fanin::servertest
