// Helpers for tests that talk to a fanin server over gRPC: channels (plain
// or TLS, with a bearer token), a Subscribe stream read by its own thread
// (which a test can hold to play a slow subscriber), and hand-encoded calls
// to the health and reflection services, whose generated code is not in the
// build.
//
// Example:
//   auto sub = Subscriber::Start(server->grpc_address(), LosslessRequest());
//   ASSERT_TRUE(sub->WaitStarted(Deadline()).ok());
//   auto client = ConnectTcp(listen_address).value();
//   uint64_t id = sub->WaitOpened(client.fd(), Deadline());
//
// Every wait takes a deadline; nothing sleeps for a fixed time.
#ifndef FANIN_TESTS_TESTING_GRPC_UTIL_H_
#define FANIN_TESTS_TESTING_GRPC_UTIL_H_

#include <cstdint>
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

namespace fanin::testing {

// Generous: the machine is shared, 2 cores, and tests also run under ASan.
inline absl::Time Deadline(absl::Duration d = absl::Seconds(30)) {
  return absl::Now() + d;
}

// The file's bytes; fails the test when it cannot be read.
std::string ReadFileOrDie(const std::string& path);

// How a test client connects.
struct ClientAuth {
  std::string ca_file;  // non-empty: TLS
  std::string cert_file, key_file;
  std::string token;  // sent as "authorization: Bearer <token>"
};
// A channel of its own (and its own HTTP/2 connection, so one stalled stream
// cannot hold another's connection window), without window growth, so a
// subscriber that stops reading stalls the server soon.
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ClientAuth& auth = {});
std::unique_ptr<fanin::v1::FanIn::Stub> NewStub(const std::string& address,
                                                const ClientAuth& auth = {});
// A context with a 30 s deadline (and the token, if any).
std::unique_ptr<grpc::ClientContext> NewContext(const ClientAuth& auth = {});

// The kind of an event message: EVENT_KIND_OPENED, EVENT_KIND_DATA, ...
fanin::v1::EventKind KindOf(const fanin::v1::Event& event);

// A lossless, unfiltered subscription request.
fanin::v1::SubscribeRequest LosslessRequest();

// A Subscribe stream, read by a thread of its own until it ends. Hold() makes
// the reader stop calling Read (the server then sees a subscriber that does
// not keep up); Release() lets it go on.
class Subscriber {
 public:
  struct State {
    std::optional<fanin::v1::Started> started;
    // Every message after Started, in order (batches without their events,
    // which are in `events`), and for each the number of events received
    // before it: messages[i] came after events[0, events_before[i]).
    std::vector<fanin::v1::SubscribeResponse> messages;
    std::vector<size_t> events_before;
    // Group members: the Assigned messages.
    std::vector<fanin::v1::Assigned> assigned;
    // The events of every batch, in order.
    std::vector<fanin::v1::Event> events;
    std::vector<fanin::v1::Gap> gaps;
    std::vector<fanin::v1::Heartbeat> heartbeats;
    std::vector<int> batch_sizes;
    // Sum of Gap.lost, and of Data.size.
    uint64_t lost = 0;
    uint64_t data_bytes = 0;
    // Sum of Data.size per connection id.
    absl::flat_hash_map<uint64_t, uint64_t> data_bytes_by_id;
    // Highest seq covered by an event or a gap.
    uint64_t covered_seq = 0;
    // id -> index in events of its Opened; remote address -> id (the last
    // one: clients of different listeners may share a port); and
    // "remote|local" -> id, which tells those apart.
    absl::flat_hash_map<uint64_t, size_t> opened;
    absl::flat_hash_map<std::string, uint64_t> id_by_remote;
    absl::flat_hash_map<std::string, uint64_t> id_by_ends;
    // id -> index in events of its Closed.
    absl::flat_hash_map<uint64_t, size_t> closed;
    bool done = false;
    grpc::Status status;
  };

  // `held`: start in Hold(). `auth`: TLS and token for the stream.
  static std::unique_ptr<Subscriber> Start(
      const std::string& address, const fanin::v1::SubscribeRequest& request,
      bool held = false, const ClientAuth& auth = {});
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

// grpc.health.v1.Health/Check for `service` ("" for the whole server) with
// a hand-encoded request; the ServingStatus value (1 SERVING, 2 NOT_SERVING)
// or the call's error.
absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& service = "");
// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with
// list_services; the service names.
absl::StatusOr<std::vector<std::string>> ReflectionListServices(
    const std::string& address);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_GRPC_UTIL_H_
