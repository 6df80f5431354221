// Pull-mode listeners on every poller: Readable once per drain, Read limits,
// re-arming after a short Read, EOF, and Read's errors.
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::WaitFor;
using fanin::v1::EventKind;

class PullTest : public ::testing::TestWithParam<reactor::PollerKind> {
 protected:
  void SetUp() override {
    ServerConfig config = BaseConfig(GetParam());
    config.core.listen.push_back({"pull", net::Endpoint::Loopback(0)});
    config.core.pull_listeners = {"pull"};
    server_ = StartServer(config);
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(server_->grpc_address());
    watch_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
  }

  std::pair<TcpClient, uint64_t> Open(const std::string& listener) {
    auto client = ConnectTcp(ListenAddress(*server_, listener));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {TcpClient(), 0};
    uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
    EXPECT_NE(id, 0u);
    return {*std::move(client), id};
  }

  grpc::Status Read(uint64_t id, uint32_t max_bytes,
                    fanin::v1::ReadResponse* response) {
    fanin::v1::ReadRequest request;
    request.set_connection_id(id);
    request.set_max_bytes(max_bytes);
    auto context = NewContext();
    return stub_->Read(context.get(), request, response);
  }

  int CountOf(uint64_t id, EventKind kind) {
    int n = 0;
    for (const auto& e : EventsOf(watch_->Snapshot().events, id)) {
      if (KindOf(e) == kind) ++n;
    }
    return n;
  }

  bool WaitCount(uint64_t id, EventKind kind, int n) {
    return watch_->WaitUntil(
        [&](const Subscriber::State& s) {
          int seen = 0;
          for (const auto& e : s.events) {
            if (e.connection_id() == id && KindOf(e) == kind) ++seen;
          }
          return seen >= n;
        },
        Deadline());
  }

  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<Subscriber> watch_;
};

// True once every byte the client sent is in the server's receive queue
// (acknowledged), so a Read there sees all of it.
bool AllAcked(int fd) {
  int unacked = -1;
  return ::ioctl(fd, SIOCOUTQ, &unacked) == 0 && unacked == 0;
}

TEST_P(PullTest, ReadableOnceReadLimitsShortReadRearmsEof) {
  auto opened_client = Open("pull");
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(client.SendAll("0123456789").ok());
  ASSERT_TRUE(WaitCount(id, fanin::v1::EVENT_KIND_READABLE, 1));
  // More bytes while the first are unread: no second Readable for them.
  ASSERT_TRUE(client.SendAll("abcdefghij").ok());
  ASSERT_TRUE(WaitFor([&] { return AllAcked(client.fd()); }, Deadline()));

  std::string got;
  for (int i = 0; i < 5; ++i) {
    fanin::v1::ReadResponse r;
    ASSERT_TRUE(Read(id, 4, &r).ok());
    EXPECT_EQ(r.data().size(), 4u) << "read " << i;
    EXPECT_FALSE(r.read_closed());
    got += r.data();
  }
  EXPECT_EQ(got, "0123456789abcdefghij");
  fanin::v1::ReadResponse empty;
  ASSERT_TRUE(Read(id, 4, &empty).ok());
  EXPECT_EQ(empty.data(), "") << "drained";
  EXPECT_FALSE(empty.read_closed());

  // Drained and re-armed: new bytes announce themselves again.
  ASSERT_TRUE(client.SendAll("XYZ").ok());
  ASSERT_TRUE(WaitCount(id, fanin::v1::EVENT_KIND_READABLE, 2));
  fanin::v1::ReadResponse r;
  ASSERT_TRUE(Read(id, 0, &r).ok());
  EXPECT_EQ(r.data(), "XYZ");

  ASSERT_TRUE(client.ShutdownWrite().ok());
  bool read_closed = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        fanin::v1::ReadResponse last;
        grpc::Status s = Read(id, 0, &last);
        EXPECT_TRUE(s.ok()) << s.error_message();
        EXPECT_EQ(last.data(), "");
        read_closed = last.read_closed();
        return !s.ok() || read_closed;
      },
      Deadline()));
  EXPECT_TRUE(read_closed);
  auto closed = watch_->WaitClosed(id, Deadline());
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_PEER_CLOSED);
  EXPECT_EQ(closed->closed().bytes_received(), 23u);
  // Exactly: one Readable per drain (the third announces the FIN), never a
  // Data event on a pull connection.
  EXPECT_EQ(
      KindsOf(EventsOf(watch_->Snapshot().events, id)),
      (std::vector<EventKind>{
          fanin::v1::EVENT_KIND_OPENED, fanin::v1::EVENT_KIND_READABLE,
          fanin::v1::EVENT_KIND_READABLE, fanin::v1::EVENT_KIND_READABLE,
          fanin::v1::EVENT_KIND_READ_CLOSED, fanin::v1::EVENT_KIND_CLOSED}));
}

TEST_P(PullTest, LargeInputComesInBoundedReads) {
  auto opened_client = Open("pull");
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  const std::string sent = RandomBytes(300 << 10, 9);
  absl::Status send_status;
  std::thread sender([&] { send_status = client.SendAll(sent, Deadline()); });
  std::string got;
  bool ok = WaitFor(
      [&] {
        fanin::v1::ReadResponse r;
        grpc::Status s = Read(id, 0, &r);
        EXPECT_TRUE(s.ok()) << s.error_message();
        EXPECT_LE(r.data().size(), 65536u) << "max_bytes 0 means 65536";
        got += r.data();
        return !s.ok() || got.size() >= sent.size();
      },
      Deadline());
  sender.join();
  ASSERT_TRUE(send_status.ok()) << send_status;
  ASSERT_TRUE(ok);
  EXPECT_TRUE(got == sent) << "bytes differ";
  EXPECT_EQ(CountOf(id, fanin::v1::EVENT_KIND_DATA), 0);
}

TEST_P(PullTest, ReadErrors) {
  auto opened_push = Open("default");  // Kept open for the Reads below.
  const uint64_t push_id = opened_push.second;
  ASSERT_NE(push_id, 0u);
  fanin::v1::ReadResponse r;
  grpc::Status s = Read(push_id, 10, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_NE(s.error_message().find("pull"), std::string::npos)
      << s.error_message();
  s = Read(0, 10, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("connection_id"), std::string::npos)
      << s.error_message();
  s = Read(push_id + 1000, 10, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
}

INSTANTIATE_TEST_SUITE_P(AllPollers, PullTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
