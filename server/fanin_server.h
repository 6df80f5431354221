// FaninServer: the whole service in one object — event hub, connection core,
// gRPC server with FanIn, health and reflection. fanin_server's main() and the
// end-to-end tests both use it.
//
// Example:
//   ServerConfig config;
//   config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
//   config.grpc_address = net::Endpoint::Loopback(0);
//   auto server = FaninServer::Start(std::move(config));
//   std::string target = (*server)->grpc_address();  // "127.0.0.1:41234"
//   (*server)->Shutdown();
#ifndef FANIN_SERVER_FANIN_SERVER_H_
#define FANIN_SERVER_FANIN_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/cluster/cluster_node.h"
#include "server/core/fanin_core.h"
#include "server/fanout/event_hub.h"
#include "server/grpc/auth.h"
#include "server/grpc/fanin_service.h"
#include "server/metrics.h"
#include "server/net/address.h"
#include "server/reactor/watchdog.h"

namespace fanin {

// PEM files for gRPC over TLS. All empty: plaintext (the default, for a
// sidecar or a unix socket). cert and key go together; client_ca turns on
// mutual TLS (client certificates required and verified against it).
// Which combinations make sense is checked with the flags (server_flags.h).
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
};

// HTTP/2 connection management for meshes and L4 balancers: the server pings
// every connection after keepalive_time without traffic and closes it when
// the ping goes unanswered for keepalive_timeout (a vanished subscriber is
// noticed within their sum); idle and aged connections are closed (zero: never)
// so a balancer can spread new ones; clients may ping every
// min_client_ping_interval.
struct GrpcTransport {
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  absl::Duration max_connection_idle = absl::ZeroDuration();
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  absl::Duration min_client_ping_interval = absl::Seconds(5);
};

struct ServerConfig {
  core::CoreOptions core;
  fanout::HubOptions hub;
  grpc_api::ServiceOptions service;
  // gRPC's address; a unix endpoint serves on that socket path.
  net::Endpoint grpc_address = net::Endpoint::Loopback(50051);
  TlsFiles tls;
  // Access control (see ops/auth.h); auth.mtls is set from tls.client_ca_file.
  grpc_api::AuthOptions auth;
  // The Prometheus endpoint (/metrics), TCP only; none when unset.
  std::optional<net::Endpoint> metrics_address;
  reactor::Watchdog::Options watchdog;
  // Bound on the whole graceful shutdown.
  absl::Duration drain_timeout = absl::Seconds(10);
  int max_grpc_message_bytes = 4 << 20;
  GrpcTransport transport;
  // Cluster mode (docs/CLUSTER.md); standalone when unset.
  std::optional<cluster::ClusterOptions> cluster;
  // What other nodes are told to dial; empty: the bound gRPC address.
  std::string cluster_advertise_address;
};

class FaninServer {
 public:
  // Binds everything and starts serving; health is SERVING on return.
  // INVALID_ARGUMENT for unreadable TLS files or a bad tokens file,
  // UNAVAILABLE when an address cannot be bound.
  static absl::StatusOr<std::unique_ptr<FaninServer>> Start(
      ServerConfig config);
  ~FaninServer();

  // "127.0.0.1:41234" (the chosen port when 0 was asked) or "unix:PATH".
  const std::string& grpc_address() const { return grpc_address_; }
  // "127.0.0.1:9464" of the metrics endpoint; empty without one.
  std::string metrics_address() const {
    return metrics_ ? metrics_->bound_address() : std::string();
  }
  // (listener name, bound address) in listener order.
  std::vector<std::pair<std::string, std::string>> listen_addresses() const {
    return core_->bound_addresses();
  }

  // Graceful drain, bounded by drain_timeout: health NOT_SERVING, stop
  // accepting, flush and close connections (CLOSED(SERVER_SHUTDOWN) events),
  // let every stream deliver what it is owed and finish OK, then stop gRPC.
  // Idempotent; blocks. Call from one thread.
  void Shutdown();

  // Re-reads the tokens file and every --listen_tls certificate and key
  // (SIGHUP); what fails to load keeps its old value, and the first error
  // is returned. Any thread.
  absl::Status ReloadCredentials();

  // What grpc.health.v1 says now: listeners up, every loop turning, not
  // draining. Any thread.
  bool serving() const;

  core::FaninCore* core() const { return core_.get(); }
  fanout::EventHub* hub() const { return hub_.get(); }
  grpc_api::FaninService* service() const { return service_.get(); }

 private:
  FaninServer() = default;
  // Publishes serving() to the health service.
  void UpdateHealth();

  ServerConfig config_;
  std::string grpc_address_;
  std::unique_ptr<cluster::ClusterNode> cluster_;  // cluster mode only
  std::unique_ptr<fanout::EventHub> hub_;
  std::unique_ptr<core::FaninCore> core_;
  std::unique_ptr<grpc_api::FaninService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc_api::Authorizer> auth_;
  std::shared_ptr<Metrics> metrics_;
  std::unique_ptr<reactor::Watchdog> watchdog_;
  bool shut_down_ = false;

  mutable absl::Mutex health_mu_;
  bool draining_ ABSL_GUARDED_BY(health_mu_) = false;
  bool loops_healthy_ ABSL_GUARDED_BY(health_mu_) = true;
  bool health_started_ ABSL_GUARDED_BY(health_mu_) = false;
};

}  // namespace fanin

#endif  // FANIN_SERVER_FANIN_SERVER_H_
