#include "server/fanin_server.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "server/base/log.h"

namespace fanin {
namespace {

constexpr char kServiceName[] = "fanin.v1.FanIn";

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (!in || buffer.str().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": cannot read the PEM file"));
  }
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const TlsFiles& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty() &&
      tls.client_ca_file.empty()) {
    return grpc::InsecureServerCredentials();
  }
  // Which files go together is checked with the flags
  // (ServerFlagsFromValues); here a missing one is one that cannot be read.
  auto cert = ReadPem("tls_cert", tls.cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("tls_key", tls.key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      tls.client_ca_file.empty()
          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!tls.client_ca_file.empty()) {
    auto ca = ReadPem("tls_client_ca", tls.client_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

// gRPC takes milliseconds as int; zero (off) is "never", INT_MAX.
int Millis(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return std::numeric_limits<int>::max();
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d),
                                            std::numeric_limits<int>::max()));
}

void ApplyTransport(const GrpcTransport& t, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              Millis(t.keepalive_time));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              Millis(t.keepalive_timeout));
  // Keepalive also on connections with no call (an idle CLI, a balancer's
  // pooled connection), and without a cap on pings between data frames.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      Millis(t.min_client_ping_interval));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              Millis(t.max_connection_idle));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                              Millis(t.max_connection_age));
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                              Millis(t.max_connection_age_grace));
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaninServer>> FaninServer::Start(
    ServerConfig config) {
  auto server = absl::WrapUnique(new FaninServer());
  server->config_ = std::move(config);
  ServerConfig& c = server->config_;
  auto credentials = MakeCredentials(c.tls);
  if (!credentials.ok()) return credentials.status();
  c.auth.mtls = !c.tls.client_ca_file.empty();
  auto auth = grpc_api::Authorizer::Create(c.auth);
  if (!auth.ok()) return auth.status();
  server->auth_ = *std::move(auth);
  if (server->auth_->enabled()) {
    grpc_api::Authorizer* a = server->auth_.get();
    c.service.authorize = [a](grpc::CallbackServerContext* context,
                              grpc_api::Access access) {
      return a->Check(context, access);
    };
  }
  server->metrics_ = std::make_shared<Metrics>();
  {
    Metrics* m = server->metrics_.get();
    auto previous = std::move(c.service.on_batch_sent);
    c.service.on_batch_sent =
        [m, previous](const std::vector<fanout::EventPtr>& events) {
          m->OnBatchSent(events);
          if (previous) previous(events);
        };
  }

  fanout::EventSink* sink = nullptr;
  if (c.cluster.has_value()) {
    // Cluster mode: the loops publish to the cluster's stream; the hub is
    // fed from it, with the cluster's seqs and epoch.
    auto node = cluster::ClusterNode::Join(*c.cluster);
    if (!node.ok()) return node.status();
    server->cluster_ = *std::move(node);
    c.hub.epoch = server->cluster_->epoch();
    c.hub.history_source = true;
    c.core.node = c.cluster->node_name;
    c.core.first_connection_id = server->cluster_->first_connection_id();
    c.service.cluster = server->cluster_.get();
    c.service.groups.replication = server->cluster_.get();
    c.service.groups.cluster_queue_bytes = c.hub.lossless_queue_bytes;
    sink = server->cluster_.get();
  }
  server->hub_ = std::make_unique<fanout::EventHub>(c.hub);
  if (sink == nullptr) sink = server->hub_.get();
  auto core = core::FaninCore::Create(c.core, sink);
  if (!core.ok()) return core.status();
  server->core_ = *std::move(core);
  server->service_ = std::make_unique<grpc_api::FaninService>(
      server->core_.get(), server->hub_.get(), c.service);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string grpc_address = c.grpc_address.ToString();
  builder.AddListeningPort(grpc_address, *credentials, &port);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(c.max_grpc_message_bytes);
  builder.SetMaxSendMessageSize(c.max_grpc_message_bytes);
  ApplyTransport(c.transport, &builder);
  server->server_ = builder.BuildAndStart();
  const bool is_unix = c.grpc_address.family == net::Endpoint::Family::kUnix;
  if (server->server_ == nullptr || (!is_unix && port == 0)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve gRPC on ", grpc_address,
        " (address in use or not valid? try --grpc_address=127.0.0.1:0)"));
  }
  // The health service starts out SERVING; it must not say so before the
  // loops run.
  server->UpdateHealth();
  net::Endpoint bound = c.grpc_address;
  if (!is_unix) bound.port = port;
  server->grpc_address_ = bound.ToString();
  server->service_->SetGrpcAddress(server->grpc_address_);
  if (server->cluster_ != nullptr) {
    core::FaninCore* core_ptr = server->core_.get();
    absl::Status joined = server->cluster_->Start(
        {.hub = server->hub_.get(),
         .service = server->service_.get(),
         .listeners = server->core_->listener_names(),
         .grpc_address = c.cluster_advertise_address.empty()
                             ? server->grpc_address_
                             : c.cluster_advertise_address,
         .connections_open =
             [core_ptr] { return core_ptr->GetStats().connections_open; },
         .close_all = [core_ptr] { core_ptr->CloseAll(); },
         .restart_ids =
             [core_ptr](uint64_t next) { core_ptr->RestartIds(next); },
         .on_group_progress =
             [service = server->service_.get()](
                 const std::string& group, uint64_t member, uint64_t through,
                 uint64_t as_of) {
               service->NoteGroupProgress(group, member, through, as_of);
             }});
    if (!joined.ok()) return joined;
  }
  absl::Status started = server->core_->Start();
  if (!started.ok()) return started;

  FaninServer* self = server.get();
  server->watchdog_ = std::make_unique<reactor::Watchdog>(
      server->core_->loops(), c.watchdog, [self](bool healthy) {
        {
          absl::MutexLock lock(&self->health_mu_);
          self->loops_healthy_ = healthy;
        }
        self->UpdateHealth();
      });
  server->metrics_->SetSources({.core = server->core_.get(),
                                .hub = server->hub_.get(),
                                .service = server->service_.get(),
                                .auth = server->auth_.get(),
                                .watchdog = server->watchdog_.get(),
                                .serving = [self] { return self->serving(); },
                                .cluster = server->cluster_.get()});
  if (c.metrics_address.has_value()) {
    absl::Status metrics = server->metrics_->Serve(*c.metrics_address);
    if (!metrics.ok()) return metrics;
  }
  {
    absl::MutexLock lock(&server->health_mu_);
    server->health_started_ = true;
  }
  server->UpdateHealth();
  server->watchdog_->Start();
  base::Log(base::LogLevel::kInfo, "serving",
            {{"grpc", server->grpc_address_},
             {"tls", c.tls.cert_file.empty()        ? "off"
                     : c.tls.client_ca_file.empty() ? "tls"
                                                    : "mtls"},
             {"auth", server->auth_->enabled() ? "on" : "off"},
             {"metrics", server->metrics_->bound_address()},
             {"poller", server->core_->GetStats().poller},
             {"loops", server->core_->loops()->size()},
             {"epoch", server->hub_->epoch()}});
  return server;
}

FaninServer::~FaninServer() { Shutdown(); }

bool FaninServer::serving() const {
  absl::MutexLock lock(&health_mu_);
  return health_started_ && !draining_ && loops_healthy_;
}

void FaninServer::UpdateHealth() {
  // Under the lock so two updaters cannot publish in the wrong order.
  absl::MutexLock lock(&health_mu_);
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  const bool serving = health_started_ && !draining_ && loops_healthy_;
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
}

absl::Status FaninServer::ReloadCredentials() {
  absl::Status status = auth_ == nullptr ? absl::OkStatus() : auth_->Reload();
  // Listener certificates too; one failure does not stop the other reload.
  absl::Status tls = core_ == nullptr ? absl::OkStatus() : core_->ReloadTls();
  return status.ok() ? tls : status;
}

void FaninServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ == nullptr) {
    if (watchdog_) watchdog_->Stop();
    if (metrics_) metrics_->Stop();
    if (core_) core_->Shutdown(absl::ZeroDuration());
    if (cluster_) cluster_->Stop(absl::ZeroDuration());
    return;
  }
  const absl::Time deadline = absl::Now() + config_.drain_timeout;
  {
    absl::MutexLock lock(&health_mu_);
    draining_ = true;
  }
  UpdateHealth();
  // Null when Start failed before the loops ran.
  if (watchdog_) watchdog_->Stop();
  base::Log(base::LogLevel::kInfo, "draining",
            {{"connections", core_->GetStats().connections_open},
             {"streams", service_->active_streams()},
             {"timeout_ms", absl::ToInt64Milliseconds(config_.drain_timeout)}});
  // Connections first, so their CLOSED(SERVER_SHUTDOWN) events reach the
  // streams before those drain.
  if (cluster_ != nullptr) cluster_->BeginLeave();
  core_->Shutdown(config_.drain_timeout / 2);
  // Cluster mode: those events reach the streams through the cluster's
  // stream; the node publishes them (and LEFT) and reads them back first.
  if (cluster_ != nullptr) cluster_->Stop(config_.drain_timeout / 4);
  // civetweb takes up to ~2 s to stop; overlap that with the stream drain so
  // the whole shutdown stays within drain_timeout. The counters have their
  // final connection values by now.
  std::thread metrics_stop([m = metrics_] { m->Stop(); });
  service_->BeginDrain();
  // Once nothing is owed (every stream delivered its events and ended, no
  // unary call in flight), stop at once: a graceful shutdown would otherwise
  // wait for idle client connections to acknowledge gRPC's GOAWAY ping (5 s
  // with a python3-grpcio channel that made one call), for nothing.
  const bool idle = service_->WaitUntilIdle(deadline);
  const size_t unfinished = service_->active_streams();
  server_->Shutdown(absl::ToChronoTime(idle ? absl::Now() : deadline));
  server_->Wait();
  metrics_stop.join();
  base::Log(unfinished == 0 ? base::LogLevel::kInfo : base::LogLevel::kWarning,
            "drained", {{"streams_cut", unfinished}});
}

}  // namespace fanin
