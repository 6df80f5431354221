#include "server/server_flags.h"

#include <cstdlib>
#include <cstring>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/base/log.h"
#include "server/grpc/auth.h"
#include "server/net/address.h"
#include "server/reactor/poller.h"

ABSL_FLAG(std::string, grpc_address, "127.0.0.1:50051",
          "gRPC address, HOST:PORT or unix:PATH (port 0 picks a free one)");
ABSL_FLAG(
    std::string, poller, "epoll",
    "readiness backend: epoll (level-triggered), epoll-edge, poll, select");
ABSL_FLAG(int, loops, 0,
          "reactor loops (threads); 0 = one per core less one (at least 1)");
ABSL_FLAG(int64_t, max_connections, 100000,
          "raw connections held at once; more are accepted and closed "
          "(CLOSED with reason REJECTED)");
ABSL_FLAG(int64_t, max_outbound_bytes, 4 << 20,
          "bytes a connection may have queued for writing; a Write beyond it "
          "fails with RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, read_chunk_bytes, 64 << 10,
          "bytes read from one connection per wake-up (fairness)");
ABSL_FLAG(int64_t, subscriber_queue_bytes, 16 << 20,
          "unread bytes a lossless subscriber may hold back before the "
          "sockets it matches are paused");
ABSL_FLAG(int64_t, history_events, 131072, "events kept for resume");
ABSL_FLAG(int64_t, history_bytes, int64_t{256} << 20,
          "bytes kept for resume (the history holds whichever is less)");
ABSL_FLAG(absl::Duration, idle_timeout, absl::ZeroDuration(),
          "close raw connections idle this long (0 = never)");
ABSL_FLAG(bool, keep_half_open, false,
          "after the peer's FIN keep the connection open for writing until a "
          "subscriber closes it");
ABSL_FLAG(absl::Duration, close_linger, absl::Seconds(5),
          "after a graceful close sent FIN, how long to wait for the peer's");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(5),
          "Heartbeat on a stream idle this long");
ABSL_FLAG(int, max_subscribers, 1024, "Subscribe streams at once");
ABSL_FLAG(int, max_batch_events, 4096,
          "upper bound on SubscribeRequest.max_batch_events");
ABSL_FLAG(int, default_batch_events, 256,
          "events per batch when the subscriber does not say");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "bound on graceful shutdown after SIGTERM/SIGINT");
ABSL_FLAG(int64_t, max_connections_per_ip, 0,
          "raw connections held at once from one source IP; more are "
          "accepted and closed (CLOSED with reason REJECTED); 0 = no limit");
ABSL_FLAG(int64_t, max_grpc_message_bytes, 4 << 20,
          "largest gRPC message received or sent (a bigger Write is refused "
          "with RESOURCE_EXHAUSTED)");
ABSL_FLAG(std::string, tls_cert, "",
          "serve gRPC over TLS with this certificate chain (PEM; needs "
          "--tls_key)");
ABSL_FLAG(std::string, tls_key, "", "private key of --tls_cert (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "mutual TLS: require client certificates signed by these CAs (PEM)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "access control: lines 'ROLE CREDENTIAL' (role reader or writer; "
          "credential a bearer token or cert:IDENTITY); re-read on SIGHUP");
ABSL_FLAG(std::string, tls_client_role, "reader",
          "role of a verified client certificate not named in "
          "--auth_tokens_file: none, reader or writer");
ABSL_FLAG(std::string, metrics_address, "",
          "serve Prometheus metrics at http://HOST:PORT/metrics (empty: off)");
ABSL_FLAG(absl::Duration, watchdog_timeout, absl::Seconds(5),
          "health turns NOT_SERVING when a reactor loop has not run a probe "
          "for this long");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_format, "text",
          "text (human-readable) or json (one object per line)");
ABSL_FLAG(std::string, ready_file, "",
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
    "\n"
    "  --listen  raw listener, repeatable (default: default=127.0.0.1:7070)\n"
    "  --pull    put listener NAME in pull mode (Readable + Read), repeatable\n"
    "Every flag may also be set as FANIN_<FLAG> in the environment.";

constexpr const char* kRepeated[] = {"listen", "pull"};

bool IsRepeated(absl::string_view name) {
  for (const char* r : kRepeated) {
    if (name == r) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<ServerFlags> ParseServerFlags(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // --help lists fanin's own flags (they live here, not in main.cc).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server_flags");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // --listen / --pull repeat, which absl flags do not; take them out first.
  std::vector<std::string> listen, pull;
  std::vector<std::string> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    bool taken = false;
    for (const char* r : kRepeated) {
      std::string eq = absl::StrCat("--", r, "=");
      std::string bare = absl::StrCat("--", r);
      std::vector<std::string>& into =
          std::strcmp(r, "listen") == 0 ? listen : pull;
      if (absl::StartsWith(arg, eq)) {
        into.emplace_back(arg.substr(eq.size()));
        taken = true;
      } else if (arg == bare) {
        if (i + 1 >= argc) {
          return absl::InvalidArgumentError(
              absl::StrCat("--", r, " needs a value"));
        }
        into.emplace_back(argv[++i]);
        taken = true;
      }
    }
    if (!taken) rest.emplace_back(arg);
  }
  // FANIN_<FLAG> variables go before the command line, which then wins.
  std::vector<std::string> args = {rest[0]};
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsRepeated(name)) continue;
    if (flag->Filename().find("server_flags") == std::string::npos) continue;
    std::string var = absl::StrCat("FANIN_", absl::AsciiStrToUpper(name));
    if (const char* v = std::getenv(var.c_str())) {
      args.push_back(absl::StrCat("--", name, "=", v));
    }
  }
  args.insert(args.end(), rest.begin() + 1, rest.end());
  for (const char* r : kRepeated) {
    std::vector<std::string>& into =
        std::strcmp(r, "listen") == 0 ? listen : pull;
    if (!into.empty()) continue;
    std::string var = absl::StrCat("FANIN_", absl::AsciiStrToUpper(r));
    if (const char* v = std::getenv(var.c_str())) {
      for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        into.emplace_back(part);
      }
    }
  }
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (positional.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument \"", positional[1], "\" (flags start with --)"));
  }

  ServerFlags out;
  ServerConfig& c = out.config;
  if (listen.empty()) listen.push_back("default=127.0.0.1:7070");
  for (const std::string& spec : listen) {
    auto parsed = net::ParseListenSpec(spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen=", spec, ": ", parsed.status().message()));
    }
    c.core.listen.push_back(*parsed);
  }
  c.core.pull_listeners = pull;
  auto poller = reactor::ParsePollerKind(absl::GetFlag(FLAGS_poller));
  if (!poller.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--poller: ", poller.status().message()));
  }
  c.core.poller = *poller;
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " must be positive, got ", v));
    }
    return absl::OkStatus();
  };
  struct {
    const char* name;
    int64_t value;
  } sizes[] = {
      {"max_connections", absl::GetFlag(FLAGS_max_connections)},
      {"max_grpc_message_bytes", absl::GetFlag(FLAGS_max_grpc_message_bytes)},
      {"max_outbound_bytes", absl::GetFlag(FLAGS_max_outbound_bytes)},
      {"read_chunk_bytes", absl::GetFlag(FLAGS_read_chunk_bytes)},
      {"subscriber_queue_bytes", absl::GetFlag(FLAGS_subscriber_queue_bytes)},
      {"history_events", absl::GetFlag(FLAGS_history_events)},
      {"history_bytes", absl::GetFlag(FLAGS_history_bytes)},
      {"max_subscribers", absl::GetFlag(FLAGS_max_subscribers)},
      {"max_batch_events", absl::GetFlag(FLAGS_max_batch_events)},
      {"default_batch_events", absl::GetFlag(FLAGS_default_batch_events)},
  };
  for (const auto& s : sizes) {
    absl::Status st = positive(s.name, s.value);
    if (!st.ok()) return st;
  }
  if (absl::GetFlag(FLAGS_loops) < 0) {
    return absl::InvalidArgumentError("--loops must be >= 0");
  }
  c.core.loops = absl::GetFlag(FLAGS_loops);
  c.core.max_connections = absl::GetFlag(FLAGS_max_connections);
  if (absl::GetFlag(FLAGS_max_connections_per_ip) < 0) {
    return absl::InvalidArgumentError("--max_connections_per_ip must be >= 0");
  }
  if (absl::GetFlag(FLAGS_max_grpc_message_bytes) > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        "--max_grpc_message_bytes must be at most 1 GiB");
  }
  c.core.max_connections_per_ip = absl::GetFlag(FLAGS_max_connections_per_ip);
  c.max_grpc_message_bytes =
      static_cast<int>(absl::GetFlag(FLAGS_max_grpc_message_bytes));
  c.core.max_outbound_bytes = absl::GetFlag(FLAGS_max_outbound_bytes);
  c.core.read_chunk_bytes = absl::GetFlag(FLAGS_read_chunk_bytes);
  c.core.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  c.core.keep_half_open = absl::GetFlag(FLAGS_keep_half_open);
  c.core.close_linger = absl::GetFlag(FLAGS_close_linger);
  c.hub.history_events = absl::GetFlag(FLAGS_history_events);
  c.hub.history_bytes = absl::GetFlag(FLAGS_history_bytes);
  c.hub.lossless_queue_bytes = absl::GetFlag(FLAGS_subscriber_queue_bytes);
  c.service.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  c.service.max_subscribers = absl::GetFlag(FLAGS_max_subscribers);
  c.service.max_batch_events = absl::GetFlag(FLAGS_max_batch_events);
  c.service.default_batch_events =
      std::min(absl::GetFlag(FLAGS_default_batch_events),
               absl::GetFlag(FLAGS_max_batch_events));
  if (c.service.heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--heartbeat_interval must be positive");
  }
  auto grpc_address = net::Endpoint::Parse(absl::GetFlag(FLAGS_grpc_address));
  if (!grpc_address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--grpc_address: ", grpc_address.status().message()));
  }
  c.grpc_address = *grpc_address;
  c.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  if (c.drain_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--drain_timeout must be positive");
  }
  c.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  c.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  c.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  if (c.tls.cert_file.empty() != c.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  if (!c.tls.client_ca_file.empty() && c.tls.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key (mutual TLS is TLS)");
  }
  c.auth.tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  auto role = grpc_api::ParseRole(absl::GetFlag(FLAGS_tls_client_role));
  if (!role.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_client_role: ", role.status().message()));
  }
  c.auth.cert_default_role = *role;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto metrics = net::Endpoint::Parse(absl::GetFlag(FLAGS_metrics_address));
    if (metrics.ok() && metrics->family == net::Endpoint::Family::kUnix) {
      metrics = absl::InvalidArgumentError("a unix socket is not supported");
    }
    if (!metrics.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics_address: ", metrics.status().message()));
    }
    c.metrics_address = *metrics;
  }
  c.watchdog.stuck_after = absl::GetFlag(FLAGS_watchdog_timeout);
  if (c.watchdog.stuck_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--watchdog_timeout must be positive");
  }
  c.watchdog.period = std::min(absl::Seconds(1), c.watchdog.stuck_after / 4);
  auto level = base::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level: ", level.status().message()));
  }
  auto format = base::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_format: ", format.status().message()));
  }
  out.log_level = *level;
  out.log_format = *format;
  out.ready_file = absl::GetFlag(FLAGS_ready_file);
  return out;
}

}  // namespace fanin
