// Helpers for the fanin server's end-to-end tests: an in-process server per
// poller, a Subscribe stream read by its own thread (which a test can hold to
// play a slow subscriber), raw clients, and hand-encoded calls to the health
// and reflection services.
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
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "server/reactor/poller.h"
#include "tests/testing/tcp_client.h"

namespace fanin::servertest {

using fanin::testing::TcpClient;

// Generous: the machine is shared, 2 cores, and tests also run under ASan.
inline absl::Time Deadline(absl::Duration d = absl::Seconds(30)) {
  return absl::Now() + d;
}

// Every backend, for INSTANTIATE_TEST_SUITE_P, and a readable test name.
const std::vector<reactor::PollerKind>& AllPollers();
std::string PollerTestName(
    const ::testing::TestParamInfo<reactor::PollerKind>& info);

// One push listener "default" on 127.0.0.1:0, gRPC on 127.0.0.1:0, 2 loops,
// a short drain so teardown stays quick.
ServerConfig BaseConfig(reactor::PollerKind poller);

// Starts the server; fails the test (returns null) when it cannot.
std::unique_ptr<FaninServer> StartServer(ServerConfig config);
// The bound address of the named listener ("" when there is none).
std::string ListenAddress(const FaninServer& server, const std::string& name);

// A stub on its own channel (and its own HTTP/2 connection, so one stalled
// stream cannot hold another's connection window).
std::unique_ptr<fanin::v1::FanIn::Stub> NewStub(const std::string& address);
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address);
// A context with a 30 s deadline.
std::unique_ptr<grpc::ClientContext> NewContext();

// "KIND" for messages: "OPENED", "DATA", ...
fanin::v1::EventKind KindOf(const fanin::v1::Event& event);
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

// getsockname of a client socket as fanin formats a peer: "127.0.0.1:PORT".
std::string LocalAddressOf(int fd);
// A TCP client bound to `source_ip` (any 127.x.y.z) connected to `address`
// ("HOST:PORT"); blocking connect. Fails the test and returns an invalid
// client on error.
TcpClient ConnectFrom(const std::string& source_ip, const std::string& address);
// Reads (blocking, with a deadline) until EOF or error; returns the bytes and
// sets *error to 0 on EOF or to the errno (e.g. ECONNRESET); -1 on deadline.
std::string ReadUntilEofOrError(int fd, absl::Time deadline, int* error);

// A Subscribe stream, read by a thread of its own until it ends. Hold() makes
// the reader stop calling Read (the server then sees a subscriber that does
// not keep up); Release() lets it go on.
class Subscriber {
 public:
  struct State {
    std::optional<fanin::v1::Started> started;
    // Every message after Started, in order.
    std::vector<fanin::v1::SubscribeResponse> messages;
    // The events of every batch, in order.
    std::vector<fanin::v1::Event> events;
    std::vector<fanin::v1::Gap> gaps;
    std::vector<fanin::v1::Heartbeat> heartbeats;
    std::vector<int> batch_sizes;
    // Sum of Gap.lost, and of Data.size.
    uint64_t lost = 0;
    uint64_t data_bytes = 0;
    // Highest seq covered by an event or a gap.
    uint64_t covered_seq = 0;
    // id -> index in events of its Opened; remote address -> id (the last
    // one: clients of different listeners may share a port); and
    // "remote|local" -> id, which tells those apart.
    absl::flat_hash_map<uint64_t, size_t> opened;
    absl::flat_hash_map<std::string, uint64_t> id_by_remote;
    absl::flat_hash_map<std::string, uint64_t> id_by_ends;
    absl::flat_hash_map<uint64_t, size_t> closed;
    bool done = false;
    grpc::Status status;
  };

  static std::unique_ptr<Subscriber> Start(
      const std::string& address, const fanin::v1::SubscribeRequest& request,
      bool held = false);
  // Cancels the stream and joins the reader.
  ~Subscriber();

  void Hold();
  void Release();

  // Waits until pred(state) holds; false at the deadline.
  bool WaitUntil(absl::FunctionRef<bool(const State&)> pred,
                 absl::Time deadline);
  // Started, or the error that ended the stream first.
  absl::StatusOr<fanin::v1::Started> WaitStarted(absl::Time deadline);
  // The id of the connection whose client end is `client_fd` (matched by
  // both addresses); 0 at the deadline.
  uint64_t WaitOpened(int client_fd, absl::Time deadline);
  // Waits for the Closed event of `id`; nullopt at the deadline.
  std::optional<fanin::v1::Event> WaitClosed(uint64_t id, absl::Time deadline);
  // Waits for an event of `kind` on `id`; nullopt at the deadline.
  std::optional<fanin::v1::Event> WaitEvent(uint64_t id,
                                            fanin::v1::EventKind kind,
                                            absl::Time deadline);
  // Waits until the stream ended; its status (DEADLINE_EXCEEDED if not).
  grpc::Status WaitDone(absl::Time deadline);

  // A copy of the state so far.
  State Snapshot() const;
  // Cancels the stream (the reader ends soon after).
  void Cancel();

 private:
  Subscriber() = default;
  void Run(fanin::v1::SubscribeRequest request);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  grpc::ClientContext context_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  State state_ ABSL_GUARDED_BY(mu_);
};

// A lossless, unfiltered subscription request.
fanin::v1::SubscribeRequest Lossless();

// grpc.health.v1.Health/Check for `service` with a hand-encoded request;
// the ServingStatus value (1 = SERVING) or the call's error.
absl::StatusOr<int> HealthCheck(const std::string& address,
                                const std::string& service);
// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with
// list_services; the service names.
absl::StatusOr<std::vector<std::string>> ReflectionListServices(
    const std::string& address);

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
