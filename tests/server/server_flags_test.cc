// fanin_server's flags: the pure mapping from typed values to ServerConfig,
// and the command line + FANIN_* overlay in front of it.
#include "server/server_flags.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace fanin {
namespace {

using net::Endpoint;

TEST(ServerFlagsFromValuesTest, DefaultsAreTheDocumentedOnes) {
  auto flags = ServerFlagsFromValues(ServerFlagValues{});
  ASSERT_TRUE(flags.ok()) << flags.status();
  const ServerConfig& c = flags->config;
  ASSERT_EQ(c.core.listen.size(), 1u);
  EXPECT_EQ(c.core.listen[0].name, "default");
  EXPECT_EQ(c.core.listen[0].endpoint.ToString(), "127.0.0.1:7070");
  EXPECT_TRUE(c.core.pull_listeners.empty());
  EXPECT_EQ(c.grpc_address.ToString(), "127.0.0.1:50051");
  EXPECT_EQ(c.core.poller, reactor::PollerKind::kEpollLevel);
  EXPECT_EQ(c.core.loops, 0);
  EXPECT_EQ(c.core.max_connections, 100000);
  EXPECT_EQ(c.core.max_connections_per_ip, 0);
  EXPECT_EQ(c.core.max_outbound_bytes, 4u << 20);
  EXPECT_EQ(c.hub.history_events, 131072u);
  EXPECT_EQ(c.hub.history_bytes, uint64_t{256} << 20);
  EXPECT_EQ(c.core.idle_timeout, absl::ZeroDuration());
  EXPECT_FALSE(c.core.keep_half_open);
  EXPECT_EQ(c.service.heartbeat_interval, absl::Seconds(5));
  EXPECT_EQ(c.drain_timeout, absl::Seconds(10));
  EXPECT_FALSE(c.metrics_address.has_value());
  EXPECT_TRUE(c.tls.cert_file.empty());
  EXPECT_EQ(c.auth.cert_default_role, grpc_api::Role::kReader);
  EXPECT_EQ(c.watchdog.stuck_after, absl::Seconds(5));
  EXPECT_EQ(c.watchdog.period, absl::Seconds(1));
  EXPECT_EQ(c.service.groups.idle_timeout, absl::Seconds(60));
  EXPECT_FALSE(c.service.groups.rebalance_on_join);
  EXPECT_EQ(c.service.groups.max_groups, 256u);
  EXPECT_EQ(c.service.groups.redelivery_bytes, 1u << 20);
  EXPECT_EQ(flags->log_level, base::LogLevel::kInfo);
  EXPECT_EQ(flags->log_format, base::LogFormat::kText);
  EXPECT_EQ(flags->ready_file, "");
}

TEST(ServerFlagsFromValuesTest, EachValueMapsWhereItShould) {
  ServerFlagValues v;
  v.listen = {*net::ParseListenSpec("a=127.0.0.1:1"),
              *net::ParseListenSpec("b=unix:/tmp/b.sock")};
  v.pull = {"b"};
  v.grpc_address = *Endpoint::Parse("[::1]:6000");
  v.poller = reactor::PollerKind::kSelect;
  v.loops = 3;
  v.max_connections = 11;
  v.max_connections_per_ip = 12;
  v.max_outbound_bytes = 13;
  v.read_chunk_bytes = 1400;
  v.subscriber_queue_bytes = 15;
  v.history_events = 16;
  v.history_bytes = 17;
  v.idle_timeout = absl::Seconds(18);
  v.keep_half_open = true;
  v.close_linger = absl::Seconds(19);
  v.heartbeat_interval = absl::Seconds(20);
  v.max_subscribers = 21;
  v.max_batch_events = 22;
  v.default_batch_events = 23;  // more than max_batch_events: capped
  v.drain_timeout = absl::Seconds(24);
  v.max_grpc_message_bytes = 25;
  v.tls_cert = "/c.pem";
  v.tls_key = "/k.pem";
  v.tls_client_ca = "/ca.pem";
  v.auth_tokens_file = "/tokens";
  v.tls_client_role = grpc_api::Role::kWriter;
  v.metrics_address = *Endpoint::Parse("0.0.0.0:9464");
  v.watchdog_timeout = absl::Seconds(2);
  v.group_idle_timeout = absl::Seconds(26);
  v.group_rebalance = true;
  v.max_groups = 27;
  v.group_redelivery_bytes = 28;
  v.log_level = base::LogLevel::kDebug;
  v.log_format = base::LogFormat::kJson;
  v.ready_file = "/ready";
  auto flags = ServerFlagsFromValues(v);
  ASSERT_TRUE(flags.ok()) << flags.status();
  const ServerConfig& c = flags->config;
  ASSERT_EQ(c.core.listen.size(), 2u);
  EXPECT_EQ(c.core.listen[1].name, "b");
  EXPECT_EQ(c.core.listen[1].endpoint.path, "/tmp/b.sock");
  EXPECT_EQ(c.core.pull_listeners, std::vector<std::string>{"b"});
  EXPECT_EQ(c.grpc_address.ToString(), "[::1]:6000");
  EXPECT_EQ(c.core.poller, reactor::PollerKind::kSelect);
  EXPECT_EQ(c.core.loops, 3);
  EXPECT_EQ(c.core.max_connections, 11);
  EXPECT_EQ(c.core.max_connections_per_ip, 12);
  EXPECT_EQ(c.core.max_outbound_bytes, 13u);
  EXPECT_EQ(c.core.read_chunk_bytes, 1400u);
  EXPECT_EQ(c.hub.lossless_queue_bytes, 15u);
  EXPECT_EQ(c.hub.history_events, 16u);
  EXPECT_EQ(c.hub.history_bytes, 17u);
  EXPECT_EQ(c.core.idle_timeout, absl::Seconds(18));
  EXPECT_TRUE(c.core.keep_half_open);
  EXPECT_EQ(c.core.close_linger, absl::Seconds(19));
  EXPECT_EQ(c.service.heartbeat_interval, absl::Seconds(20));
  EXPECT_EQ(c.service.max_subscribers, 21);
  EXPECT_EQ(c.service.max_batch_events, 22);
  EXPECT_EQ(c.service.default_batch_events, 22);
  EXPECT_EQ(c.drain_timeout, absl::Seconds(24));
  EXPECT_EQ(c.max_grpc_message_bytes, 25);
  EXPECT_EQ(c.tls.cert_file, "/c.pem");
  EXPECT_EQ(c.tls.key_file, "/k.pem");
  EXPECT_EQ(c.tls.client_ca_file, "/ca.pem");
  EXPECT_EQ(c.auth.tokens_file, "/tokens");
  EXPECT_EQ(c.auth.cert_default_role, grpc_api::Role::kWriter);
  ASSERT_TRUE(c.metrics_address.has_value());
  EXPECT_EQ(c.metrics_address->ToString(), "0.0.0.0:9464");
  EXPECT_EQ(c.watchdog.stuck_after, absl::Seconds(2));
  EXPECT_EQ(c.watchdog.period, absl::Milliseconds(500));
  EXPECT_EQ(c.service.groups.idle_timeout, absl::Seconds(26));
  EXPECT_TRUE(c.service.groups.rebalance_on_join);
  EXPECT_EQ(c.service.groups.max_groups, 27u);
  EXPECT_EQ(c.service.groups.redelivery_bytes, 28u);
  EXPECT_EQ(flags->log_level, base::LogLevel::kDebug);
  EXPECT_EQ(flags->log_format, base::LogFormat::kJson);
  EXPECT_EQ(flags->ready_file, "/ready");
}

TEST(ServerFlagsFromValuesTest, ListenerTlsAndProxyMapToTheCore) {
  ServerFlagValues v;
  v.listen = {*net::ParseListenSpec("edge=127.0.0.1:1"),
              *net::ParseListenSpec("lb=127.0.0.1:2")};
  v.listen_tls = {{"edge", {"/c.pem", "/k.pem", "/ca.pem"}},
                  {"lb", {"/c2.pem", "/k2.pem"}}};
  v.listen_tls_alpn = {{"edge", {"mqtt", "x-dev"}}};
  v.listen_proxy_protocol = {"lb"};
  v.tls_handshake_timeout = absl::Seconds(3);
  v.proxy_header_timeout = absl::Seconds(4);
  auto flags = ServerFlagsFromValues(v);
  ASSERT_TRUE(flags.ok()) << flags.status();
  const core::CoreOptions& c = flags->config.core;
  ASSERT_EQ(c.tls.size(), 2u);
  EXPECT_EQ(c.tls[0].listener, "edge");
  EXPECT_EQ(c.tls[0].files.cert_file, "/c.pem");
  EXPECT_EQ(c.tls[0].files.key_file, "/k.pem");
  EXPECT_EQ(c.tls[0].files.client_ca_file, "/ca.pem");
  EXPECT_EQ(c.tls[0].files.alpn, (std::vector<std::string>{"mqtt", "x-dev"}));
  EXPECT_EQ(c.tls[1].files.client_ca_file, "");
  EXPECT_TRUE(c.tls[1].files.alpn.empty());
  EXPECT_EQ(c.proxy_protocol_listeners, (std::vector<std::string>{"lb"}));
  EXPECT_EQ(c.tls_handshake_timeout, absl::Seconds(3));
  EXPECT_EQ(c.proxy_header_timeout, absl::Seconds(4));
  ServerFlagValues defaults;
  EXPECT_EQ(defaults.tls_handshake_timeout, absl::Seconds(10));
  EXPECT_EQ(defaults.proxy_header_timeout, absl::Seconds(5));
}

TEST(ServerFlagsFromValuesTest, BadCombinationsNameTheFlag) {
  struct Case {
    std::function<void(ServerFlagValues*)> change;
    const char* says;
  } cases[] = {
      {[](auto* v) { v->listen.clear(); }, "--listen"},
      {[](auto* v) { v->max_connections = 0; }, "--max_connections"},
      {[](auto* v) { v->max_connections_per_ip = -1; },
       "--max_connections_per_ip"},
      {[](auto* v) { v->max_outbound_bytes = -5; }, "--max_outbound_bytes"},
      {[](auto* v) { v->read_chunk_bytes = 0; }, "--read_chunk_bytes"},
      {[](auto* v) { v->subscriber_queue_bytes = 0; },
       "--subscriber_queue_bytes"},
      {[](auto* v) { v->history_events = 0; }, "--history_events"},
      {[](auto* v) { v->history_bytes = 0; }, "--history_bytes"},
      {[](auto* v) { v->max_subscribers = 0; }, "--max_subscribers"},
      {[](auto* v) { v->max_batch_events = 0; }, "--max_batch_events"},
      {[](auto* v) { v->default_batch_events = 0; }, "--default_batch_events"},
      {[](auto* v) { v->loops = -1; }, "--loops"},
      {[](auto* v) { v->max_grpc_message_bytes = 0; },
       "--max_grpc_message_bytes"},
      {[](auto* v) { v->max_grpc_message_bytes = (int64_t{1} << 30) + 1; },
       "--max_grpc_message_bytes must be at most 1 GiB"},
      {[](auto* v) { v->heartbeat_interval = absl::ZeroDuration(); },
       "--heartbeat_interval"},
      {[](auto* v) { v->drain_timeout = absl::ZeroDuration(); },
       "--drain_timeout"},
      {[](auto* v) { v->watchdog_timeout = -absl::Seconds(1); },
       "--watchdog_timeout"},
      {[](auto* v) { v->metrics_address = *Endpoint::Parse("unix:/m"); },
       "--metrics_address"},
      {[](auto* v) { v->tls_cert = "/c.pem"; }, "--tls_cert and --tls_key"},
      {[](auto* v) { v->tls_key = "/k.pem"; }, "--tls_cert and --tls_key"},
      {[](auto* v) { v->tls_client_ca = "/ca.pem"; }, "--tls_client_ca needs"},
      {[](auto* v) {
         v->listen_tls = {{"nope", {"/c", "/k"}}};
       },
       "--listen_tls: no listener named \"nope\" (--listen has: default)"},
      {[](auto* v) {
         v->listen_tls = {{"default", {"/c"}}};
       },
       "want NAME=CERT,KEY[,CLIENT_CA]"},
      {[](auto* v) {
         v->listen_tls = {{"default", {"/c", "/k", "/a", "/b"}}};
       },
       "want NAME=CERT,KEY[,CLIENT_CA]"},
      {[](auto* v) {
         v->listen_tls = {{"default", {"/c", "/k"}}, {"default", {"/c", "/k"}}};
       },
       "given twice"},
      {[](auto* v) {
         v->listen_tls_alpn = {{"default", {"h2"}}};
       },
       "--listen_tls_alpn: listener \"default\" has no --listen_tls"},
      {[](auto* v) { v->listen_proxy_protocol = {"lb"}; },
       "--listen_proxy_protocol: no listener named \"lb\""},
      {[](auto* v) { v->tls_handshake_timeout = absl::ZeroDuration(); },
       "--tls_handshake_timeout"},
      {[](auto* v) { v->proxy_header_timeout = -absl::Seconds(1); },
       "--proxy_header_timeout"},
      {[](auto* v) { v->group_idle_timeout = -absl::Seconds(1); },
       "--group_idle_timeout must be >= 0"},
      {[](auto* v) { v->max_groups = 0; }, "--max_groups must be positive"},
      {[](auto* v) { v->group_redelivery_bytes = -1; },
       "--group_redelivery_bytes must be >= 0"},
  };
  for (const Case& c : cases) {
    ServerFlagValues v;
    c.change(&v);
    auto flags = ServerFlagsFromValues(v);
    ASSERT_FALSE(flags.ok()) << c.says;
    EXPECT_TRUE(absl::IsInvalidArgument(flags.status())) << flags.status();
    EXPECT_TRUE(absl::StrContains(flags.status().message(), c.says))
        << c.says << ": " << flags.status();
  }
}

// ParseServerFlags sets process-wide flags; each test restores them.
class ParseServerFlagsTest : public ::testing::Test {
 protected:
  absl::StatusOr<ServerFlags> Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "fanin_server");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return ParseServerFlags(static_cast<int>(argv.size()), argv.data(),
                            [this](const char* name) -> const char* {
                              auto it = env_.find(name);
                              return it == env_.end() ? nullptr
                                                      : it->second.c_str();
                            });
  }

  absl::FlagSaver saver_;
  std::map<std::string, std::string> env_;
};

TEST_F(ParseServerFlagsTest, CommandLineFormsAndRepeats) {
  auto flags = Parse({"--listen=a=127.0.0.1:1", "--listen", "unix:/tmp/x,y",
                      "--pull=a", "-pull=default", "--poller", "poll",
                      "--keep_half_open", "--idle_timeout=2s",
                      "--metrics_address=localhost:0", "--log_level=WARN"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  const ServerConfig& c = flags->config;
  ASSERT_EQ(c.core.listen.size(), 2u);
  EXPECT_EQ(c.core.listen[0].name, "a");
  // A --listen is one spec: the comma stays in the path.
  EXPECT_EQ(c.core.listen[1].endpoint.ToString(), "unix:/tmp/x,y");
  EXPECT_EQ(c.core.pull_listeners, (std::vector<std::string>{"a", "default"}));
  EXPECT_EQ(c.core.poller, reactor::PollerKind::kPoll);
  EXPECT_TRUE(c.core.keep_half_open);
  EXPECT_EQ(c.core.idle_timeout, absl::Seconds(2));
  ASSERT_TRUE(c.metrics_address.has_value());
  EXPECT_EQ(c.metrics_address->ToString(), "localhost:0");
  EXPECT_EQ(flags->log_level, base::LogLevel::kWarning);

  auto groups = Parse(
      {"--group_idle_timeout=90s", "--group_rebalance", "--max_groups", "3"});
  ASSERT_TRUE(groups.ok()) << groups.status();
  EXPECT_EQ(groups->config.service.groups.idle_timeout, absl::Seconds(90));
  EXPECT_TRUE(groups->config.service.groups.rebalance_on_join);
  EXPECT_EQ(groups->config.service.groups.max_groups, 3u);

  auto off = Parse({"--keep_half_open", "--nokeep_half_open"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->config.core.keep_half_open);
}

TEST_F(ParseServerFlagsTest, EnvironmentFillsWhatTheCommandLineLeaves) {
  env_ = {{"FANIN_LISTEN", "a=127.0.0.1:1,b=[::1]:2"},
          {"FANIN_PULL", "b"},
          {"FANIN_GRPC_ADDRESS", "unix:/tmp/g.sock"},
          {"FANIN_LOOPS", "7"},
          {"FANIN_MAX_CONNECTIONS", "99"},
          {"FANIN_KEEP_HALF_OPEN", "true"},
          {"FANIN_LOG_FORMAT", "json"},
          {"FANIN_GROUP_IDLE_TIMEOUT", "0"},
          {"FANIN_GROUP_REBALANCE", "true"},
          {"FANIN_READY_FILE", ""}};  // empty: as if unset
  auto flags = Parse({"--loops=2"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  const ServerConfig& c = flags->config;
  ASSERT_EQ(c.core.listen.size(), 2u);
  EXPECT_EQ(c.core.listen[1].endpoint.ToString(), "[::1]:2");
  EXPECT_EQ(c.core.pull_listeners, std::vector<std::string>{"b"});
  EXPECT_EQ(c.grpc_address.ToString(), "unix:/tmp/g.sock");
  EXPECT_EQ(c.core.loops, 2);  // the command line wins
  EXPECT_EQ(c.core.max_connections, 99);
  EXPECT_TRUE(c.core.keep_half_open);
  EXPECT_EQ(flags->log_format, base::LogFormat::kJson);
  EXPECT_EQ(c.service.groups.idle_timeout, absl::ZeroDuration());
  EXPECT_TRUE(c.service.groups.rebalance_on_join);
  EXPECT_EQ(flags->ready_file, "");

  // A --listen replaces FANIN_LISTEN entirely.
  auto replaced = Parse({"--listen=c=127.0.0.1:3", "--pull=c"});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  ASSERT_EQ(replaced->config.core.listen.size(), 1u);
  EXPECT_EQ(replaced->config.core.listen[0].name, "c");
}

TEST_F(ParseServerFlagsTest, BadValuesNameTheFlagOrVariable) {
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    const char* says;
  } cases[] = {
      {{"--poller=kqueue"}, {}, "--poller=kqueue: unknown poller"},
      {{"--loops=many"}, {}, "--loops=many: want an integer"},
      {{"--idle_timeout=soon"}, {}, "--idle_timeout=soon: want a duration"},
      {{"--keep_half_open=maybe"}, {}, "--keep_half_open=maybe: want true"},
      {{"--log_level=loud"}, {}, "--log_level=loud: unknown log level"},
      {{"--log_format=xml"}, {}, "--log_format=xml: unknown log format"},
      {{"--tls_client_role=admin"}, {}, "--tls_client_role=admin: unknown"},
      {{"--grpc_address=127.0.0.1:65536"},
       {},
       "--grpc_address=127.0.0.1:65536"},
      {{"--metrics_address=:9464"}, {}, "--metrics_address=:9464: empty host"},
      {{"--metrics_address=unix:/m"}, {}, "--metrics_address: a unix socket"},
      {{"--listen=bad name=127.0.0.1:1"}, {}, "--listen=bad name="},
      {{"--listen=127.0.0.1:1", "--listen=[::1"}, {}, "--listen=[::1: "},
      {{"--max_connections=0"}, {}, "--max_connections must be positive"},
      {{"--tls_cert=/c.pem"}, {}, "--tls_cert and --tls_key go together"},
      {{"--no_such_flag=1"}, {}, "unknown flag --no_such_flag"},
      {{"stray"}, {}, "unexpected argument \"stray\""},
      {{"--poller"}, {}, "--poller needs a value"},
      {{}, {{"FANIN_LOOPS", "x"}}, "FANIN_LOOPS=x (--loops): want an integer"},
      {{}, {{"FANIN_LISTEN", "a=127.0.0.1:1,:2"}}, "FANIN_LISTEN="},
      {{}, {{"FANIN_POLLER", "kqueue"}}, "FANIN_POLLER=kqueue (--poller)"},
      {{"--group_idle_timeout=later"},
       {},
       "--group_idle_timeout=later: want a duration"},
      {{}, {{"FANIN_MAX_GROUPS", "-2"}}, "--max_groups must be positive"},
  };
  for (const Case& c : cases) {
    absl::FlagSaver restore;
    env_ = c.env;
    auto flags = Parse(c.args);
    ASSERT_FALSE(flags.ok()) << c.says;
    EXPECT_TRUE(absl::IsInvalidArgument(flags.status())) << flags.status();
    EXPECT_TRUE(absl::StrContains(flags.status().message(), c.says))
        << c.says << ": " << flags.status();
  }
}

// --listen_tls repeats on the command line (its value holds commas); its
// variable separates items with ';'. Files that do not load are a usage
// error naming the flag.
TEST_F(ParseServerFlagsTest, ListenTlsFromTheCommandLineAndTheEnvironment) {
  const std::string dir = ::testing::TempDir();
  const std::string cert = dir + "/flags_cert.pem";
  const std::string key = dir + "/flags_key.pem";
  const std::string other_key = dir + "/flags_other_key.pem";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt "
                         "ec_paramgen_curve:P-256 -nodes -keyout " +
                         key + " -out " + cert +
                         " -days 1 -subj /CN=flags 2>/dev/null && "
                         "openssl genpkey -algorithm EC -pkeyopt "
                         "ec_paramgen_curve:P-256 -out " +
                         other_key + " 2>/dev/null")
                            .c_str()),
            0);
  {
    absl::FlagSaver saver;  // each Parse below starts from the defaults
    auto flags = Parse(
        {"--listen=a=127.0.0.1:0", "--listen=b=127.0.0.1:0",
         "--listen_tls=a=" + cert + "," + key, "--listen_tls",
         "b=" + cert + "," + key + "," + cert, "--listen_tls_alpn=a=h2,fanin",
         "--listen_proxy_protocol=b", "--tls_handshake_timeout=2s"});
    ASSERT_TRUE(flags.ok()) << flags.status();
    ASSERT_EQ(flags->config.core.tls.size(), 2u);
    EXPECT_EQ(flags->config.core.tls[1].files.client_ca_file, cert);
    EXPECT_EQ(flags->config.core.tls[0].files.alpn,
              (std::vector<std::string>{"h2", "fanin"}));
    EXPECT_EQ(flags->config.core.proxy_protocol_listeners,
              (std::vector<std::string>{"b"}));
    EXPECT_EQ(flags->config.core.tls_handshake_timeout, absl::Seconds(2));
  }
  {
    absl::FlagSaver saver;
    env_["FANIN_LISTEN"] = "a=127.0.0.1:0,b=127.0.0.1:0";
    env_["FANIN_LISTEN_TLS"] =
        "a=" + cert + "," + key + ";b=" + cert + "," + key;
    env_["FANIN_LISTEN_PROXY_PROTOCOL"] = "a,b";
    auto from_env = Parse({});
    ASSERT_TRUE(from_env.ok()) << from_env.status();
    ASSERT_EQ(from_env->config.core.tls.size(), 2u);
    EXPECT_EQ(from_env->config.core.tls[1].listener, "b");
    EXPECT_EQ(from_env->config.core.proxy_protocol_listeners,
              (std::vector<std::string>{"a", "b"}));
    env_.clear();
  }

  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{"--listen_tls=default=/nonexistent.pem," + key},
            "--listen_tls=default=/nonexistent.pem"},
           {{"--listen_tls=default=" + cert + "," + other_key},
            "does not match certificate"},
           {{"--listen_tls=default=" + cert + "," + key + ",/no-ca.pem"},
            "client CA /no-ca.pem"},
           {{"--listen_tls=other=" + cert + "," + key},
            "no listener named \"other\""},
           {{"--listen_tls=default"}, "want NAME=ITEM"},
       }) {
    absl::FlagSaver saver;
    auto bad = Parse(c.args);
    ASSERT_FALSE(bad.ok()) << c.says;
    EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
    EXPECT_TRUE(absl::StrContains(bad.status().message(), c.says))
        << c.says << ": " << bad.status();
  }
}

}  // namespace
}  // namespace fanin
