// FaninServer: the whole service in one object — event hub, connection core,
// gRPC server with FanIn, health and reflection. fanin_server's main() and the
// end-to-end tests both use it.
//
// Example:
//   ServerConfig config;
//   config.core.listen = {{"default", "127.0.0.1:0"}};
//   config.grpc_address = "127.0.0.1:0";
//   auto server = FaninServer::Start(std::move(config));
//   std::string target = (*server)->grpc_address();  // "127.0.0.1:41234"
//   (*server)->Shutdown();
#ifndef FANIN_SERVER_FANIN_SERVER_H_
#define FANIN_SERVER_FANIN_SERVER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/fanin_core.h"
#include "server/fanout/event_hub.h"
#include "server/grpc/fanin_service.h"

namespace fanin {

struct ServerConfig {
  core::CoreOptions core;
  fanout::HubOptions hub;
  grpc_api::ServiceOptions service;
  std::string grpc_address = "127.0.0.1:50051";
  // Bound on the whole graceful shutdown.
  absl::Duration drain_timeout = absl::Seconds(10);
  int max_grpc_message_bytes = 4 << 20;
};

class FaninServer {
 public:
  // Binds everything and starts serving; health is SERVING on return.
  static absl::StatusOr<std::unique_ptr<FaninServer>> Start(
      ServerConfig config);
  ~FaninServer();

  // "127.0.0.1:41234" (the chosen port when 0 was asked) or "unix:PATH".
  const std::string& grpc_address() const { return grpc_address_; }
  // (listener name, bound address) in listener order.
  std::vector<std::pair<std::string, std::string>> listen_addresses() const {
    return core_->bound_addresses();
  }

  // Graceful drain, bounded by drain_timeout: health NOT_SERVING, stop
  // accepting, flush and close connections (CLOSED(SERVER_SHUTDOWN) events),
  // let every stream deliver what it is owed and finish OK, then stop gRPC.
  // Idempotent; blocks.
  void Shutdown();

  core::FaninCore* core() const { return core_.get(); }
  fanout::EventHub* hub() const { return hub_.get(); }

 private:
  FaninServer() = default;

  ServerConfig config_;
  std::string grpc_address_;
  std::unique_ptr<fanout::EventHub> hub_;
  std::unique_ptr<core::FaninCore> core_;
  std::unique_ptr<grpc_api::FaninService> service_;
  std::unique_ptr<grpc::Server> server_;
  bool shut_down_ = false;
};

}  // namespace fanin

#endif  // FANIN_SERVER_FANIN_SERVER_H_
