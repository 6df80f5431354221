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

#include <signal.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {

class NatsServer {
 public:
  // One server of a JetStream cluster.
  struct Clustered {
    std::string server_name;   // -server_name
    std::string cluster_name;  // -cluster_name
    int cluster_port = 0;      // -cluster nats://127.0.0.1:PORT
    std::vector<int> route_ports;
  };
  // FailedPrecondition when nats-server is not installed.
  static absl::StatusOr<std::unique_ptr<NatsServer>> Start();
  static absl::StatusOr<std::unique_ptr<NatsServer>> Start(
      std::optional<Clustered> clustered);
  // Three servers in one JetStream cluster (each with an HTTP monitoring
  // port), once they answer.
  static absl::StatusOr<std::vector<std::unique_ptr<NatsServer>>>
  StartCluster3();
  // The name of the server leading `stream` (its Raft leader), from the
  // monitoring endpoint; NotFound while there is none.
  absl::StatusOr<std::string> StreamLeader(const std::string& stream) const;
  const std::string& server_name() const { return clustered_->server_name; }
  ~NatsServer();

  // "nats://127.0.0.1:PORT"
  std::string url() const;
  int port() const { return port_; }
  // Stops it (SIGKILL when `kill`), then starts it again on the same port and
  // store.
  absl::Status Restart(bool kill = false);
  absl::Status Stop(bool kill = false);
  // Sends a signal (e.g. SIGSTOP / SIGCONT to pause the broker).
  absl::Status Signal(int sig);
  // SIGSTOP, returning once every thread of the broker is stopped (a
  // signal is delivered asynchronously; a request could still be answered
  // in between otherwise). Resume sends SIGCONT.
  absl::Status Pause();
  absl::Status Resume() { return Signal(SIGCONT); }

 private:
  NatsServer() = default;
  absl::Status Launch();

  int port_ = 0;
  int monitor_port_ = 0;
  std::optional<Clustered> clustered_;
  std::string store_;
  std::unique_ptr<Subprocess> process_;
};

// A loopback TCP port nothing listens on right now.
int FreeLoopbackPort();

// A fanin_server node `name` of a test cluster on `nats`: its default
// listener and gRPC on free loopback ports, one loop, then `extra` flags.
absl::StatusOr<std::unique_ptr<ServerProcess>> StartClusterNode(
    const NatsServer& nats, const std::string& name,
    std::vector<std::string> extra = {});

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_NATS_SERVER_H_
