// Helpers for the ops tests: channels with or without TLS and a bearer token,
// a Subscribe stream read on its own thread, hand-encoded health checks,
// certificates made with the openssl command, free ports and temp files.
//
// Every wait takes a deadline; nothing sleeps for a fixed time.
#ifndef FANIN_TESTS_OPS_OPS_UTIL_H_
#define FANIN_TESTS_OPS_OPS_UTIL_H_

#include <cstdint>
#include <memory>
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
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {

// Generous: the machine is shared, 2 cores, and tests also run under ASan.
inline absl::Time Deadline(absl::Duration d = absl::Seconds(30)) {
  return absl::Now() + d;
}

// A fresh directory under TEST_TMPDIR.
std::string MakeTempDir();
// Writes `text` to `path`; fails the test on error.
void WriteFile(const std::string& path, const std::string& text);
std::string ReadFileOrDie(const std::string& path);
// A loopback TCP port that was free a moment ago.
int FreePort();

// PEM files made by the openssl command under `dir`: a CA, a server
// certificate for 127.0.0.1/localhost, client certificates (CN as given)
// signed by the CA, and a second, untrusted CA with its own client.
struct TestPki {
  std::string dir;
  std::string ca_cert;
  std::string server_cert, server_key;
  // CN=writer-bot, CN=reader-bot, CN=stranger (all signed by the CA).
  std::string writer_cert, writer_key;
  std::string reader_cert, reader_key;
  std::string stranger_cert, stranger_key;
  // CN=writer-bot signed by the untrusted CA.
  std::string rogue_cert, rogue_key;
};
absl::StatusOr<TestPki> MakeTestPki(const std::string& dir);

// How a test client connects.
struct ClientAuth {
  std::string ca_file;  // non-empty: TLS
  std::string cert_file, key_file;
  std::string token;  // sent as "authorization: Bearer <token>"
};
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address,
                                          const ClientAuth& auth = {});
std::unique_ptr<grpc::ClientContext> NewContext(const ClientAuth& auth = {});

// grpc.health.v1.Health/Check for the whole server (""): the ServingStatus
// value (1 SERVING, 2 NOT_SERVING) or the call's error.
absl::StatusOr<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel);

// A Subscribe stream read by its own thread until it ends.
class EventReader {
 public:
  struct State {
    bool started = false;
    std::vector<fanin::v1::Event> events;
    uint64_t lost = 0;
    // connection id -> bytes of Data seen; ids with a Closed event.
    absl::flat_hash_map<uint64_t, uint64_t> data_bytes;
    absl::flat_hash_map<uint64_t, fanin::v1::Closed> closed;
    absl::flat_hash_map<std::string, uint64_t> id_by_remote;
    bool done = false;
    grpc::Status status;
  };

  static std::unique_ptr<EventReader> Start(
      const std::string& address, const fanin::v1::SubscribeRequest& request,
      const ClientAuth& auth = {});
  ~EventReader();  // cancels and joins

  bool WaitUntil(absl::FunctionRef<bool(const State&)> pred,
                 absl::Time deadline);
  // true once Started arrived; false if the stream ended first.
  bool WaitStarted(absl::Time deadline);
  grpc::Status WaitDone(absl::Time deadline);
  // The id whose Opened names `remote`; 0 at the deadline.
  uint64_t WaitOpened(const std::string& remote, absl::Time deadline);
  State Snapshot() const;

 private:
  EventReader() = default;
  void Run(fanin::v1::SubscribeRequest request);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
};

fanin::v1::SubscribeRequest LosslessRequest();

// A TCP client bound to `source_ip` (any 127.x.y.z) connected to
// "HOST:PORT"; an error status when it cannot connect. A positive `rcvbuf`
// is set as SO_RCVBUF before connecting, so the kernel cannot absorb much of
// what the server sends while the client does not read.
absl::StatusOr<fanin::testing::TcpClient> ConnectFrom(
    const std::string& source_ip, const std::string& address, int rcvbuf = 0);

// GET http://ADDRESS/PATH with HTTP/1.0; the body on status 200.
absl::StatusOr<std::string> HttpGet(const std::string& address,
                                    const std::string& path);

// The value of the sample `series` (e.g. `fanin_connections_open` or
// `fanin_events_total{kind="data"}`) in Prometheus text; NotFound if absent.
absl::StatusOr<double> MetricValue(const std::string& text,
                                   const std::string& series);

// getsockname of a client socket, formatted as fanin formats a peer.
std::string LocalAddressOf(int fd);

}  // namespace fanin::opstest

#endif  // FANIN_TESTS_OPS_OPS_UTIL_H_
