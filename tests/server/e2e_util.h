// Helpers for the fanin server's end-to-end tests: an in-process server per
// poller, a Subscribe stream read by its own thread (which a test can hold to
// play a slow subscriber), raw clients, and hand-encoded calls to the health
// and reflection services.
//
// The gRPC helpers (Subscriber, NewStub, HealthCheck...) live in
// tests/testing/grpc_util.h, shared with tests/ops.
//
// Example:
//   auto server = StartServer(BaseConfig(reactor::PollerKind::kPoll));
//   auto stub = NewStub(server->grpc_address());
//   auto sub = Subscriber::Start(server->grpc_address(), {});
//   ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
//   auto client = ConnectTcp(ListenAddress(*server, "default")).value();
//   uint64_t id = sub->WaitOpened(client.fd(), Deadline());
//
// Every wait takes a deadline; nothing sleeps for a fixed time.
#ifndef FANIN_TESTS_SERVER_E2E_UTIL_H_
#define FANIN_TESTS_SERVER_E2E_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanin_server.h"
#include "server/net/address.h"
#include "server/reactor/poller.h"
#include "tests/testing/grpc_util.h"
#include "tests/testing/pollers.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {

using ::fanin::net::LocalAddressOf;
using ::fanin::testing::AllPollerKinds;
using ::fanin::testing::ConnectFrom;
using ::fanin::testing::Deadline;
using ::fanin::testing::HealthCheck;
using ::fanin::testing::KindOf;
using ::fanin::testing::LosslessRequest;
using ::fanin::testing::NewChannel;
using ::fanin::testing::NewContext;
using ::fanin::testing::NewStub;
using ::fanin::testing::PollerTestName;
using ::fanin::testing::ReadUntilEofOrError;
using ::fanin::testing::ReflectionListServices;
using ::fanin::testing::Subscriber;
using ::fanin::testing::TcpClient;

// One push listener "default" on 127.0.0.1:0, gRPC on 127.0.0.1:0, 2 loops,
// a short drain so teardown stays quick.
ServerConfig BaseConfig(reactor::PollerKind poller);

// Starts the server; fails the test (returns null) when it cannot.
std::unique_ptr<FaninServer> StartServer(ServerConfig config);
// The bound address of the named listener ("" when there is none).
std::string ListenAddress(const FaninServer& server, const std::string& name);

// "OPENED", "DATA", ... for messages.
std::string KindName(fanin::v1::EventKind kind);
// The events of one connection, in order.
std::vector<fanin::v1::Event> EventsOf(
    const std::vector<fanin::v1::Event>& events, uint64_t connection_id);
// The kinds of those events, e.g. {OPENED, DATA, READ_CLOSED, CLOSED}.
std::vector<fanin::v1::EventKind> KindsOf(
    const std::vector<fanin::v1::Event>& events);
// The concatenated Data payloads of one connection.
std::string PayloadOf(const std::vector<fanin::v1::Event>& events,
                      uint64_t connection_id);

// Sends `data` to many non-blocking sockets at once in random-sized pieces
// (1..max_piece bytes), never blocking on one socket while another could take
// bytes; returns when everything is sent or the deadline passes.
struct SendJob {
  int fd;
  std::string data;
  size_t sent = 0;
};
absl::Status SendAllInterleaved(std::vector<SendJob>& jobs, size_t max_piece,
                                uint64_t seed, absl::Time deadline);

// Deterministic random bytes.
std::string RandomBytes(size_t n, uint64_t seed);

}  // namespace fanin::servertest

#endif  // FANIN_TESTS_SERVER_E2E_UTIL_H_
