// Write, CloseConnection and the ways a connection ends, on every poller:
// bytes reach the raw client exactly, outbound limits, Writable after a
// blocked write, graceful close (every byte, then FIN), abort (RST), peer
// FIN, peer RST and half-open connections.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::v1::Event;

class WriteCloseTest : public ::testing::TestWithParam<reactor::PollerKind> {
 public:
  // Starts the server and a lossless, unfiltered watcher.
  void Start(ServerConfig config) {
    server_ = StartServer(std::move(config));
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(server_->grpc_address());
    watch_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
  }
  void Start() { Start(BaseConfig(GetParam())); }

  // Connects a raw client to `listener` and returns it with its id.
  std::pair<TcpClient, uint64_t> Open(const std::string& listener = "default") {
    auto client = ConnectTcp(ListenAddress(*server_, listener));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {TcpClient(), 0};
    uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
    EXPECT_NE(id, 0u);
    return {*std::move(client), id};
  }

  grpc::Status Write(uint64_t id, const std::string& data, bool close_after,
                     uint64_t* queued = nullptr) {
    fanin::v1::WriteRequest request;
    request.set_connection_id(id);
    request.set_data(data);
    request.set_close_after(close_after);
    fanin::v1::WriteResponse response;
    auto context = NewContext();
    grpc::Status s = stub_->Write(context.get(), request, &response);
    if (queued != nullptr) *queued = response.queued_bytes();
    return s;
  }

  grpc::Status Close(uint64_t id, bool abort) {
    fanin::v1::CloseConnectionRequest request;
    request.set_connection_id(id);
    request.set_abort(abort);
    fanin::v1::CloseConnectionResponse response;
    auto context = NewContext();
    return stub_->CloseConnection(context.get(), request, &response);
  }

  // The connection as ListConnections reports it.
  std::optional<fanin::v1::Connection> Listed(uint64_t id) {
    fanin::v1::ListConnectionsRequest request;
    request.set_page_size(1000);
    fanin::v1::ListConnectionsResponse response;
    auto context = NewContext();
    grpc::Status s = stub_->ListConnections(context.get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& c : response.connections()) {
      if (c.connection_id() == id) return c;
    }
    return std::nullopt;
  }

  // The Closed event of `id`, after which no event of it may follow.
  fanin::v1::Closed WaitClosed(uint64_t id) {
    auto closed = watch_->WaitClosed(id, Deadline());
    EXPECT_TRUE(closed.has_value()) << "no Closed for " << id;
    return closed.has_value() ? closed->closed() : fanin::v1::Closed();
  }

  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<Subscriber> watch_;
};

void ExpectCode(const grpc::Status& s, grpc::StatusCode code,
                const std::string& field) {
  EXPECT_EQ(s.error_code(), code) << s.error_message();
  EXPECT_NE(s.error_message().find(field), std::string::npos)
      << "message should name " << field << ": " << s.error_message();
}

TEST_P(WriteCloseTest, WriteReachesTheClientExactly) {
  Start();
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  uint64_t queued = 99;
  ASSERT_TRUE(Write(id, "hello", false, &queued).ok());
  EXPECT_EQ(queued, 0u) << "a small write to an idle socket goes out at once";
  auto got = client.RecvExactly(5, Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "hello");

  const std::string big = RandomBytes(300 << 10, 42);
  ASSERT_TRUE(Write(id, big, false).ok());
  got = client.RecvExactly(big.size(), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == big);
  auto listed = Listed(id);
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->bytes_sent(), big.size() + 5);
  EXPECT_EQ(listed->queued_bytes(), 0u);

  ExpectCode(Write(id + 1000, "x", false), grpc::StatusCode::NOT_FOUND,
             absl::StrCat(id + 1000));
  ExpectCode(Write(0, "x", false), grpc::StatusCode::INVALID_ARGUMENT,
             "connection_id");
  ExpectCode(Write(id, "", false), grpc::StatusCode::INVALID_ARGUMENT, "data");
}

// A Write that does not fit is refused whole: nothing of it is queued or
// sent, whether the buffer was empty or partly full.
TEST_P(WriteCloseTest, WriteOverOutboundLimitQueuesNothing) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.max_outbound_bytes = 256 << 10;
  Start(config);
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ExpectCode(Write(id, std::string((256 << 10) + 1, 'x'), false),
             grpc::StatusCode::RESOURCE_EXHAUSTED, "outbound");
  auto listed = Listed(id);
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->queued_bytes(), 0u);
  EXPECT_EQ(listed->bytes_sent(), 0u);

  // The client does not read: writes pile up until some are queued.
  std::string accepted;
  uint64_t queued = 0;
  for (int i = 0; i < 1000 && queued == 0; ++i) {
    std::string chunk = RandomBytes(16 << 10, i);
    ASSERT_TRUE(Write(id, chunk, false, &queued).ok());
    accepted += chunk;
  }
  ASSERT_GT(queued, 0u) << "the socket never filled";
  const uint64_t room = (256 << 10) - queued;
  ExpectCode(Write(id, std::string(room + 1, 'y'), false),
             grpc::StatusCode::RESOURCE_EXHAUSTED, "outbound");
  listed = Listed(id);
  ASSERT_TRUE(listed.has_value());
  // Only the server's flushing can lower it; nothing of the refused write.
  EXPECT_LE(listed->queued_bytes(), queued);

  auto got = client.RecvExactly(accepted.size(), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == accepted);
  ASSERT_TRUE(Write(id, "end", false).ok());
  got = client.RecvExactly(3, Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "end") << "bytes of the refused write reached the client";
}

// The client does not read until the server's socket buffer is full; the
// queued bytes then flush and a Writable event follows.
TEST_P(WriteCloseTest, WritableAfterBlockedWrite) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.max_outbound_bytes = 64 << 20;
  Start(config);
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  std::string accepted;
  uint64_t queued = 0;
  for (int i = 0; i < 64 && queued == 0; ++i) {
    std::string chunk = RandomBytes(1 << 20, 100 + i);
    ASSERT_TRUE(Write(id, chunk, false, &queued).ok());
    accepted += chunk;
  }
  ASSERT_GT(queued, 0u) << "several MiB never filled the socket";
  // One more while blocked: appended after the queue, in order.
  std::string tail = RandomBytes(100 << 10, 7);
  ASSERT_TRUE(Write(id, tail, false).ok());
  accepted += tail;
  for (const Event& e : EventsOf(watch_->Snapshot().events, id)) {
    EXPECT_FALSE(e.has_writable()) << "Writable while bytes are still queued";
  }

  auto got = client.RecvExactly(accepted.size(), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == accepted) << "bytes differ";
  auto writable =
      watch_->WaitEvent(id, fanin::v1::EVENT_KIND_WRITABLE, Deadline());
  ASSERT_TRUE(writable.has_value()) << "no Writable after the queue drained";
  auto listed = Listed(id);
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->queued_bytes(), 0u);
  EXPECT_EQ(listed->bytes_sent(), accepted.size());
}

// Graceful close: everything written is delivered, then a clean EOF (not a
// reset), even though the client had sent bytes the server never consumed;
// then Closed(CLOSED_BY_SUBSCRIBER). A second close is NOT_FOUND.
TEST_P(WriteCloseTest, GracefulCloseDeliversEverythingThenEof) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.listen.push_back({"pull", net::Endpoint::Loopback(0)});
  config.core.pull_listeners = {"pull"};
  Start(config);
  for (const char* listener : {"default", "pull"}) {
    SCOPED_TRACE(listener);
    auto opened_client = Open(listener);
    TcpClient& client = opened_client.first;
    const uint64_t id = opened_client.second;
    ASSERT_NE(id, 0u);
    // Unread input at close time: on the pull listener nobody reads it.
    ASSERT_TRUE(client.SendAll(RandomBytes(64 << 10, 1), Deadline()).ok());
    const std::string out = RandomBytes(2 << 20, 2);
    ASSERT_TRUE(Write(id, out, false).ok());
    ASSERT_TRUE(Close(id, false).ok());
    ExpectCode(Close(id, false), grpc::StatusCode::NOT_FOUND, absl::StrCat(id));
    int error = -2;
    std::string got = ReadUntilEofOrError(client.fd(), Deadline(), &error);
    EXPECT_EQ(error, 0) << "expected EOF, got " << std::strerror(error);
    EXPECT_EQ(got.size(), out.size());
    EXPECT_TRUE(got == out);
    client.Close();
    fanin::v1::Closed closed = WaitClosed(id);
    EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER)
        << closed.detail();
    EXPECT_EQ(closed.bytes_sent(), out.size());
    ExpectCode(Close(id, false), grpc::StatusCode::NOT_FOUND, absl::StrCat(id));
    ExpectCode(Write(id, "x", false), grpc::StatusCode::NOT_FOUND,
               absl::StrCat(id));
  }
  ExpectCode(Close(0, false), grpc::StatusCode::INVALID_ARGUMENT,
             "connection_id");
}

// A client that cannot take much at once: its receive buffer is set small
// before connecting, so a large write must wait in the server's outbound
// queue. Not read from until the test says so. Invalid on error (the test
// fails).
TcpClient ConnectWithSmallReceiveBuffer(const std::string& address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    ADD_FAILURE() << "not HOST:PORT: " << address;
    return TcpClient();
  }
  sockaddr_in to = {};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &to.sin_addr) !=
      1) {
    ADD_FAILURE() << "not an IPv4 address: " << address;
    return TcpClient();
  }
  TcpClient client(::socket(AF_INET, SOCK_STREAM, 0));
  const int small = 4096;
  if (client.fd() < 0 ||
      ::setsockopt(client.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) !=
          0 ||
      ::connect(client.fd(), reinterpret_cast<sockaddr*>(&to), sizeof(to)) !=
          0) {
    ADD_FAILURE() << "connect to " << address << ": " << std::strerror(errno);
    return TcpClient();
  }
  ::fcntl(client.fd(), F_SETFL, ::fcntl(client.fd(), F_GETFL) | O_NONBLOCK);
  return client;
}

// Graceful close (CloseConnection, or Write with close_after) must send FIN
// only after every queued byte went out: the client reads only after the
// close was asked for, so most of the bytes are still in the server's queue
// when it is.
void FlushesTheQueueBeforeFin(WriteCloseTest& t, bool by_close_after) {
  ServerConfig config = BaseConfig(t.GetParam());
  config.core.max_outbound_bytes = 64 << 20;
  t.Start(config);
  TcpClient client =
      ConnectWithSmallReceiveBuffer(ListenAddress(*t.server_, "default"));
  ASSERT_GE(client.fd(), 0);
  const uint64_t id = t.watch_->WaitOpened(client.fd(), Deadline());
  ASSERT_NE(id, 0u);
  std::string accepted;
  uint64_t queued = 0;
  for (int i = 0; i < 32 && queued < (1 << 20); ++i) {
    std::string chunk = RandomBytes(1 << 20, 200 + i);
    ASSERT_TRUE(t.Write(id, chunk, false, &queued).ok());
    accepted += chunk;
  }
  ASSERT_GE(queued, 1u << 20) << "the writes never queued: test too weak";
  if (by_close_after) {
    // Its own bytes queue behind the others and go out before the FIN too.
    const std::string last = RandomBytes(1 << 20, 299);
    ASSERT_TRUE(t.Write(id, last, true, &queued).ok());
    accepted += last;
    ExpectCode(t.Write(id, "late", false), grpc::StatusCode::NOT_FOUND,
               absl::StrCat(id));
  } else {
    ASSERT_TRUE(t.Close(id, false).ok());
  }
  int error = -2;
  std::string got = ReadUntilEofOrError(client.fd(), Deadline(), &error);
  EXPECT_EQ(error, 0) << "expected EOF, got "
                      << (error > 0 ? std::strerror(error) : "deadline");
  EXPECT_EQ(got.size(), accepted.size()) << "FIN before the queue was flushed";
  EXPECT_TRUE(got == accepted) << "bytes differ";
  client.Close();
  fanin::v1::Closed closed = t.WaitClosed(id);
  EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER)
      << closed.detail();
  EXPECT_EQ(closed.bytes_sent(), accepted.size());
}

TEST_P(WriteCloseTest, GracefulCloseFlushesTheQueueBeforeFin) {
  FlushesTheQueueBeforeFin(*this, /*by_close_after=*/false);
}

TEST_P(WriteCloseTest, CloseAfterFlushesTheQueueBeforeFin) {
  FlushesTheQueueBeforeFin(*this, /*by_close_after=*/true);
}

TEST_P(WriteCloseTest, WriteWithCloseAfter) {
  Start();
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(Write(id, "bye", true).ok());
  int error = -2;
  EXPECT_EQ(ReadUntilEofOrError(client.fd(), Deadline(), &error), "bye");
  EXPECT_EQ(error, 0);
  client.Close();
  EXPECT_EQ(WaitClosed(id).reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
}

TEST_P(WriteCloseTest, AbortResetsTheClient) {
  Start();
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(Close(id, true).ok());
  int error = -2;
  ReadUntilEofOrError(client.fd(), Deadline(), &error);
  EXPECT_EQ(error, ECONNRESET) << (error > 0 ? std::strerror(error) : "EOF");
  EXPECT_EQ(WaitClosed(id).reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  ExpectCode(Close(id, true), grpc::StatusCode::NOT_FOUND, absl::StrCat(id));
}

TEST_P(WriteCloseTest, PeerFinGivesDataReadClosedThenClosed) {
  Start();
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  const std::string sent = RandomBytes(200 << 10, 5);
  ASSERT_TRUE(client.SendAll(sent, Deadline()).ok());
  ASSERT_TRUE(client.ShutdownWrite().ok());
  fanin::v1::Closed closed = WaitClosed(id);
  EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_PEER_CLOSED)
      << closed.detail();
  EXPECT_EQ(closed.bytes_received(), sent.size());
  std::vector<Event> mine = EventsOf(watch_->Snapshot().events, id);
  ASSERT_GE(mine.size(), 4u);
  EXPECT_TRUE(mine[0].has_opened());
  EXPECT_TRUE(mine[mine.size() - 2].has_read_closed());
  EXPECT_TRUE(mine.back().has_closed());
  EXPECT_TRUE(PayloadOf(mine, id) == sent) << "data before ReadClosed";
  std::string drained;
  EXPECT_TRUE(client.WaitForPeerClose(Deadline(), &drained));
}

TEST_P(WriteCloseTest, PeerResetIsReset) {
  Start();
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(client.SendAll("soon gone").ok());
  ASSERT_TRUE(watch_->WaitEvent(id, fanin::v1::EVENT_KIND_DATA, Deadline()));
  client.Abort();
  fanin::v1::Closed closed = WaitClosed(id);
  EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_RESET) << closed.detail();
}

TEST_P(WriteCloseTest, KeepHalfOpenStaysWritable) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.keep_half_open = true;
  Start(config);
  auto opened_client = Open();
  TcpClient& client = opened_client.first;
  const uint64_t id = opened_client.second;
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(client.SendAll("last words").ok());
  ASSERT_TRUE(client.ShutdownWrite().ok());
  ASSERT_TRUE(
      watch_->WaitEvent(id, fanin::v1::EVENT_KIND_READ_CLOSED, Deadline()));
  ASSERT_TRUE(Write(id, "still here", false).ok());
  auto got = client.RecvExactly(10, Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "still here");
  ASSERT_TRUE(Listed(id).has_value()) << "half-open connection not listed";
  ASSERT_TRUE(Close(id, false).ok());
  int error = -2;
  EXPECT_EQ(ReadUntilEofOrError(client.fd(), Deadline(), &error), "");
  EXPECT_EQ(error, 0);
  fanin::v1::Closed closed = WaitClosed(id);
  EXPECT_EQ(closed.reason(), fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  std::vector<fanin::v1::EventKind> kinds =
      KindsOf(EventsOf(watch_->Snapshot().events, id));
  EXPECT_EQ(kinds, (std::vector<fanin::v1::EventKind>{
                       fanin::v1::EVENT_KIND_OPENED, fanin::v1::EVENT_KIND_DATA,
                       fanin::v1::EVENT_KIND_READ_CLOSED,
                       fanin::v1::EVENT_KIND_CLOSED}));
}

// Server shutdown: queued writes are flushed, every connection ends with
// Closed(SERVER_SHUTDOWN), and the stream delivers those events and then
// finishes OK.
TEST_P(WriteCloseTest, ShutdownFlushesClosesAndFinishesStreams) {
  ServerConfig config = BaseConfig(GetParam());
  config.core.max_outbound_bytes = 64 << 20;
  Start(config);
  auto opened_idle = Open();
  TcpClient& idle = opened_idle.first;
  const uint64_t idle_id = opened_idle.second;
  auto opened_busy = Open();
  TcpClient& busy = opened_busy.first;
  const uint64_t busy_id = opened_busy.second;
  ASSERT_NE(idle_id, 0u);
  ASSERT_NE(busy_id, 0u);
  const std::string out = RandomBytes(4 << 20, 3);
  uint64_t queued = 0;
  ASSERT_TRUE(Write(busy_id, out.substr(0, 2 << 20), false, &queued).ok());
  ASSERT_TRUE(Write(busy_id, out.substr(2 << 20), false, &queued).ok());
  ASSERT_GT(queued, 0u) << "nothing left to flush: test too weak";
  // The busy client reads while the server drains.
  std::string got;
  int error = -2;
  std::thread reader([&, fd = busy.fd()] {
    got = ReadUntilEofOrError(fd, Deadline(), &error);
  });
  server_->Shutdown();
  reader.join();
  EXPECT_EQ(error, 0) << "expected EOF";
  EXPECT_TRUE(got == out) << "got " << got.size() << " of " << out.size();
  EXPECT_TRUE(idle.WaitForPeerClose(Deadline()));
  for (uint64_t id : {idle_id, busy_id}) {
    auto closed = watch_->WaitClosed(id, Deadline());
    ASSERT_TRUE(closed.has_value()) << id;
    EXPECT_EQ(closed->closed().reason(),
              fanin::v1::CLOSE_REASON_SERVER_SHUTDOWN);
  }
  grpc::Status end = watch_->WaitDone(Deadline());
  EXPECT_TRUE(end.ok()) << end.error_code() << " " << end.error_message();
}

INSTANTIATE_TEST_SUITE_P(AllPollers, WriteCloseTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
