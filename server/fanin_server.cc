#include "server/fanin_server.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace fanin {
namespace {

constexpr char kServiceName[] = "fanin.v1.FanIn";

void SetServing(grpc::Server* server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaninServer>> FaninServer::Start(
    ServerConfig config) {
  auto server = absl::WrapUnique(new FaninServer());
  server->config_ = std::move(config);
  ServerConfig& c = server->config_;
  server->hub_ = std::make_unique<fanout::EventHub>(c.hub);
  auto core = core::FaninCore::Create(c.core, server->hub_.get());
  if (!core.ok()) return core.status();
  server->core_ = *std::move(core);
  server->service_ = std::make_unique<grpc_api::FaninService>(
      server->core_.get(), server->hub_.get(), c.service);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(c.grpc_address, grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(c.max_grpc_message_bytes);
  builder.SetMaxSendMessageSize(c.max_grpc_message_bytes);
  server->server_ = builder.BuildAndStart();
  const bool is_unix = absl::StartsWith(c.grpc_address, "unix:");
  if (server->server_ == nullptr || (!is_unix && port == 0)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve gRPC on ", c.grpc_address,
        " (address in use or not valid? try --grpc_address=127.0.0.1:0)"));
  }
  if (is_unix) {
    server->grpc_address_ = c.grpc_address;
  } else {
    std::string host = c.grpc_address.substr(0, c.grpc_address.rfind(':'));
    server->grpc_address_ = absl::StrCat(host, ":", port);
  }
  absl::Status started = server->core_->Start();
  if (!started.ok()) return started;
  SetServing(server->server_.get(), true);
  return server;
}

FaninServer::~FaninServer() { Shutdown(); }

void FaninServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ == nullptr) {
    if (core_) core_->Shutdown(absl::ZeroDuration());
    return;
  }
  const absl::Time deadline = absl::Now() + config_.drain_timeout;
  SetServing(server_.get(), false);
  // Connections first, so their CLOSED(SERVER_SHUTDOWN) events reach the
  // streams before those drain.
  core_->Shutdown(config_.drain_timeout / 2);
  service_->BeginDrain();
  while (service_->active_streams() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  server_->Shutdown(absl::ToChronoTime(std::max(deadline, absl::Now())));
  server_->Wait();
}

}  // namespace fanin
