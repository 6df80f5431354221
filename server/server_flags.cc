#include "server/server_flags.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

#include "absl/base/call_once.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/net/tls_context.h"

// Abseil flag marshalling for the enum flags, in the enums' namespaces so
// ABSL_FLAG finds them. They live here, with the flags, rather than in the
// layers that own the enums: only the flags spell them.
namespace fanin::reactor {
bool AbslParseFlag(absl::string_view text, PollerKind* kind,
                   std::string* error) {
  absl::StatusOr<PollerKind> parsed = ParsePollerKind(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *kind = *parsed;
  return true;
}
std::string AbslUnparseFlag(PollerKind kind) {
  return std::string(PollerKindName(kind));
}
}  // namespace fanin::reactor

namespace fanin::base {
bool AbslParseFlag(absl::string_view text, LogLevel* level,
                   std::string* error) {
  absl::StatusOr<LogLevel> parsed = ParseLogLevel(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *level = *parsed;
  return true;
}
std::string AbslUnparseFlag(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}
bool AbslParseFlag(absl::string_view text, LogFormat* format,
                   std::string* error) {
  absl::StatusOr<LogFormat> parsed = ParseLogFormat(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *format = *parsed;
  return true;
}
std::string AbslUnparseFlag(LogFormat format) {
  return format == LogFormat::kJson ? "json" : "text";
}
}  // namespace fanin::base

namespace fanin::grpc_api {
bool AbslParseFlag(absl::string_view text, Role* role, std::string* error) {
  absl::StatusOr<Role> parsed = ParseRole(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *role = *parsed;
  return true;
}
std::string AbslUnparseFlag(Role role) { return RoleName(role); }
}  // namespace fanin::grpc_api

namespace fanin {

absl::StatusOr<ListenerList> ParseListenerList(absl::string_view text) {
  const size_t eq = text.find('=');
  auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": ", why));
  };
  if (eq == absl::string_view::npos || eq == 0) {
    return bad("want NAME=ITEM[,ITEM...] (NAME as in --listen)");
  }
  ListenerList out;
  out.listener = std::string(text.substr(0, eq));
  for (absl::string_view item : absl::StrSplit(text.substr(eq + 1), ',')) {
    if (item.empty()) return bad("an empty item");
    out.items.emplace_back(item);
  }
  return out;
}

bool AbslParseFlag(absl::string_view text, std::vector<ListenerList>* lists,
                   std::string* error) {
  std::vector<ListenerList> out;
  for (absl::string_view part : absl::StrSplit(text, ';', absl::SkipEmpty())) {
    absl::StatusOr<ListenerList> list = ParseListenerList(part);
    if (!list.ok()) {
      *error = std::string(list.status().message());
      return false;
    }
    out.push_back(*std::move(list));
  }
  *lists = std::move(out);
  return true;
}

std::string AbslUnparseFlag(const std::vector<ListenerList>& lists) {
  std::vector<std::string> parts;
  for (const ListenerList& l : lists) {
    parts.push_back(absl::StrCat(l.listener, "=", absl::StrJoin(l.items, ",")));
  }
  return absl::StrJoin(parts, ";");
}

}  // namespace fanin

namespace {
// The defaults, from one place.
const fanin::ServerFlagValues& Defaults() {
  static const auto* defaults = new fanin::ServerFlagValues();
  return *defaults;
}
}  // namespace

ABSL_FLAG(std::vector<fanin::net::ListenSpec>, listen, Defaults().listen,
          "raw listener [NAME=]HOST:PORT, [NAME=][V6]:PORT or "
          "[NAME=]unix:PATH; repeatable (FANIN_LISTEN: comma-separated)");
ABSL_FLAG(std::vector<std::string>, pull, Defaults().pull,
          "put listener NAME in pull mode (Readable + Read); repeatable "
          "(FANIN_PULL: comma-separated)");
ABSL_FLAG(std::vector<fanin::ListenerList>, listen_tls, Defaults().listen_tls,
          "terminate TLS on listener NAME: NAME=CERT,KEY[,CLIENT_CA] (PEM "
          "files; with CLIENT_CA client certificates are required and "
          "verified); re-read on SIGHUP; repeatable (FANIN_LISTEN_TLS: "
          "';'-separated)");
ABSL_FLAG(std::vector<fanin::ListenerList>, listen_tls_alpn,
          Defaults().listen_tls_alpn,
          "ALPN protocols a TLS listener accepts, in its order of preference: "
          "NAME=PROTO[,PROTO...]; repeatable (FANIN_LISTEN_TLS_ALPN: "
          "';'-separated)");
ABSL_FLAG(std::vector<std::string>, listen_proxy_protocol,
          Defaults().listen_proxy_protocol,
          "connections to listener NAME start with a PROXY protocol v1 or v2 "
          "header (from an L4 balancer), read before anything else; "
          "repeatable (FANIN_LISTEN_PROXY_PROTOCOL: comma-separated)");
ABSL_FLAG(absl::Duration, tls_handshake_timeout,
          Defaults().tls_handshake_timeout,
          "close a TLS connection whose handshake is not done this long after "
          "it began (counted, no event)");
ABSL_FLAG(absl::Duration, proxy_header_timeout, Defaults().proxy_header_timeout,
          "close a PROXY protocol connection whose header is not complete "
          "this long after accept (counted, no event)");
ABSL_FLAG(fanin::net::Endpoint, grpc_address, Defaults().grpc_address,
          "gRPC address, HOST:PORT or unix:PATH (port 0 picks a free one)");
ABSL_FLAG(
    fanin::reactor::PollerKind, poller, Defaults().poller,
    "readiness backend: epoll (level-triggered), epoll-edge, poll, select");
ABSL_FLAG(int, loops, Defaults().loops,
          "reactor loops (threads); 0 = one per core less one (at least 1)");
ABSL_FLAG(int64_t, max_connections, Defaults().max_connections,
          "raw connections held at once; more are accepted and closed "
          "(CLOSED with reason REJECTED)");
ABSL_FLAG(int64_t, max_outbound_bytes, Defaults().max_outbound_bytes,
          "bytes a connection may have queued for writing; a Write beyond it "
          "fails with RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, read_chunk_bytes, Defaults().read_chunk_bytes,
          "bytes read from one connection per wake-up (fairness)");
ABSL_FLAG(int64_t, subscriber_queue_bytes, Defaults().subscriber_queue_bytes,
          "unread bytes a lossless subscriber may hold back before the "
          "sockets it matches are paused");
ABSL_FLAG(int64_t, history_events, Defaults().history_events,
          "events kept for resume");
ABSL_FLAG(int64_t, history_bytes, Defaults().history_bytes,
          "bytes kept for resume (the history holds whichever is less)");
ABSL_FLAG(absl::Duration, idle_timeout, Defaults().idle_timeout,
          "close raw connections idle this long (0 = never)");
ABSL_FLAG(bool, keep_half_open, Defaults().keep_half_open,
          "after the peer's FIN keep the connection open for writing until a "
          "subscriber closes it");
ABSL_FLAG(absl::Duration, close_linger, Defaults().close_linger,
          "after a graceful close sent FIN, how long to wait for the peer's");
ABSL_FLAG(absl::Duration, heartbeat_interval, Defaults().heartbeat_interval,
          "Heartbeat on a stream idle this long");
ABSL_FLAG(int, max_subscribers, Defaults().max_subscribers,
          "Subscribe streams at once");
ABSL_FLAG(int, max_batch_events, Defaults().max_batch_events,
          "upper bound on SubscribeRequest.max_batch_events");
ABSL_FLAG(absl::Duration, subscriber_stall_timeout,
          Defaults().subscriber_stall_timeout,
          "end a lossless stream (ABORTED, resumable) whose subscriber has "
          "not taken a write for this long, so it stops holding back "
          "ingestion; 0 = never");
ABSL_FLAG(int64_t, lossless_total_bytes, Defaults().lossless_total_bytes,
          "bound on lossless backlog across all subscribers: each lossless "
          "subscription reserves --subscriber_queue_bytes of it; one more is "
          "refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, group_idle_timeout, Defaults().group_idle_timeout,
          "forget a worker-pool group this long after its last member left "
          "(a lossless group keeps its undelivered events, and holds back "
          "ingestion past --subscriber_queue_bytes, until then); 0 = at once");
ABSL_FLAG(bool, group_rebalance, Defaults().group_rebalance,
          "every member joining a group takes over existing connections "
          "until the group is balanced, as if it asked for rebalance");
ABSL_FLAG(int64_t, group_redelivery_bytes, Defaults().group_redelivery_bytes,
          "when a group member leaves, its most recently completed writes up "
          "to this many bytes go to its connections' new members too, marked "
          "possibly redelivered (a client that cancels drops what it had "
          "received but not read, up to its HTTP/2 window); 0 = only its "
          "unfinished write");
ABSL_FLAG(int, max_groups, Defaults().max_groups,
          "worker-pool groups at once; one more is refused with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(fanin::grpc_api::Role, lossless_role, Defaults().lossless_role,
          "with access control on, the role a lossless subscription needs "
          "(it can pause ingestion): reader or writer");
ABSL_FLAG(absl::Duration, grpc_keepalive_time, Defaults().grpc_keepalive_time,
          "ping a gRPC connection after this long without traffic (keeps L4 "
          "balancer and NAT entries alive; finds vanished subscribers)");
ABSL_FLAG(absl::Duration, grpc_keepalive_timeout,
          Defaults().grpc_keepalive_timeout,
          "close a gRPC connection whose keepalive ping is unanswered this "
          "long");
ABSL_FLAG(absl::Duration, grpc_max_connection_idle,
          Defaults().grpc_max_connection_idle,
          "close gRPC connections with no call for this long (GOAWAY); 0 = "
          "never");
ABSL_FLAG(absl::Duration, grpc_max_connection_age,
          Defaults().grpc_max_connection_age,
          "ask clients to reconnect after this long (GOAWAY), so a balancer "
          "can spread them; 0 = never");
ABSL_FLAG(absl::Duration, grpc_max_connection_age_grace,
          Defaults().grpc_max_connection_age_grace,
          "after --grpc_max_connection_age, how long calls may finish before "
          "the connection is closed");
ABSL_FLAG(int, default_batch_events, Defaults().default_batch_events,
          "events per batch when the subscriber does not say");
ABSL_FLAG(absl::Duration, drain_timeout, Defaults().drain_timeout,
          "bound on graceful shutdown after SIGTERM/SIGINT");
ABSL_FLAG(int64_t, max_connections_per_ip, Defaults().max_connections_per_ip,
          "raw connections held at once from one source IP; more are "
          "accepted and closed (CLOSED with reason REJECTED); 0 = no limit");
ABSL_FLAG(int64_t, max_grpc_message_bytes, Defaults().max_grpc_message_bytes,
          "largest gRPC message received or sent (a bigger Write is refused "
          "with RESOURCE_EXHAUSTED)");
ABSL_FLAG(std::string, tls_cert, Defaults().tls_cert,
          "serve gRPC over TLS with this certificate chain (PEM; needs "
          "--tls_key)");
ABSL_FLAG(std::string, tls_key, Defaults().tls_key,
          "private key of --tls_cert (PEM)");
ABSL_FLAG(std::string, tls_client_ca, Defaults().tls_client_ca,
          "mutual TLS: require client certificates signed by these CAs (PEM)");
ABSL_FLAG(std::string, auth_tokens_file, Defaults().auth_tokens_file,
          "access control: lines 'ROLE CREDENTIAL' (role reader or writer; "
          "credential a bearer token or cert:IDENTITY); re-read on SIGHUP");
ABSL_FLAG(fanin::grpc_api::Role, tls_client_role, Defaults().tls_client_role,
          "role of a verified client certificate not named in "
          "--auth_tokens_file: none, reader or writer");
ABSL_FLAG(std::optional<fanin::net::Endpoint>, metrics_address,
          Defaults().metrics_address,
          "serve Prometheus metrics at http://HOST:PORT/metrics (empty: off)");
ABSL_FLAG(absl::Duration, watchdog_timeout, Defaults().watchdog_timeout,
          "health turns NOT_SERVING when a reactor loop has not run a probe "
          "for this long");
ABSL_FLAG(fanin::base::LogLevel, log_level, Defaults().log_level,
          "debug, info, warning or error");
ABSL_FLAG(fanin::base::LogFormat, log_format, Defaults().log_format,
          "text (human-readable) or json (one object per line)");
ABSL_FLAG(std::string, cluster_nats, Defaults().cluster_nats,
          "cluster mode: the NATS JetStream broker(s), "
          "nats://HOST:PORT[,nats://HOST:PORT...] (empty: standalone)");
ABSL_FLAG(std::string, node_name, Defaults().node_name,
          "cluster mode: this node's name, unique among live nodes (empty: the "
          "host name)");
ABSL_FLAG(std::string, cluster_name, Defaults().cluster_name,
          "cluster mode: names the JetStream stream <name>_events and the KV "
          "buckets <name>_nodes, <name>_ids");
ABSL_FLAG(std::string, cluster_advertise_address,
          Defaults().cluster_advertise_address,
          "cluster mode: the gRPC address other nodes and clients reach this "
          "node at (empty: the bound --grpc_address)");
ABSL_FLAG(int64_t, cluster_stream_max_bytes,
          Defaults().cluster_stream_max_bytes,
          "cluster mode: retention of the stream, in bytes (when it creates "
          "the stream)");
ABSL_FLAG(absl::Duration, cluster_stream_max_age,
          Defaults().cluster_stream_max_age,
          "cluster mode: retention of the stream, in time (0: no limit)");
ABSL_FLAG(int, cluster_replicas, Defaults().cluster_replicas,
          "cluster mode: JetStream replicas of the stream and buckets, 1 or 3");
ABSL_FLAG(std::string, cluster_storage, Defaults().cluster_storage,
          "cluster mode: file or memory storage for the stream");
ABSL_FLAG(std::string, cluster_nats_token, Defaults().cluster_nats_token,
          "cluster mode: NATS token");
ABSL_FLAG(std::string, cluster_nats_user, Defaults().cluster_nats_user,
          "cluster mode: NATS user (with --cluster_nats_password)");
ABSL_FLAG(std::string, cluster_nats_password, Defaults().cluster_nats_password,
          "cluster mode: NATS password");
ABSL_FLAG(std::string, cluster_nats_ca, Defaults().cluster_nats_ca,
          "cluster mode: CA file; connect to NATS with TLS");
ABSL_FLAG(absl::Duration, cluster_connect_timeout,
          Defaults().cluster_connect_timeout,
          "cluster mode: how long start-up waits for the broker");
ABSL_FLAG(absl::Duration, cluster_node_timeout, Defaults().cluster_node_timeout,
          "cluster mode: a node silent this long is not live (its name may be "
          "taken again)");
ABSL_FLAG(int64_t, cluster_buffer_bytes, Defaults().cluster_buffer_bytes,
          "cluster mode: events waiting to be published; past it the node "
          "stops reading its sockets");
ABSL_FLAG(absl::Duration, cluster_request_timeout,
          Defaults().cluster_request_timeout,
          "cluster mode: how long a request routed to another node may take");
ABSL_FLAG(std::string, ready_file, Defaults().ready_file,
          "once serving, write the bound addresses here (lines 'grpc ADDR' and "
          "'listen NAME ADDR')");

namespace fanin {
namespace {

constexpr char kUsage[] =
    "raw TCP/unix sockets in, one ordered gRPC event stream "
    "out.\n"
    "\n"
    "  fanin_server [--listen=[NAME=]HOST:PORT|unix:PATH]... [--pull=NAME]...\n"
    "               [--grpc_address=HOST:PORT] [--poller=epoll|epoll-edge|"
    "poll|select] [flags]\n"
    "               [--listen_tls=NAME=CERT,KEY[,CLIENT_CA]]... "
    "[--listen_proxy_protocol=NAME]...\n"
    "\n"
    "--listen, --pull, --listen_tls, --listen_tls_alpn and "
    "--listen_proxy_protocol repeat.\nEvery flag may also be set as "
    "FANIN_<FLAG> in the environment (the command line\nwins; "
    "FANIN_LISTEN_TLS and FANIN_LISTEN_TLS_ALPN separate specs with ';').";

// fanin's own flags are those defined in this file; the rest (--help,
// --flagfile, ...) are Abseil's and go to absl::ParseCommandLine.
bool IsOurs(const absl::CommandLineFlag& flag) {
  return absl::StrContains(flag.Filename(), "server_flags");
}

// Abseil's usage and file flags, which ParseCommandLine handles but which
// are not all found by absl::FindCommandLineFlag in this Abseil version. The
// second group takes a value.
bool IsAbseilBuiltin(absl::string_view name, bool* takes_value) {
  for (absl::string_view n : {"help", "helpfull", "helpshort", "helppackage",
                              "version", "only_check_args"}) {
    if (name == n) {
      *takes_value = false;
      return true;
    }
  }
  for (absl::string_view n : {"helpon", "helpmatch", "flagfile", "fromenv",
                              "tryfromenv", "undefok"}) {
    if (name == n) {
      *takes_value = true;
      return true;
    }
  }
  return false;
}

bool IsRepeated(absl::string_view name) {
  return name == "listen" || name == "pull" || name == "listen_tls" ||
         name == "listen_tls_alpn" || name == "listen_proxy_protocol";
}

void SetUpUsage() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    absl::SetProgramUsageMessage(kUsage);
    // --help lists fanin's own flags (they live here, not in main.cc).
    absl::FlagsUsageConfig usage;
    usage.contains_help_flags = [](absl::string_view file) {
      return absl::StrContains(file, "server_flags");
    };
    usage.contains_helpshort_flags = usage.contains_help_flags;
    absl::SetFlagsUsageConfig(usage);
  });
}

// What the command line said, before any value is parsed.
struct CommandLine {
  // Last value of each non-repeated flag of ours.
  std::map<std::string, std::string> values;
  // Each occurrence of --listen / --pull, in order.
  std::map<std::string, std::vector<std::string>> repeated;
  // argv[0] and Abseil's own flags, for absl::ParseCommandLine.
  std::vector<std::string> abseil_args;
};

// Splits argv into fanin's flags and Abseil's. Forms: --name=value,
// --name value, -name..., --bool, --nobool, and "--" (after which
// everything is positional, which fanin_server takes none of).
absl::StatusOr<CommandLine> SplitCommandLine(int argc, char** argv) {
  CommandLine out;
  out.abseil_args.emplace_back(argc > 0 ? argv[0] : "fanin_server");
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      if (i + 1 < argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected argument \"", argv[i + 1],
                         "\" (fanin_server takes no positional arguments)"));
      }
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument \"", arg, "\" (flags start with --)"));
    }
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t eq = body.find('=');
    absl::string_view name = body.substr(0, eq);
    std::optional<std::string> value;
    if (eq != absl::string_view::npos) value = std::string(body.substr(eq + 1));
    bool builtin_takes_value = false;
    if (IsAbseilBuiltin(name, &builtin_takes_value)) {
      out.abseil_args.emplace_back(arg);
      if (builtin_takes_value && !value.has_value() && i + 1 < argc) {
        out.abseil_args.emplace_back(argv[++i]);
      }
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !value.has_value() &&
        absl::ConsumePrefix(&name, "no")) {
      flag = absl::FindCommandLineFlag(name);
      if (flag != nullptr && !flag->IsOfType<bool>()) flag = nullptr;
      if (flag != nullptr) value = "false";
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", body.substr(0, eq),
                       " (fanin_server --help lists them)"));
    }
    if (!IsOurs(*flag)) {
      out.abseil_args.emplace_back(arg);
      if (!value.has_value() && !flag->IsOfType<bool>() && i + 1 < argc) {
        out.abseil_args.emplace_back(argv[++i]);
      }
      continue;
    }
    if (!value.has_value()) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
    }
    if (IsRepeated(name)) {
      out.repeated[std::string(name)].push_back(*std::move(value));
    } else {
      out.values[std::string(name)] = *std::move(value);
    }
  }
  return out;
}

// Abseil's message is "Illegal value 'V' specified for flag 'N'", then
// "; " and the type's own reason when it gives one. The caller names the
// flag and value already; keep the reason, or say what the type wants.
std::string WhyNot(const absl::CommandLineFlag& flag, absl::string_view error) {
  const std::string prefix =
      absl::StrCat("specified for flag '", flag.Name(), "'");
  size_t at = error.find(prefix);
  if (at != absl::string_view::npos) {
    absl::string_view reason = error.substr(at + prefix.size());
    if (absl::ConsumePrefix(&reason, "; ") && !reason.empty()) {
      return std::string(reason);
    }
  }
  if (flag.IsOfType<int>() || flag.IsOfType<int64_t>()) {
    return "want an integer";
  }
  if (flag.IsOfType<absl::Duration>()) {
    return "want a duration such as 500ms, 10s or 2m";
  }
  if (flag.IsOfType<bool>()) return "want true or false";
  return std::string(error);
}

absl::Status SetFromText(absl::CommandLineFlag* flag, absl::string_view value,
                         absl::string_view source) {
  std::string error;
  if (!flag->ParseFrom(value, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", WhyNot(*flag, error)));
  }
  return absl::OkStatus();
}

// Each --listen is one spec (a unix path may hold a comma there), each
// --pull one name.
absl::Status SetRepeated(const std::string& name,
                         const std::vector<std::string>& items) {
  if (name == "pull") {
    absl::SetFlag(&FLAGS_pull, items);
    return absl::OkStatus();
  }
  if (name == "listen_proxy_protocol") {
    absl::SetFlag(&FLAGS_listen_proxy_protocol, items);
    return absl::OkStatus();
  }
  if (name == "listen_tls" || name == "listen_tls_alpn") {
    std::vector<ListenerList> lists;
    for (const std::string& item : items) {
      absl::StatusOr<ListenerList> list = ParseListenerList(item);
      if (!list.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, "=", item, ": ", list.status().message()));
      }
      lists.push_back(*std::move(list));
    }
    absl::SetFlag(
        name == "listen_tls" ? &FLAGS_listen_tls : &FLAGS_listen_tls_alpn,
        std::move(lists));
    return absl::OkStatus();
  }
  std::vector<net::ListenSpec> specs;
  for (const std::string& item : items) {
    absl::StatusOr<net::ListenSpec> spec = net::ParseListenSpec(item);
    if (!spec.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen=", item, ": ", spec.status().message()));
    }
    specs.push_back(*std::move(spec));
  }
  absl::SetFlag(&FLAGS_listen, std::move(specs));
  return absl::OkStatus();
}

// The one environment overlay, over every flag of ours.
absl::Status ApplyEnvironment(
    const CommandLine& command_line,
    absl::FunctionRef<const char*(const char*)> getenv) {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsOurs(*flag)) continue;
    const std::string key(name);
    if (command_line.values.count(key) > 0 ||
        command_line.repeated.count(key) > 0) {
      continue;
    }
    const std::string var = absl::StrCat("FANIN_", absl::AsciiStrToUpper(key));
    const char* value = getenv(var.c_str());
    if (value == nullptr || *value == '\0') continue;
    absl::Status s = SetFromText(
        flag, value, absl::StrCat(var, "=", value, " (--", key, ")"));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

ServerFlagValues ReadFlagValues() {
  ServerFlagValues v;
  v.listen = absl::GetFlag(FLAGS_listen);
  v.pull = absl::GetFlag(FLAGS_pull);
  v.listen_tls = absl::GetFlag(FLAGS_listen_tls);
  v.listen_tls_alpn = absl::GetFlag(FLAGS_listen_tls_alpn);
  v.listen_proxy_protocol = absl::GetFlag(FLAGS_listen_proxy_protocol);
  v.tls_handshake_timeout = absl::GetFlag(FLAGS_tls_handshake_timeout);
  v.proxy_header_timeout = absl::GetFlag(FLAGS_proxy_header_timeout);
  v.grpc_address = absl::GetFlag(FLAGS_grpc_address);
  v.poller = absl::GetFlag(FLAGS_poller);
  v.loops = absl::GetFlag(FLAGS_loops);
  v.max_connections = absl::GetFlag(FLAGS_max_connections);
  v.max_connections_per_ip = absl::GetFlag(FLAGS_max_connections_per_ip);
  v.max_outbound_bytes = absl::GetFlag(FLAGS_max_outbound_bytes);
  v.read_chunk_bytes = absl::GetFlag(FLAGS_read_chunk_bytes);
  v.subscriber_queue_bytes = absl::GetFlag(FLAGS_subscriber_queue_bytes);
  v.history_events = absl::GetFlag(FLAGS_history_events);
  v.history_bytes = absl::GetFlag(FLAGS_history_bytes);
  v.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  v.keep_half_open = absl::GetFlag(FLAGS_keep_half_open);
  v.close_linger = absl::GetFlag(FLAGS_close_linger);
  v.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  v.subscriber_stall_timeout = absl::GetFlag(FLAGS_subscriber_stall_timeout);
  v.lossless_total_bytes = absl::GetFlag(FLAGS_lossless_total_bytes);
  v.lossless_role = absl::GetFlag(FLAGS_lossless_role);
  v.group_idle_timeout = absl::GetFlag(FLAGS_group_idle_timeout);
  v.group_rebalance = absl::GetFlag(FLAGS_group_rebalance);
  v.max_groups = absl::GetFlag(FLAGS_max_groups);
  v.group_redelivery_bytes = absl::GetFlag(FLAGS_group_redelivery_bytes);
  v.grpc_keepalive_time = absl::GetFlag(FLAGS_grpc_keepalive_time);
  v.grpc_keepalive_timeout = absl::GetFlag(FLAGS_grpc_keepalive_timeout);
  v.grpc_max_connection_idle = absl::GetFlag(FLAGS_grpc_max_connection_idle);
  v.grpc_max_connection_age = absl::GetFlag(FLAGS_grpc_max_connection_age);
  v.grpc_max_connection_age_grace =
      absl::GetFlag(FLAGS_grpc_max_connection_age_grace);
  v.max_subscribers = absl::GetFlag(FLAGS_max_subscribers);
  v.max_batch_events = absl::GetFlag(FLAGS_max_batch_events);
  v.default_batch_events = absl::GetFlag(FLAGS_default_batch_events);
  v.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  v.max_grpc_message_bytes = absl::GetFlag(FLAGS_max_grpc_message_bytes);
  v.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  v.tls_key = absl::GetFlag(FLAGS_tls_key);
  v.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  v.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  v.tls_client_role = absl::GetFlag(FLAGS_tls_client_role);
  v.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  v.watchdog_timeout = absl::GetFlag(FLAGS_watchdog_timeout);
  v.log_level = absl::GetFlag(FLAGS_log_level);
  v.log_format = absl::GetFlag(FLAGS_log_format);
  v.ready_file = absl::GetFlag(FLAGS_ready_file);
  v.cluster_nats = absl::GetFlag(FLAGS_cluster_nats);
  v.node_name = absl::GetFlag(FLAGS_node_name);
  v.cluster_name = absl::GetFlag(FLAGS_cluster_name);
  v.cluster_advertise_address = absl::GetFlag(FLAGS_cluster_advertise_address);
  v.cluster_stream_max_bytes = absl::GetFlag(FLAGS_cluster_stream_max_bytes);
  v.cluster_stream_max_age = absl::GetFlag(FLAGS_cluster_stream_max_age);
  v.cluster_replicas = absl::GetFlag(FLAGS_cluster_replicas);
  v.cluster_storage = absl::GetFlag(FLAGS_cluster_storage);
  v.cluster_nats_token = absl::GetFlag(FLAGS_cluster_nats_token);
  v.cluster_nats_user = absl::GetFlag(FLAGS_cluster_nats_user);
  v.cluster_nats_password = absl::GetFlag(FLAGS_cluster_nats_password);
  v.cluster_nats_ca = absl::GetFlag(FLAGS_cluster_nats_ca);
  v.cluster_connect_timeout = absl::GetFlag(FLAGS_cluster_connect_timeout);
  v.cluster_node_timeout = absl::GetFlag(FLAGS_cluster_node_timeout);
  v.cluster_buffer_bytes = absl::GetFlag(FLAGS_cluster_buffer_bytes);
  v.cluster_request_timeout = absl::GetFlag(FLAGS_cluster_request_timeout);
  return v;
}

absl::Status Positive(const char* name, int64_t value) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be positive, got ", value));
  }
  return absl::OkStatus();
}

absl::Status Positive(const char* name, absl::Duration value) {
  if (value <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, " must be positive, got ", absl::FormatDuration(value)));
  }
  return absl::OkStatus();
}

absl::Status NotNegative(const char* name, int64_t value) {
  if (value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be >= 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status NotNegative(const char* name, absl::Duration value) {
  if (value < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, " must be >= 0, got ", absl::FormatDuration(value)));
  }
  return absl::OkStatus();
}

// The cluster flags: checked only when --cluster_nats is set (and then all).
absl::Status ValidateCluster(const ServerFlagValues& v) {
  if (v.cluster_nats.empty()) return absl::OkStatus();
  for (absl::string_view url : absl::StrSplit(v.cluster_nats, ',')) {
    absl::string_view rest = url;
    if (!absl::ConsumePrefix(&rest, "nats://") &&
        !absl::ConsumePrefix(&rest, "tls://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cluster_nats: \"", url,
          "\" is not a NATS URL; want nats://HOST:PORT[,nats://HOST:PORT...]"));
    }
    const size_t at = rest.rfind('@');
    if (at != absl::string_view::npos) rest.remove_prefix(at + 1);
    const size_t colon = rest.rfind(':');
    int port = 0;
    if (rest.empty() || colon == 0 || colon == absl::string_view::npos ||
        !absl::SimpleAtoi(rest.substr(colon + 1), &port) || port <= 0 ||
        port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--cluster_nats: \"", url, "\" needs HOST:PORT after nats://"));
    }
  }
  auto name_ok = [](absl::string_view n) {
    if (n.empty() || n.size() > 64) return false;
    for (char c : n) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
          c != '_') {
        return false;
      }
    }
    return true;
  };
  if (!name_ok(v.cluster_name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cluster_name: \"", v.cluster_name,
        "\" must be 1-64 letters, digits, '-' or '_' (it names NATS "
        "streams)"));
  }
  if (!v.node_name.empty() && !name_ok(v.node_name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--node_name: \"", v.node_name,
                     "\" must be 1-64 letters, digits, '-' or '_'"));
  }
  if (v.cluster_replicas != 1 && v.cluster_replicas != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cluster_replicas must be 1 or 3, got ", v.cluster_replicas));
  }
  if (v.cluster_storage != "file" && v.cluster_storage != "memory") {
    return absl::InvalidArgumentError(
        absl::StrCat("--cluster_storage must be file or memory, got \"",
                     v.cluster_storage, "\""));
  }
  if (v.cluster_nats_user.empty() != v.cluster_nats_password.empty()) {
    return absl::InvalidArgumentError(
        "--cluster_nats_user and --cluster_nats_password go together");
  }
  for (const absl::Status& s :
       {Positive("cluster_stream_max_bytes", v.cluster_stream_max_bytes),
        NotNegative("cluster_stream_max_age", v.cluster_stream_max_age),
        Positive("cluster_connect_timeout", v.cluster_connect_timeout),
        Positive("cluster_node_timeout", v.cluster_node_timeout),
        Positive("cluster_buffer_bytes", v.cluster_buffer_bytes),
        Positive("cluster_request_timeout", v.cluster_request_timeout)}) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// --listen_tls, --listen_tls_alpn and --listen_proxy_protocol name
// listeners that exist, each once, with the right number of items.
absl::Status ValidateListenerSecurity(const ServerFlagValues& v) {
  std::set<std::string> names;
  for (const net::ListenSpec& spec : v.listen) names.insert(spec.name);
  auto unknown = [&names](const char* flag, const std::string& name) {
    std::vector<std::string> known(names.begin(), names.end());
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": no listener named \"", name,
                     "\" (--listen has: ", absl::StrJoin(known, ", "), ")"));
  };
  std::set<std::string> tls;
  for (const ListenerList& t : v.listen_tls) {
    if (!names.contains(t.listener)) return unknown("listen_tls", t.listener);
    if (t.items.size() < 2 || t.items.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen_tls=", t.listener, "=", absl::StrJoin(t.items, ","),
          ": want NAME=CERT,KEY[,CLIENT_CA]"));
    }
    if (!tls.insert(t.listener).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen_tls: listener \"", t.listener, "\" given twice"));
    }
  }
  std::set<std::string> alpn;
  for (const ListenerList& a : v.listen_tls_alpn) {
    if (!names.contains(a.listener)) {
      return unknown("listen_tls_alpn", a.listener);
    }
    if (!tls.contains(a.listener)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen_tls_alpn: listener \"", a.listener,
                       "\" has no --listen_tls"));
    }
    if (!alpn.insert(a.listener).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen_tls_alpn: listener \"", a.listener, "\" given twice"));
    }
    for (const std::string& p : a.items) {
      if (p.size() > 255) {
        return absl::InvalidArgumentError(
            "--listen_tls_alpn: a protocol name is at most 255 bytes");
      }
    }
  }
  for (const std::string& name : v.listen_proxy_protocol) {
    if (!names.contains(name)) return unknown("listen_proxy_protocol", name);
  }
  return absl::OkStatus();
}

// Every check that needs more than one value's own syntax.
absl::Status Validate(const ServerFlagValues& v) {
  if (v.listen.empty()) {
    return absl::InvalidArgumentError("--listen: at least one listener needed");
  }
  std::vector<absl::Status> checks = {
      Positive("max_connections", v.max_connections),
      Positive("max_grpc_message_bytes", v.max_grpc_message_bytes),
      Positive("max_outbound_bytes", v.max_outbound_bytes),
      Positive("read_chunk_bytes", v.read_chunk_bytes),
      Positive("subscriber_queue_bytes", v.subscriber_queue_bytes),
      Positive("history_events", v.history_events),
      Positive("history_bytes", v.history_bytes),
      Positive("max_subscribers", v.max_subscribers),
      Positive("max_batch_events", v.max_batch_events),
      Positive("default_batch_events", v.default_batch_events),
      NotNegative("loops", v.loops),
      NotNegative("max_connections_per_ip", v.max_connections_per_ip),
      Positive("heartbeat_interval", v.heartbeat_interval),
      Positive("drain_timeout", v.drain_timeout),
      Positive("watchdog_timeout", v.watchdog_timeout),
      Positive("lossless_total_bytes", v.lossless_total_bytes),
      Positive("grpc_keepalive_time", v.grpc_keepalive_time),
      Positive("grpc_keepalive_timeout", v.grpc_keepalive_timeout),
      NotNegative("subscriber_stall_timeout", v.subscriber_stall_timeout),
      NotNegative("group_idle_timeout", v.group_idle_timeout),
      Positive("max_groups", v.max_groups),
      NotNegative("group_redelivery_bytes", v.group_redelivery_bytes),
      NotNegative("grpc_max_connection_idle", v.grpc_max_connection_idle),
      NotNegative("grpc_max_connection_age", v.grpc_max_connection_age),
      NotNegative("grpc_max_connection_age_grace",
                  v.grpc_max_connection_age_grace),
      Positive("tls_handshake_timeout", v.tls_handshake_timeout),
      Positive("proxy_header_timeout", v.proxy_header_timeout),
  };
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  if (v.lossless_total_bytes < v.subscriber_queue_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lossless_total_bytes (", v.lossless_total_bytes,
                     ") must hold at least one --subscriber_queue_bytes (",
                     v.subscriber_queue_bytes, ")"));
  }
  if (v.lossless_role == grpc_api::Role::kNone) {
    return absl::InvalidArgumentError(
        "--lossless_role must be reader or writer");
  }
  if (v.max_grpc_message_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        "--max_grpc_message_bytes must be at most 1 GiB");
  }
  if (v.metrics_address.has_value() &&
      v.metrics_address->family == net::Endpoint::Family::kUnix) {
    return absl::InvalidArgumentError(
        "--metrics_address: a unix socket is not supported; want HOST:PORT");
  }
  if (absl::Status s = ValidateListenerSecurity(v); !s.ok()) return s;
  if (v.tls_cert.empty() != v.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  if (!v.tls_client_ca.empty() && v.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key (mutual TLS is TLS)");
  }
  return ValidateCluster(v);
}

}  // namespace

absl::StatusOr<ServerFlags> ServerFlagsFromValues(const ServerFlagValues& v) {
  absl::Status valid = Validate(v);
  if (!valid.ok()) return valid;
  ServerFlags out;
  ServerConfig& c = out.config;
  c.core.listen = v.listen;
  c.core.pull_listeners = v.pull;
  c.core.poller = v.poller;
  c.core.loops = v.loops;
  c.core.max_connections = v.max_connections;
  c.core.max_connections_per_ip = v.max_connections_per_ip;
  c.core.max_outbound_bytes = v.max_outbound_bytes;
  c.core.read_chunk_bytes = v.read_chunk_bytes;
  c.core.idle_timeout = v.idle_timeout;
  c.core.keep_half_open = v.keep_half_open;
  c.core.close_linger = v.close_linger;
  for (const ListenerList& t : v.listen_tls) {
    core::TlsListenerOptions tls;
    tls.listener = t.listener;
    tls.files.cert_file = t.items[0];
    tls.files.key_file = t.items[1];
    if (t.items.size() > 2) tls.files.client_ca_file = t.items[2];
    for (const ListenerList& a : v.listen_tls_alpn) {
      if (a.listener == t.listener) tls.files.alpn = a.items;
    }
    c.core.tls.push_back(std::move(tls));
  }
  c.core.proxy_protocol_listeners = v.listen_proxy_protocol;
  c.core.tls_handshake_timeout = v.tls_handshake_timeout;
  c.core.proxy_header_timeout = v.proxy_header_timeout;
  c.hub.history_events = v.history_events;
  c.hub.history_bytes = v.history_bytes;
  c.hub.lossless_queue_bytes = v.subscriber_queue_bytes;
  c.hub.lossless_total_bytes = v.lossless_total_bytes;
  c.service.heartbeat_interval = v.heartbeat_interval;
  c.service.subscriber_stall_timeout = v.subscriber_stall_timeout;
  c.auth.lossless_role = v.lossless_role;
  c.service.groups.idle_timeout = v.group_idle_timeout;
  c.service.groups.rebalance_on_join = v.group_rebalance;
  c.service.groups.max_groups = static_cast<size_t>(v.max_groups);
  c.service.groups.redelivery_bytes =
      static_cast<size_t>(v.group_redelivery_bytes);
  c.transport.keepalive_time = v.grpc_keepalive_time;
  c.transport.keepalive_timeout = v.grpc_keepalive_timeout;
  c.transport.max_connection_idle = v.grpc_max_connection_idle;
  c.transport.max_connection_age = v.grpc_max_connection_age;
  c.transport.max_connection_age_grace = v.grpc_max_connection_age_grace;
  c.service.max_subscribers = v.max_subscribers;
  c.service.max_batch_events = v.max_batch_events;
  c.service.default_batch_events =
      std::min(v.default_batch_events, v.max_batch_events);
  c.grpc_address = v.grpc_address;
  c.max_grpc_message_bytes = static_cast<int>(v.max_grpc_message_bytes);
  c.drain_timeout = v.drain_timeout;
  c.tls.cert_file = v.tls_cert;
  c.tls.key_file = v.tls_key;
  c.tls.client_ca_file = v.tls_client_ca;
  c.auth.tokens_file = v.auth_tokens_file;
  c.auth.cert_default_role = v.tls_client_role;
  c.metrics_address = v.metrics_address;
  c.watchdog.stuck_after = v.watchdog_timeout;
  c.watchdog.period = std::min(absl::Seconds(1), v.watchdog_timeout / 4);
  out.log_level = v.log_level;
  out.log_format = v.log_format;
  out.ready_file = v.ready_file;
  if (!v.cluster_nats.empty()) {
    cluster::ClusterOptions& k = c.cluster.emplace();
    k.servers = absl::StrSplit(v.cluster_nats, ',');
    k.cluster_name = v.cluster_name;
    k.node_name = v.node_name;
    if (k.node_name.empty()) {
      char host[256] = {};
      ::gethostname(host, sizeof(host) - 1);
      k.node_name = host;
    }
    k.stream_max_bytes = v.cluster_stream_max_bytes;
    k.stream_max_age = v.cluster_stream_max_age;
    k.replicas = v.cluster_replicas;
    k.memory_storage = v.cluster_storage == "memory";
    k.token = v.cluster_nats_token;
    k.user = v.cluster_nats_user;
    k.password = v.cluster_nats_password;
    k.ca_file = v.cluster_nats_ca;
    k.connect_timeout = v.cluster_connect_timeout;
    k.node_timeout = v.cluster_node_timeout;
    k.buffer_bytes = static_cast<size_t>(v.cluster_buffer_bytes);
    k.request_timeout = v.cluster_request_timeout;
    c.cluster_advertise_address = v.cluster_advertise_address;
  }
  return out;
}

absl::StatusOr<ServerFlags> ParseServerFlags(
    int argc, char** argv, absl::FunctionRef<const char*(const char*)> getenv) {
  SetUpUsage();
  absl::StatusOr<CommandLine> command_line = SplitCommandLine(argc, argv);
  if (!command_line.ok()) return command_line.status();
  // Precedence, lowest first: environment, Abseil's --flagfile, the command
  // line.
  absl::Status env = ApplyEnvironment(*command_line, getenv);
  if (!env.ok()) return env;
  // --help, --version, --flagfile...: Abseil's own handling (--help exits 0).
  std::vector<char*> abseil_args;
  for (std::string& a : command_line->abseil_args) {
    abseil_args.push_back(a.data());
  }
  absl::ParseCommandLine(static_cast<int>(abseil_args.size()),
                         abseil_args.data());
  for (const auto& [name, value] : command_line->values) {
    absl::Status s = SetFromText(absl::FindCommandLineFlag(name), value,
                                 absl::StrCat("--", name, "=", value));
    if (!s.ok()) return s;
  }
  for (const auto& [name, items] : command_line->repeated) {
    absl::Status s = SetRepeated(name, items);
    if (!s.ok()) return s;
  }
  absl::StatusOr<ServerFlags> flags = ServerFlagsFromValues(ReadFlagValues());
  if (!flags.ok()) return flags;
  // A certificate that does not load is a usage error now, not a failed
  // start later.
  for (const core::TlsListenerOptions& t : flags->config.core.tls) {
    absl::StatusOr<std::unique_ptr<net::TlsContext>> context =
        net::TlsContext::Create(t.files);
    if (!context.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen_tls=", t.listener, "=", t.files.cert_file, ",",
          t.files.key_file, t.files.client_ca_file.empty() ? "" : ",",
          t.files.client_ca_file, ": ", context.status().message()));
    }
  }
  return flags;
}

}  // namespace fanin
