// Command-line and environment configuration of fanin_server.
//
// Three steps, each testable alone:
//   1. ParseServerFlags reads argv into Abseil flags whose types validate as
//      they parse (an Endpoint, a list of listen specs, the poller, the log
//      level and format, the client-certificate role).
//   2. One overlay: every flag the command line did not set takes
//      FANIN_<FLAG> (upper case) when that is set and non-empty, e.g.
//      FANIN_GRPC_ADDRESS=127.0.0.1:6000. The command line wins.
//   3. ServerFlagsFromValues, a pure function of the typed values, checks
//      what one value alone cannot (ranges, flags that go together) and maps
//      them into ServerConfig and the log settings.
// --listen, --pull and --listen_proxy_protocol repeat on the command line;
// their variables take comma-separated lists. --listen_tls and
// --listen_tls_alpn repeat too; their values hold commas, so their variables
// separate items with ';'.
//
// Example (tests):
//   ServerFlagValues values;
//   values.poller = reactor::PollerKind::kPoll;
//   absl::StatusOr<ServerFlags> flags = ServerFlagsFromValues(values);
#ifndef FANIN_SERVER_SERVER_FLAGS_H_
#define FANIN_SERVER_SERVER_FLAGS_H_

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/log.h"
#include "server/fanin_server.h"
#include "server/grpc/auth.h"
#include "server/net/address.h"
#include "server/reactor/poller.h"

namespace fanin {

// "NAME=ITEM,ITEM...": a listener and a list for it, the value of
// --listen_tls (CERT,KEY[,CLIENT_CA]) and --listen_tls_alpn (PROTO,...).
struct ListenerList {
  std::string listener;
  std::vector<std::string> items;
  bool operator==(const ListenerList&) const = default;
};
// Errors: InvalidArgument `"TEXT": what is wrong`.
absl::StatusOr<ListenerList> ParseListenerList(absl::string_view text);
// Abseil flag marshalling: ';'-separated ListenerLists (the variables' form).
bool AbslParseFlag(absl::string_view text, std::vector<ListenerList>* lists,
                   std::string* error);
std::string AbslUnparseFlag(const std::vector<ListenerList>& lists);

struct ServerFlags {
  ServerConfig config;
  std::string ready_file;
  base::LogLevel log_level = base::LogLevel::kInfo;
  base::LogFormat log_format = base::LogFormat::kText;
};

// The value of each flag, typed; the member defaults are the flags' defaults
// (the ABSL_FLAG definitions take them from here).
struct ServerFlagValues {
  std::vector<net::ListenSpec> listen = {
      {"default", *net::Endpoint::Parse("127.0.0.1:7070")}};
  std::vector<std::string> pull;
  std::vector<ListenerList> listen_tls;
  std::vector<ListenerList> listen_tls_alpn;
  std::vector<std::string> listen_proxy_protocol;
  absl::Duration tls_handshake_timeout = absl::Seconds(10);
  absl::Duration proxy_header_timeout = absl::Seconds(5);
  net::Endpoint grpc_address = net::Endpoint::Loopback(50051);
  reactor::PollerKind poller = reactor::PollerKind::kEpollLevel;
  int loops = 0;
  int64_t max_connections = 100000;
  int64_t max_connections_per_ip = 0;
  int64_t max_outbound_bytes = 4 << 20;
  int64_t read_chunk_bytes = 64 << 10;
  int64_t subscriber_queue_bytes = 16 << 20;
  int64_t history_events = 131072;
  int64_t history_bytes = int64_t{256} << 20;
  absl::Duration idle_timeout = absl::ZeroDuration();
  bool keep_half_open = false;
  absl::Duration close_linger = absl::Seconds(5);
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration subscriber_stall_timeout = absl::Seconds(30);
  int64_t lossless_total_bytes = int64_t{1} << 30;
  absl::Duration group_idle_timeout = absl::Seconds(60);
  bool group_rebalance = false;
  int max_groups = 256;
  int64_t group_redelivery_bytes = 1 << 20;
  grpc_api::Role lossless_role = grpc_api::Role::kWriter;
  int max_subscribers = 1024;
  int max_batch_events = 4096;
  int default_batch_events = 256;
  absl::Duration drain_timeout = absl::Seconds(10);
  int64_t max_grpc_message_bytes = 4 << 20;
  absl::Duration grpc_keepalive_time = absl::Seconds(30);
  absl::Duration grpc_keepalive_timeout = absl::Seconds(10);
  absl::Duration grpc_max_connection_idle = absl::ZeroDuration();
  absl::Duration grpc_max_connection_age = absl::ZeroDuration();
  absl::Duration grpc_max_connection_age_grace = absl::Seconds(30);
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_tokens_file;
  grpc_api::Role tls_client_role = grpc_api::Role::kReader;
  std::optional<net::Endpoint> metrics_address;
  absl::Duration watchdog_timeout = absl::Seconds(5);
  base::LogLevel log_level = base::LogLevel::kInfo;
  base::LogFormat log_format = base::LogFormat::kText;
  std::string ready_file;
  // Cluster mode (docs/CLUSTER.md): on when cluster_nats is set.
  std::string cluster_nats;  // nats://HOST:PORT[,nats://HOST:PORT...]
  std::string node_name;     // empty: the host name
  std::string cluster_name = "fanin";
  std::string cluster_advertise_address;  // empty: the bound gRPC address
  int64_t cluster_stream_max_bytes = int64_t{1} << 30;
  absl::Duration cluster_stream_max_age = absl::Hours(24);
  int cluster_replicas = 1;
  std::string cluster_storage = "file";
  std::string cluster_nats_token;
  std::string cluster_nats_user;
  std::string cluster_nats_password;
  std::string cluster_nats_ca;
  absl::Duration cluster_connect_timeout = absl::Seconds(10);
  absl::Duration cluster_node_timeout = absl::Seconds(10);
  int64_t cluster_buffer_bytes = int64_t{64} << 20;
  absl::Duration cluster_request_timeout = absl::Seconds(5);
};

// Checks the values together and maps them. Pure: no flags, no environment,
// no files (ParseServerFlags loads the TLS files afterwards).
// INVALID_ARGUMENT naming the flag and what is wrong.
absl::StatusOr<ServerFlags> ServerFlagsFromValues(const ServerFlagValues& v);

// Parses argv (steps 1 and 2 above, then ServerFlagsFromValues). Abseil's
// own flags (--help, --helpfull, --version, --flagfile) go to
// absl::ParseCommandLine; --help prints usage and exits. INVALID_ARGUMENT
// naming the flag (or the variable) and what is wrong: an unknown flag, a
// positional argument, a value its type does not take, a failed check, or
// a --listen_tls certificate or key that does not load (unreadable, not PEM,
// a key that does not match).
// Precedence, lowest first: FANIN_* variables, --flagfile, the command line.
// getenv is a parameter so tests need not touch the process environment.
absl::StatusOr<ServerFlags> ParseServerFlags(
    int argc, char** argv,
    absl::FunctionRef<const char*(const char*)> getenv = std::getenv);

}  // namespace fanin

#endif  // FANIN_SERVER_SERVER_FLAGS_H_
