// Runs a fanin_server (or any binary honouring --ready_file) as a child of a
// test, on free loopback ports.
//
// The server is started with the given flags plus --ready_file=<tmp>; Start
// waits (polling the file, with a deadline) until the server has written it,
// then parses its lines:
//   grpc 127.0.0.1:43121
//   listen default 127.0.0.1:40999
//   listen other [::1]:40001
//
// Example (the test lists data = ["//server:fanin_server"]):
//   auto server = fanin::testing::ServerProcess::Start(
//       {.flags = {"--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0"}});
//   ASSERT_TRUE(server.ok()) << server.status();
//   auto raw = fanin::testing::ConnectTcp(*(*server)->listen_address());
//
// Destruction sends SIGTERM and waits (SIGKILL after stop_timeout). The server
// inherits the test's stdout/stderr so its logs land in the test log. One
// thread at a time.
#ifndef FANIN_TESTS_TESTING_SERVER_PROCESS_H_
#define FANIN_TESTS_TESTING_SERVER_PROCESS_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {

// The parsed ready file.
struct ReadyInfo {
  std::string grpc_address;
  // Listener name -> "HOST:PORT" (or the unix path as written).
  absl::flat_hash_map<std::string, std::string> listeners;
};

// Parses the ready-file text; InvalidArgument on a malformed line or a
// missing "grpc" line.
absl::StatusOr<ReadyInfo> ParseReadyFile(absl::string_view text);

class ServerProcess {
 public:
  struct Options {
    // Runfiles-relative path, valid in a test's working directory.
    std::string binary = "server/fanin_server";
    // Flags besides --ready_file. Give --grpc_address=127.0.0.1:0 and
    // --listen=...:0 for free ports.
    std::vector<std::string> flags;
    absl::Duration ready_timeout = absl::Seconds(30);
    absl::Duration stop_timeout = absl::Seconds(10);
    Subprocess::Options process = {.capture_output = false};
  };

  // Starts the server and waits for its ready file. Fails (with the exit code
  // when the server died) if the file does not appear by ready_timeout.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(Options options);

  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // "127.0.0.1:PORT" as the ready file gave it.
  const std::string& grpc_address() const { return ready_.grpc_address; }
  // The address of the named listener; NotFound when there is none.
  absl::StatusOr<std::string> listen_address(
      absl::string_view name = "default") const;
  const ReadyInfo& ready_info() const { return ready_; }
  pid_t pid() const;
  bool running() const { return process_ != nullptr && !process_->exited(); }

  // SIGTERM, then waits for exit (SIGKILL after stop_timeout). Returns the
  // exit code (128 + signal when killed).
  absl::StatusOr<int> Stop();
  // Sends a signal without waiting (e.g. SIGKILL to simulate a crash).
  absl::Status Signal(int sig);

  // Stops the server and starts it again on the same gRPC address and the
  // same listener ports when they can be bound again; falls back to the
  // original flags (fresh free ports) when they cannot.
  absl::Status Restart();

 private:
  explicit ServerProcess(Options options) : options_(std::move(options)) {}
  absl::Status Launch(const std::vector<std::string>& flags);
  // The flags with port 0 replaced by the ports bound now.
  std::vector<std::string> PinnedFlags() const;

  Options options_;
  std::string ready_dir_;
  std::string ready_path_;
  std::unique_ptr<Subprocess> process_;
  ReadyInfo ready_;
};

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_SERVER_PROCESS_H_
