// How the `fanin` client reaches a server: address, TLS and bearer token from
// the common flags, turned into a gRPC channel and per-call contexts.
#ifndef FANIN_CLIENT_CONNECT_H_
#define FANIN_CLIENT_CONNECT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/flags.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace fanin::cli {

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

struct ServerOptions {
  // "HOST:PORT", "[V6]:PORT" or "unix:PATH": the first of `servers`.
  std::string server = kDefaultServer;
  // Every server --server named, in order (a comma-separated list): watch
  // moves on to the next when a stream fails, the read-only commands when a
  // server is unreachable. Never empty.
  std::vector<std::string> servers = {kDefaultServer};
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  std::string token_file;
};

// The common flags of every subcommand (--server, --tls_*, --token_file).
// --server, --tls_ca, --tls_server_name and --token_file are `env` flags
// (FANIN_SERVER, ...). --tls_cert and --tls_key are not: fanin_server reads
// FANIN_TLS_CERT and FANIN_TLS_KEY as its own certificate, and a client run
// in the server's environment must not present that.
std::vector<FlagSpec> ServerFlagSpecs();

// A pure function of the parsed flags (the environment is applied while
// parsing): --server defaults to 127.0.0.1:50051. InvalidArgument for
// --tls_cert without --tls_key (or the reverse) or an empty server (also an
// empty item of a list).
absl::StatusOr<ServerOptions> ServerOptionsFromFlags(const ParsedFlags& flags);

// A channel plus the token to send on each call. Thread-safe.
class ServerConnection {
 public:
  // Reads the TLS and token files. Errors name the file that failed
  // (FailedPrecondition) so the caller can exit with kExitFailure.
  static absl::StatusOr<ServerConnection> Open(const ServerOptions& options);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const std::string& server() const { return server_; }

  // Adds the bearer token and, when timeout > 0, a deadline.
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::string server_;
  std::string token_;
};

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_CONNECT_H_
