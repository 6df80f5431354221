// Runs a real nats-server (Debian's package) with JetStream for a test, on a
// free loopback port, its store in a temporary directory.
//
// Example:
//   auto nats = fanin::testing::NatsServer::Start();
//   ASSERT_TRUE(nats.ok()) << nats.status();
//   flags.push_back("--cluster_nats=" + (*nats)->url());
//
// Destruction stops it (SIGTERM, SIGKILL after 5 s) and removes the store.
#ifndef FANIN_TESTS_TESTING_NATS_SERVER_H_
#define FANIN_TESTS_TESTING_NATS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {

class NatsServer {
 public:
  // FailedPrecondition when nats-server is not installed.
  static absl::StatusOr<std::unique_ptr<NatsServer>> Start();
  ~NatsServer();

  // "nats://127.0.0.1:PORT"
  std::string url() const;
  int port() const { return port_; }
  // Stops it (SIGKILL when `kill`), then starts it again on the same port and
  // store.
  absl::Status Restart(bool kill = false);
  absl::Status Stop(bool kill = false);

 private:
  NatsServer() = default;
  absl::Status Launch();

  int port_ = 0;
  std::string store_;
  std::unique_ptr<Subprocess> process_;
};

// A loopback TCP port nothing listens on right now.
int FreeLoopbackPort();

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_NATS_SERVER_H_
