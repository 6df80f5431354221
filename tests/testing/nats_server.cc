#include "tests/testing/nats_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/testing/tcp_client.h"

namespace fanin::testing {

namespace {

std::string NatsBinary() {
  return ::access("/usr/sbin/nats-server", X_OK) == 0 ? "/usr/sbin/nats-server"
                                                      : "/usr/bin/nats-server";
}

}  // namespace

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<NatsServer>> NatsServer::Start() {
  return Start(std::nullopt);
}

absl::StatusOr<std::vector<std::unique_ptr<NatsServer>>>
NatsServer::StartCluster3() {
  std::vector<int> routes = {FreeLoopbackPort(), FreeLoopbackPort(),
                             FreeLoopbackPort()};
  std::vector<std::unique_ptr<NatsServer>> out;
  for (int i = 0; i < 3; ++i) {
    auto s = Start(Clustered{.server_name = absl::StrCat("n", i + 1),
                             .cluster_name = "fanin-test",
                             .cluster_port = routes[i],
                             .route_ports = routes});
    if (!s.ok()) return s.status();
    out.push_back(*std::move(s));
  }
  return out;
}

absl::StatusOr<std::string> NatsServer::StreamLeader(
    const std::string& stream) const {
  auto c = ConnectTcp(absl::StrCat("127.0.0.1:", monitor_port_));
  if (!c.ok()) return c.status();
  absl::Status s =
      c->SendAll("GET /jsz?accounts=true&streams=true HTTP/1.0\r\n\r\n");
  if (!s.ok()) return s;
  auto body = c->RecvUntilEof(absl::Now() + absl::Seconds(5));
  if (!body.ok()) return body.status();
  size_t from = body->find(absl::StrCat("\"name\": \"", stream, "\""));
  if (from == std::string::npos) {
    from = body->find(absl::StrCat("\"name\":\"", stream, "\""));
  }
  if (from == std::string::npos) return absl::NotFoundError("no such stream");
  for (std::string key : {"\"leader\": \"", "\"leader\":\""}) {
    const size_t l = body->find(key, from);
    if (l == std::string::npos) continue;
    const size_t start = l + key.size();
    const size_t end = body->find('"', start);
    if (end != std::string::npos && end > start) {
      return body->substr(start, end - start);
    }
  }
  return absl::NotFoundError("no leader");
}

absl::StatusOr<std::unique_ptr<NatsServer>> NatsServer::Start(
    std::optional<Clustered> clustered) {
  if (::access("/usr/bin/nats-server", X_OK) != 0 &&
      ::access("/usr/sbin/nats-server", X_OK) != 0) {
    return absl::FailedPreconditionError(
        "nats-server is not installed (apt-get install nats-server)");
  }
  auto server = std::unique_ptr<NatsServer>(new NatsServer());
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/nats.XXXXXX");
  if (::mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError("mkdtemp failed");
  }
  server->store_ = dir;
  server->port_ = FreeLoopbackPort();
  server->monitor_port_ = FreeLoopbackPort();
  server->clustered_ = std::move(clustered);
  absl::Status s = server->Launch();
  if (!s.ok()) return s;
  return server;
}

absl::Status NatsServer::Launch() {
  std::vector<std::string> argv = {NatsBinary(), "-js",
                                   "-a",         "127.0.0.1",
                                   "-p",         absl::StrCat(port_),
                                   "-m",         absl::StrCat(monitor_port_),
                                   "-sd",        store_};
  if (clustered_.has_value()) {
    std::string routes;
    for (int p : clustered_->route_ports) {
      if (!routes.empty()) routes += ",";
      absl::StrAppend(&routes, "nats://127.0.0.1:", p);
    }
    for (std::string a :
         {std::string("-server_name"), clustered_->server_name,
          std::string("-cluster_name"), clustered_->cluster_name,
          std::string("-cluster"),
          absl::StrCat("nats://127.0.0.1:", clustered_->cluster_port),
          std::string("-routes"), routes}) {
      argv.push_back(std::move(a));
    }
  }
  auto process =
      Subprocess::Start(argv, Subprocess::Options{.capture_output = false});
  if (!process.ok()) return process.status();
  process_ = *std::move(process);
  // Listening within ~100 ms; wait for a connect to succeed.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    auto c = ConnectTcp(absl::StrCat("127.0.0.1:", port_),
                        absl::Now() + absl::Milliseconds(200));
    if (c.ok()) return absl::OkStatus();
    if (process_->CheckExited()) {
      return absl::UnavailableError("nats-server exited at start-up");
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("nats-server did not listen within 10s");
}

absl::Status NatsServer::Stop(bool kill) {
  if (process_ == nullptr) return absl::OkStatus();
  process_->Signal(kill ? SIGKILL : SIGTERM).IgnoreError();
  auto done = process_->Wait(absl::Now() + absl::Seconds(5));
  if (!done.ok()) {
    process_->Signal(SIGKILL).IgnoreError();
    process_->Wait(absl::Now() + absl::Seconds(5)).IgnoreError();
  }
  process_.reset();
  return absl::OkStatus();
}

absl::Status NatsServer::Signal(int sig) {
  if (process_ == nullptr) return absl::FailedPreconditionError("not running");
  return process_->Signal(sig);
}

absl::Status NatsServer::Pause() {
  absl::Status s = Signal(SIGSTOP);
  if (!s.ok()) return s;
  const std::string task_dir = absl::StrCat("/proc/", process_->pid(), "/task");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    bool all_stopped = true;
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(task_dir, ec)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      // State is the field after the ")" that ends the command name.
      const size_t close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size() ||
          line[close + 2] != 'T') {
        all_stopped = false;
        break;
      }
    }
    if (all_stopped && !ec) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(1));
  }
  return absl::DeadlineExceededError("nats-server did not stop");
}

absl::Status NatsServer::Restart(bool kill) {
  absl::Status s = Stop(kill);
  if (!s.ok()) return s;
  return Launch();
}

NatsServer::~NatsServer() {
  Stop().IgnoreError();
  std::error_code ec;
  std::filesystem::remove_all(store_, ec);
}

std::string NatsServer::url() const {
  return absl::StrCat("nats://127.0.0.1:", port_);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> StartClusterNode(
    const NatsServer& nats, const std::string& name,
    std::vector<std::string> extra) {
  std::vector<std::string> flags = {
      "--cluster_nats=" + nats.url(), "--node_name=" + name,
      "--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0", "--loops=1"};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return ServerProcess::Start({.flags = std::move(flags)});
}

}  // namespace fanin::testing
