#include "client/connect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace fanin::cli {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& flag,
                                     const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read --", flag, " file ", path, ": ", strerror(errno)));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

std::vector<FlagSpec> ServerFlagSpecs() {
  return {
      {.name = "server",
       .type = FlagType::kString,
       .value_name = "HOST:PORT[,...]",
       .help = "server address, also unix:PATH (default 127.0.0.1:50051); "
               "a comma-separated list to fail over",
       .env = true},
      {.name = "tls_ca",
       .type = FlagType::kString,
       .value_name = "FILE",
       .help = "use TLS, trusting the CA certificates in FILE (PEM)",
       .env = true},
      {.name = "tls_cert",
       .type = FlagType::kString,
       .value_name = "FILE",
       .help = "client certificate chain for mutual TLS (PEM; needs "
               "--tls_key)"},
      {.name = "tls_key",
       .type = FlagType::kString,
       .value_name = "FILE",
       .help = "client private key for mutual TLS (PEM; needs --tls_cert)"},
      {.name = "tls_server_name",
       .type = FlagType::kString,
       .value_name = "NAME",
       .help = "expect this name in the server certificate",
       .env = true},
      {.name = "token_file",
       .type = FlagType::kString,
       .value_name = "FILE",
       .help = "send \"authorization: Bearer <token>\" with the token "
               "read from FILE",
       .env = true},
  };
}

absl::StatusOr<ServerOptions> ServerOptionsFromFlags(const ParsedFlags& flags) {
  ServerOptions options;
  const std::string servers = flags.String("server", kDefaultServer);
  if (servers.empty()) {
    return absl::InvalidArgumentError("--server is empty");
  }
  options.servers.clear();
  for (absl::string_view item : absl::StrSplit(servers, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server \"", servers, "\" has an empty address in its list"));
    }
    options.servers.emplace_back(item);
  }
  options.server = options.servers.front();
  options.tls_ca = flags.String("tls_ca", "");
  options.tls_cert = flags.String("tls_cert", "");
  options.tls_key = flags.String("tls_key", "");
  options.tls_server_name = flags.String("tls_server_name", "");
  options.token_file = flags.String("token_file", "");
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  return options;
}

absl::StatusOr<ServerConnection> ServerConnection::Open(
    const ServerOptions& options) {
  ServerConnection connection;
  connection.server_ = options.server;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadFile("token_file", options.token_file);
    if (!token.ok()) return token.status();
    connection.token_ = std::string(absl::StripAsciiWhitespace(*token));
    if (connection.token_.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--token_file ", options.token_file, " is empty"));
    }
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  bool tls = !options.tls_ca.empty() || !options.tls_cert.empty() ||
             !options.tls_server_name.empty();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      absl::StatusOr<std::string> ca = ReadFile("tls_ca", options.tls_ca);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.tls_cert.empty()) {
      absl::StatusOr<std::string> cert = ReadFile("tls_cert", options.tls_cert);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFile("tls_key", options.tls_key);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }

  grpc::ChannelArguments args;
  // `write` may carry a large stdin; the server's receive limit decides.
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  // Reconnect quickly after a server restart (watch --follow does its own
  // back-off on top). Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes
  // it as the connect timeout, and a TLS handshake on a loaded machine needs
  // far more than 100 ms.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // Keepalive: a watch on a server whose host vanished (no FIN, no RST) sees
  // its stream fail within ~30 s, so --follow moves on instead of waiting
  // forever. 20 s is above the server's minimum client ping interval (5 s).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  connection.channel_ =
      grpc::CreateCustomChannel(options.server, credentials, args);
  return connection;
}

void ServerConnection::Prepare(grpc::ClientContext* context,
                               absl::Duration timeout) const {
  if (!token_.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
  }
  if (timeout > absl::ZeroDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace fanin::cli
