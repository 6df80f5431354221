// The `fanin` binary end to end: a real fanin_server on loopback, raw TCP
// clients, and the CLI run as a child process, as an operator or a script
// would run it. JSON output is parsed back by python3's json module.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/client/json_lines.h"
#include "tests/testing/server_process.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFanin[] = "client/fanin";

absl::Time Deadline(absl::Duration d = absl::Seconds(20)) {
  return absl::Now() + d;
}

// "127.0.0.1:PORT" of the local end of a socket.
std::string LocalAddress(const TcpClient& client) {
  sockaddr_in addr = {};
  socklen_t len = sizeof(addr);
  getsockname(client.fd(), reinterpret_cast<sockaddr*>(&addr), &len);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(rng() & 0xff);
  // Make sure every byte value, NUL and ESC included, is there.
  for (size_t i = 0; i < 256 && i < n; ++i) s[i] = static_cast<char>(i);
  return s;
}

// A port on which nothing listens: bound once, then closed.
int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Complete lines of text (a trailing partial line is left out).
std::string CompleteLines(absl::string_view text) {
  size_t end = text.rfind('\n');
  return end == absl::string_view::npos ? ""
                                        : std::string(text.substr(0, end + 1));
}

class CliE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartServer({"--listen=default=127.0.0.1:0", "--listen=other=127.0.0.1:0"});
  }

  void StartServer(std::vector<std::string> flags) {
    flags.push_back("--grpc_address=127.0.0.1:0");
    flags.push_back("--loops=1");
    flags.push_back("--heartbeat_interval=300ms");
    auto server = ServerProcess::Start({.flags = flags});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    MakeStub();
  }

  void MakeStub() {
    stub_ = v1::FanIn::NewStub(grpc::CreateChannel(
        server_->grpc_address(), grpc::InsecureChannelCredentials()));
  }

  std::vector<std::string> Argv(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {kFanin};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(absl::StrCat("--server=", server_->grpc_address()));
    return argv;
  }

  // Runs `fanin ARGS --server=<this server>`.
  CommandResult Fanin(const std::vector<std::string>& args,
                      absl::string_view stdin_bytes = "") {
    auto result = RunCommand(Argv(args), stdin_bytes);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : CommandResult();
  }

  std::unique_ptr<Subprocess> StartFanin(const std::vector<std::string>& args) {
    auto process = Subprocess::Start(Argv(args));
    EXPECT_TRUE(process.ok()) << process.status();
    return process.ok() ? *std::move(process) : nullptr;
  }

  v1::GetStatsResponse Stats() {
    grpc::ClientContext context;
    v1::GetStatsResponse stats;
    grpc::Status status =
        stub_->GetStats(&context, v1::GetStatsRequest(), &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats;
  }

  TcpClient Connect(const std::string& listener = "default") {
    auto address = server_->listen_address(listener);
    EXPECT_TRUE(address.ok()) << address.status();
    auto client = ConnectTcp(*address);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : TcpClient();
  }

  // The server's id for a raw client, found by its address in the table.
  uint64_t ConnectionIdOf(const TcpClient& client) {
    std::string local = LocalAddress(client);
    uint64_t id = 0;
    WaitFor(
        [&] {
          grpc::ClientContext context;
          v1::ListConnectionsRequest request;
          v1::ListConnectionsResponse response;
          if (!stub_->ListConnections(&context, request, &response).ok()) {
            return false;
          }
          for (const auto& c : response.connections()) {
            if (c.remote_address() == local) id = c.connection_id();
          }
          return id != 0;
        },
        Deadline());
    EXPECT_NE(id, 0u) << "no connection from " << local;
    return id;
  }

  // Waits until the server has published at least n events.
  void WaitForHead(uint64_t n) {
    EXPECT_TRUE(WaitFor([&] { return Stats().head_seq() >= n; }, Deadline()))
        << "head_seq stayed at " << Stats().head_seq() << ", want " << n;
  }

  // Parses the complete JSON lines a running watch has printed so far.
  static std::vector<JsonMap> JsonSoFar(const Subprocess& p) {
    auto parsed = ParseJsonLines(CompleteLines(p.stdout_data()));
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *parsed : std::vector<JsonMap>();
  }

  static bool HasObject(const std::vector<JsonMap>& objects,
                        absl::string_view type, absl::string_view kind = "") {
    for (const auto& o : objects) {
      if (JsonType(o) == type && (kind.empty() || JsonKind(o) == kind)) {
        return true;
      }
    }
    return false;
  }

  // The field that tells a message of this JsonType() apart.
  static absl::string_view TypeKey(absl::string_view type) {
    if (type == "started") return "server_epoch\"";
    if (type == "gap") return "first_seq\"";
    if (type == "heartbeat") return "delivered\"";
    if (type == "assigned") return "from_seq\"";
    return "seq\"";
  }

  // Waits until the watch has printed an object of this type (and kind).
  bool WaitForJson(Subprocess& p, absl::string_view type,
                   absl::string_view kind = "") {
    return p.WaitForOutput(
        [&](absl::string_view out, absl::string_view) {
          // Cheap text test first (a field only that message has); parse
          // only when it could match.
          if (!absl::StrContains(out, absl::StrCat("\"", TypeKey(type)))) {
            return false;
          }
          auto parsed = ParseJsonLines(CompleteLines(out));
          return parsed.ok() && HasObject(*parsed, type, kind);
        },
        Deadline());
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::FanIn::Stub> stub_;
};

// ---- health, help, usage and unreachable servers ----

TEST_F(CliE2eTest, HealthIsZeroWhenServing) {
  CommandResult r = Fanin({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "SERVING\n");
  // The address may also come from FANIN_SERVER.
  RunOptions options;
  options.process.env = {{"FANIN_SERVER", server_->grpc_address()}};
  auto env = RunCommand({kFanin, "health", "-q"}, "", options);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->exit_code, 0) << env->stderr_data;
  EXPECT_EQ(env->stdout_data, "");
}

TEST_F(CliE2eTest, UnreachableServerExitsThreeAndSaysWhatToTry) {
  std::string address = absl::StrCat("127.0.0.1:", UnusedPort());
  for (std::vector<std::string> args : {std::vector<std::string>{"health"},
                                        {"stats"},
                                        {"list"},
                                        {"write", "1", "x"},
                                        {"close", "1"},
                                        {"nodes"},
                                        {"watch", "--count=1"}}) {
    // Common flags before the command work too.
    std::vector<std::string> argv = {kFanin,
                                     absl::StrCat("--server=", address)};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 3) << args[0] << ": " << r->stderr_data;
    EXPECT_THAT(r->stderr_data, HasSubstr(absl::StrCat("cannot reach ", address,
                                                       ": connection refused")))
        << args[0];
    EXPECT_THAT(r->stderr_data, HasSubstr("is fanin_server running?"));
    EXPECT_EQ(r->stdout_data, "") << args[0];
  }
}

TEST_F(CliE2eTest, BadUsageExitsTwoWithAPointerToHelp) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"watch", "--bogus"},
           {"watch", "-o", "yaml"},
           {"watch", "--kind", "dat"},
           {"watch", "--connection", "x"},
           {"watch", "--count", "-1"},
           {"watch", "--timeout", "soon"},
           {"watch", "-o", "raw", "--omit-payload"},
           {"watch", "--last", "3", "--resume-after", "2"},
           {"watch", "--since", "1m", "--resume-epoch", "e"},
           {"watch", "--last", "3", "--since", "1m"},
           {"watch", "--last", "0"},
           {"watch", "--since", "0s"},
           {"watch", "--since", "yesterday"},
           {"nodes", "extra"},
           {"list", "--server", "127.0.0.1:1,,127.0.0.1:2"},
           {"write"},
           {"write", "0", "x"},
           {"write", "abc", "x"},
           {"write", "1", "a", "b"},
           {"close"},
           {"close", "1", "2"},
           {"list", "extra"},
           {"stats", "--page-size=1"},
           {"health", "--tls_cert=c.pem"},
       }) {
    std::vector<std::string> argv = {kFanin};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv);
    ASSERT_TRUE(r.ok()) << r.status();
    std::string shown = absl::StrJoin(args, " ");
    EXPECT_EQ(r->exit_code, 2) << shown << ": " << r->stderr_data;
    EXPECT_THAT(r->stderr_data, HasSubstr("fanin: ")) << shown;
    EXPECT_THAT(r->stderr_data, HasSubstr("--help")) << shown;
  }
}

TEST_F(CliE2eTest, EveryCommandHasHelpWithExamples) {
  auto top = RunCommand({kFanin, "--help"});
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->exit_code, 0);
  EXPECT_THAT(top->stdout_data, HasSubstr("Exit codes:"));
  for (const char* command :
       {"watch", "write", "close", "list", "stats", "nodes", "health"}) {
    EXPECT_THAT(top->stdout_data, HasSubstr(absl::StrCat("  ", command, " ")));
    for (auto argv : {std::vector<std::string>{kFanin, command, "--help"},
                      std::vector<std::string>{kFanin, "help", command},
                      std::vector<std::string>{kFanin, command, "-h"}}) {
      auto r = RunCommand(argv);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->exit_code, 0) << command;
      EXPECT_THAT(r->stdout_data,
                  HasSubstr(absl::StrCat("Usage: fanin ", command)));
      EXPECT_THAT(r->stdout_data, HasSubstr("Examples:\n  fanin "));
      EXPECT_THAT(r->stdout_data, HasSubstr("--server"));
    }
  }
  auto version = RunCommand({kFanin, "--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(version->exit_code, 0);
  EXPECT_THAT(version->stdout_data, HasSubstr("fanin 0."));
}

TEST_F(CliE2eTest, UnreadableTokenFileIsALocalFailure) {
  CommandResult r = Fanin({"stats", "--token_file=/nonexistent/token"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.stderr_data,
              HasSubstr("cannot read --token_file file /nonexistent/token"));
}

TEST_F(CliE2eTest, TokenFileIsAccepted) {
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/token");
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("secret-token\n", f);
  fclose(f);
  // The server does not check tokens yet; the call must still go through
  // with the authorization header attached.
  CommandResult r = Fanin({"health", absl::StrCat("--token_file=", path)});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
}

// ---- write and close ----

TEST_F(CliE2eTest, WriteFromStdinArrivesByteExact) {
  TcpClient raw = Connect();
  uint64_t id = ConnectionIdOf(raw);
  std::string data = RandomBytes(100 * 1024, 1);
  CommandResult r = Fanin({"write", absl::StrCat(id)}, data);
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data,
              HasSubstr(absl::StrCat("wrote 102400 bytes to connection ", id)));
  auto got = raw.RecvExactly(data.size(), Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == data) << "payload differs";

  // "-" also means stdin; DATA as an argument; JSON output.
  r = Fanin({"write", absl::StrCat(id), "-"}, std::string("a\0b", 3));
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  r = Fanin({"write", absl::StrCat(id), "tail", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  // The server's WriteResponse: nothing waits, the bytes went straight out.
  EXPECT_EQ(JsonStr((*parsed)[0], "queued_bytes"), "0");
  EXPECT_EQ((*parsed)[0].size(), 1u);
  auto rest = raw.RecvExactly(7, Deadline());
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(*rest, std::string("a\0btail", 7));
}

TEST_F(CliE2eTest, WriteCloseAfterFlushesThenCloses) {
  TcpClient raw = Connect();
  uint64_t id = ConnectionIdOf(raw);
  CommandResult r =
      Fanin({"write", absl::StrCat(id), "bye\n", "--close-after"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto all = raw.RecvUntilEof(Deadline());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, "bye\n");
}

// 9 MiB is more than the server takes in one gRPC message (4 MiB by
// default) and than its per-connection outbound buffer (4 MiB): the CLI must
// send it as several Writes, in order, riding out the full buffer while the
// client drains it, and close only after the last byte.
TEST_F(CliE2eTest, WriteLargerThanTheMessageLimitArrivesInOrderThenCloses) {
  TcpClient raw = Connect();
  uint64_t id = ConnectionIdOf(raw);
  std::string data = RandomBytes(9 << 20, 3);
  absl::StatusOr<std::string> got;
  std::thread reader(
      [&] { got = raw.RecvUntilEof(Deadline(absl::Seconds(60))); });
  CommandResult r = Fanin({"write", absl::StrCat(id), "--close-after"}, data);
  reader.join();
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data, HasSubstr(absl::StrCat(
                                 "wrote 9437184 bytes to connection ", id)));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), data.size());
  EXPECT_TRUE(*got == data) << "payload differs or is out of order";
}

TEST_F(CliE2eTest, UnknownConnectionExitsFour) {
  for (auto args : {std::vector<std::string>{"write", "999999", "x"},
                    std::vector<std::string>{"close", "999999"},
                    std::vector<std::string>{"close", "999999", "--abort"}}) {
    CommandResult r = Fanin(args);
    EXPECT_EQ(r.exit_code, 4) << args[0] << ": " << r.stderr_data;
    EXPECT_THAT(r.stderr_data, HasSubstr("connection 999999 not found"));
    EXPECT_EQ(r.stdout_data, "");
  }
}

TEST_F(CliE2eTest, CloseGracefullyOrWithAbort) {
  TcpClient graceful = Connect();
  TcpClient aborted = Connect();
  uint64_t graceful_id = ConnectionIdOf(graceful);
  uint64_t aborted_id = ConnectionIdOf(aborted);

  CommandResult r = Fanin({"close", absl::StrCat(graceful_id)});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data,
            absl::StrCat("closing connection ", graceful_id, "\n"));
  auto eof = graceful.Recv(16, Deadline());
  ASSERT_TRUE(eof.ok()) << eof.status();
  EXPECT_EQ(*eof, "") << "want a clean EOF";

  r = Fanin({"close", absl::StrCat(aborted_id), "--abort"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  auto reset = aborted.Recv(16, Deadline());
  EXPECT_FALSE(reset.ok()) << "want ECONNRESET, got " << reset.value_or("?");
  EXPECT_FALSE(absl::IsDeadlineExceeded(reset.status()));

  // Closing again: the connection is gone.
  r = Fanin({"close", absl::StrCat(graceful_id)});
  EXPECT_EQ(r.exit_code, 4) << r.stderr_data;
}

// ---- list and stats ----

TEST_F(CliE2eTest, ListShowsEveryConnectionAcrossPages) {
  std::vector<TcpClient> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(Connect());
  clients.push_back(Connect("other"));
  std::vector<uint64_t> ids;
  for (auto& c : clients) ids.push_back(ConnectionIdOf(c));
  ASSERT_TRUE(clients[0].SendAll("12345").ok());
  WaitFor([&] { return Stats().bytes_received() >= 5; }, Deadline());

  // Text: a header and one row per connection, even one per page.
  CommandResult r = Fanin({"list", "--page-size=1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr("ID"));
  for (const char* column :
       {"LISTENER", "REMOTE", "AGE", "IN", "OUT", "QUEUED"}) {
    EXPECT_THAT(lines[0], HasSubstr(column));
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    EXPECT_THAT(r.stdout_data, HasSubstr(LocalAddress(clients[i])));
  }
  std::vector<std::string> first_row =
      absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  ASSERT_EQ(first_row.size(), 7u) << lines[1];
  EXPECT_EQ(first_row[0], absl::StrCat(ids[0]));
  EXPECT_EQ(first_row[1], "default");
  EXPECT_EQ(first_row[2], LocalAddress(clients[0]));
  EXPECT_EQ(first_row[4], "5");  // bytes in

  // JSON, field by field, filtered by listener.
  r = Fanin({"list", "-o", "json", "--page-size", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 4u);
  for (size_t i = 0; i < clients.size(); ++i) {
    const JsonMap& o = (*parsed)[i];
    EXPECT_EQ(JsonUint(o, "connection_id"), ids[i]);
    EXPECT_EQ(JsonStr(o, "listener"), i < 3 ? "default" : "other");
    EXPECT_EQ(JsonStr(o, "remote_address"), LocalAddress(clients[i]));
    EXPECT_EQ(JsonStr(o, "local_address"),
              *server_->listen_address(i < 3 ? "default" : "other"));
    EXPECT_EQ(JsonUint(o, "bytes_received"), i == 0 ? 5u : 0u);
    EXPECT_EQ(JsonStr(o, "bytes_sent"), "0");
    EXPECT_EQ(JsonStr(o, "queued_bytes"), "0");
    EXPECT_GT(JsonUint(o, "opened_unix_nano"), 0u);
    EXPECT_EQ(JsonStr(o, "node"), "") << "standalone";
    EXPECT_EQ(o.size(), static_cast<size_t>(
                            fanin::v1::Connection::descriptor()->field_count()))
        << "the fields of fanin.v1.Connection";
  }
  r = Fanin({"list", "-o", "json", "--listener", "other"});
  parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ(JsonUint((*parsed)[0], "connection_id"), ids[3]);
}

TEST_F(CliE2eTest, StatsTextAndJson) {
  TcpClient a = Connect();
  TcpClient b = Connect();
  ConnectionIdOf(a);
  ConnectionIdOf(b);
  CommandResult r = Fanin({"stats"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data, HasSubstr("poller                    epoll\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("connections open          2\n"));
  EXPECT_THAT(r.stdout_data, HasSubstr("connections accepted      2\n"));

  // --timeout may also come before the command.
  r = Fanin({"--timeout=5s", "stats", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  const JsonMap& o = (*parsed)[0];
  v1::GetStatsResponse direct = Stats();
  EXPECT_EQ(JsonStr(o, "poller"), "epoll");
  EXPECT_EQ(JsonUint(o, "connections_open"), 2u);
  EXPECT_EQ(JsonUint(o, "connections_accepted"), 2u);
  EXPECT_EQ(JsonUint(o, "connections_rejected"), 0u);
  EXPECT_EQ(JsonUint(o, "head_seq"), direct.head_seq());
  EXPECT_EQ(JsonUint(o, "events_published"), direct.events_published());
  EXPECT_EQ(JsonUint(o, "oldest_seq"), direct.oldest_seq());
  // proto3 JSON: uint64 as a decimal string, uint32 as a number.
  for (const char* key : {"events_lost", "bytes_received", "bytes_sent"}) {
    ASSERT_TRUE(o.count(key)) << key;
    EXPECT_EQ(o.at(key).type, JsonValue::kString) << key;
  }
  EXPECT_EQ(o.at("subscribers").type, JsonValue::kInt);
}

// ---- watch ----

// One connection's life: opened, data, read_closed, closed.
struct Life {
  uint64_t id = 0;
  std::string client_address;
  std::string payload;
};

class CliWatchTest : public CliE2eTest {
 protected:
  // Runs a connection through its life and waits for all its events to be
  // published; returns head_seq from before it began.
  uint64_t LiveOneConnection(Life* life, absl::string_view payload) {
    if (Stats().head_seq() == 0) {
      // --resume-after 0 means "live", so the history must not be empty:
      // a first connection comes and goes.
      Connect().Close();
      EXPECT_TRUE(WaitFor(
          [&] {
            v1::GetStatsResponse s = Stats();
            return s.connections_accepted() == 1 && s.connections_open() == 0;
          },
          Deadline()));
    }
    uint64_t before = Stats().head_seq();
    TcpClient raw = Connect();
    life->id = ConnectionIdOf(raw);
    life->client_address = LocalAddress(raw);
    life->payload = std::string(payload);
    EXPECT_TRUE(raw.SendAll(payload).ok());
    WaitFor([&] { return Stats().bytes_received() >= payload.size(); },
            Deadline());
    EXPECT_TRUE(raw.ShutdownWrite().ok());
    EXPECT_TRUE(raw.WaitForPeerClose(Deadline()));
    WaitFor([&] { return Stats().connections_open() == 0; }, Deadline());
    return before;
  }
};

TEST_F(CliWatchTest, JsonCarriesEveryFieldOfEveryKind) {
  Life life;
  std::string payload("hello\x1b[31m\n\0\xff", 13);
  uint64_t before = LiveOneConnection(&life, payload);
  uint64_t head = Stats().head_seq();
  ASSERT_GE(head, before + 4);

  // Replays the history after `before`, stops after exactly that many.
  CommandResult r =
      Fanin({"watch", "-o", "json", "--resume-after", absl::StrCat(before),
             "--count", absl::StrCat(head - before)});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << r.stdout_data;

  std::vector<JsonMap> events;
  std::string epoch;
  for (const JsonMap& o : *parsed) {
    if (JsonType(o) == "started") {
      epoch = JsonStr(o, "server_epoch");
      EXPECT_EQ(JsonUint(o, "head_seq"), head);
      EXPECT_GE(JsonUint(o, "oldest_seq"), 1u);
    } else if (JsonType(o) == "event") {
      events.push_back(o);
    }
  }
  EXPECT_FALSE(epoch.empty()) << "no started object";
  ASSERT_EQ(events.size(), head - before);
  std::string data;
  uint64_t seq = before;
  std::vector<std::string> kinds;
  for (const JsonMap& e : events) {
    EXPECT_EQ(JsonUint(e, "seq"), ++seq);
    EXPECT_EQ(JsonUint(e, "connection_id"), life.id);
    EXPECT_EQ(JsonStr(e, "listener"), "default");
    EXPECT_GT(JsonUint(e, "time_unix_nano"), 1700000000000000000u);
    std::string kind = JsonKind(e);
    if (kinds.empty() || kinds.back() != kind) kinds.push_back(kind);
    if (kind == "opened") {
      EXPECT_EQ(JsonStr(e, "opened.remote_address"), life.client_address);
      EXPECT_EQ(JsonStr(e, "opened.local_address"), *server_->listen_address());
    } else if (kind == "data") {
      auto bytes = Base64Decode(JsonStr(e, "data.payload"));
      ASSERT_TRUE(bytes.ok());
      EXPECT_EQ(JsonUint(e, "data.size"), bytes->size());
      data += *bytes;
    } else if (kind == "closed") {
      EXPECT_EQ(JsonStr(e, "closed.reason"), "CLOSE_REASON_PEER_CLOSED");
      EXPECT_EQ(JsonUint(e, "closed.bytes_received"), payload.size());
      EXPECT_EQ(JsonStr(e, "closed.bytes_sent"), "0");
      EXPECT_TRUE(e.count("closed.detail"));
    }
  }
  EXPECT_EQ(data, payload);
  EXPECT_EQ(kinds, (std::vector<std::string>{"opened", "data", "read_closed",
                                             "closed"}));
}

TEST_F(CliWatchTest, TextIsOneAlignedEscapedLinePerEvent) {
  Life life;
  std::string payload("hello\x1b[31m\n\0\xff", 13);
  uint64_t before = LiveOneConnection(&life, payload);
  uint64_t head = Stats().head_seq();
  CommandResult r = Fanin({"watch", "--resume-after", absl::StrCat(before),
                           "-n", absl::StrCat(head - before)});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  for (char c : r.stdout_data) {
    ASSERT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f))
        << "raw control byte " << static_cast<int>(c) << " in text output";
  }
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), head - before) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr(absl::StrCat("seq=", before + 1)));
  EXPECT_THAT(lines[0], HasSubstr(absl::StrCat("conn=", life.id)));
  EXPECT_THAT(lines[0], HasSubstr("default"));
  EXPECT_THAT(lines[0], HasSubstr("OPENED"));
  EXPECT_THAT(lines[0], HasSubstr(life.client_address));
  EXPECT_THAT(r.stdout_data,
              HasSubstr("DATA        13 B \"hello\\x1b[31m\\n\\x00\\xff\""));
  EXPECT_THAT(r.stdout_data, HasSubstr("READ_CLOSED"));
  EXPECT_THAT(lines.back(), HasSubstr("CLOSED      peer_closed in=13 out=0"));
  // Aligned: the kind column starts at the same offset on every line.
  size_t column = lines[0].find("OPENED");
  EXPECT_EQ(lines.back().find("CLOSED"), column);
}

TEST_F(CliWatchTest, RawWritesOnlyPayloadBytes) {
  Life life;
  std::string payload = RandomBytes(200 * 1024, 2);
  uint64_t before = LiveOneConnection(&life, payload);
  uint64_t head = Stats().head_seq();
  // Every event of the connection is counted; only data reaches stdout.
  CommandResult r =
      Fanin({"watch", "-o", "raw", "--resume-after", absl::StrCat(before),
             "--connection", absl::StrCat(life.id), "--count",
             absl::StrCat(head - before)});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  ASSERT_EQ(r.stdout_data.size(), payload.size());
  EXPECT_TRUE(r.stdout_data == payload) << "raw output differs";
}

TEST_F(CliWatchTest, FiltersAndPayloadOptionsReachTheServer) {
  Life first, second;
  uint64_t before = LiveOneConnection(&first, "abcdefgh");
  LiveOneConnection(&second, "xyz");
  // --kind: only closed events, one per connection.
  CommandResult r =
      Fanin({"watch", "-o", "json", "--resume-after", absl::StrCat(before),
             "--kind", "closed", "-n", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<uint64_t> closed_ids;
  for (const auto& o : *parsed) {
    if (JsonType(o) != "event") continue;
    EXPECT_EQ(JsonKind(o), "closed");
    closed_ids.push_back(JsonUint(o, "connection_id"));
  }
  EXPECT_EQ(closed_ids, (std::vector<uint64_t>{first.id, second.id}));

  // --connection with --omit-payload: size only.
  r = Fanin({"watch", "-o", "json", "--resume-after", absl::StrCat(before),
             "--connection", absl::StrCat(second.id), "--kind", "data",
             "--omit-payload", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(HasObject(*parsed, "event", "data"));
  for (const auto& o : *parsed) {
    if (JsonType(o) != "event") continue;
    EXPECT_EQ(JsonUint(o, "connection_id"), second.id);
    EXPECT_EQ(JsonUint(o, "data.size"), 3u);
    EXPECT_EQ(JsonStr(o, "data.payload"), "");
  }

  // --max-payload cuts on the server.
  r = Fanin({"watch", "-o", "json", "--resume-after", absl::StrCat(before),
             "--connection", absl::StrCat(first.id), "--kind", "data",
             "--max-payload", "3", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (const auto& o : *parsed) {
    if (JsonType(o) != "event") continue;
    EXPECT_EQ(*Base64Decode(JsonStr(o, "data.payload")), "abc");
    EXPECT_EQ(JsonUint(o, "data.size"), 8u);
  }

  // --listener: nothing happened on "other".
  r = Fanin({"watch", "-o", "json", "--resume-after", absl::StrCat(before),
             "--listener", "other", "--timeout", "3s"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(HasObject(*parsed, "event"));
  EXPECT_TRUE(HasObject(*parsed, "started"));
}

TEST_F(CliWatchTest, LiveEventsHeartbeatsAndCtrlC) {
  auto watch = StartFanin({"watch", "-o", "json", "--lossless"});
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(WaitForJson(*watch, "started")) << watch->stderr_data();
  ASSERT_TRUE(WaitForJson(*watch, "heartbeat")) << watch->stdout_data();
  TcpClient raw = Connect();
  ASSERT_TRUE(raw.SendAll("live").ok());
  ASSERT_TRUE(WaitForJson(*watch, "event", "data")) << watch->stdout_data();
  ASSERT_TRUE(watch->Signal(SIGINT).ok());
  auto result = watch->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 130) << result->stderr_data;
  // Everything printed is complete, parseable lines.
  EXPECT_TRUE(absl::EndsWith(result->stdout_data, "\n"));
  auto parsed = ParseJsonLines(result->stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(HasObject(*parsed, "event", "opened"));
}

TEST_F(CliWatchTest, TextModeShowsHeartbeatsOnStderrAndTimeoutExitsZero) {
  // Long enough for a slow (sanitized, loaded) start plus a few 300 ms
  // heartbeats.
  CommandResult r = Fanin({"watch", "--timeout", "3s"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "");
  EXPECT_THAT(r.stderr_data, HasSubstr("fanin: heartbeat: head seq"));
  r = Fanin({"watch", "--timeout", "700ms", "-q"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_EQ(r.stderr_data, "");
}

// A connection open before the group existed: its member hears of it with an
// Assigned (its own JSON object, or a line on stderr), then gets its events;
// `fanin groups` shows the member holding it.
TEST_F(CliWatchTest, GroupMemberShowsAssignedAndGroupsListsIt) {
  TcpClient raw = Connect();
  const uint64_t id = ConnectionIdOf(raw);
  auto json = StartFanin({"watch", "--group", "pool", "-o", "json"});
  ASSERT_NE(json, nullptr);
  ASSERT_TRUE(WaitForJson(*json, "started")) << json->stderr_data();
  ASSERT_TRUE(raw.SendAll("first").ok());
  ASSERT_TRUE(WaitForJson(*json, "event", "data")) << json->stdout_data();
  std::vector<JsonMap> objects = JsonSoFar(*json);
  ASSERT_GE(objects.size(), 3u);
  EXPECT_EQ(JsonType(objects[1]), "assigned");
  EXPECT_EQ(JsonUint(objects[1], "connection_id"), id);
  EXPECT_EQ(JsonStr(objects[1], "reason"), "ASSIGN_REASON_EXISTING");
  EXPECT_EQ(JsonStr(objects[1], "group"), "pool");
  EXPECT_EQ(JsonUint(objects[1], "from_seq"), JsonUint(objects[2], "seq"));
  EXPECT_EQ(JsonKind(objects[2]), "data");

  CommandResult groups = Fanin({"groups"});
  EXPECT_EQ(groups.exit_code, 0) << groups.stderr_data;
  EXPECT_THAT(groups.stdout_data,
              HasSubstr("pool  lossy  1 member  1 connections (0 unassigned)"));
  EXPECT_THAT(groups.stdout_data, HasSubstr("1 connections  0 queued"));
  groups = Fanin({"groups", "pool", "-o", "json"});
  EXPECT_EQ(groups.exit_code, 0) << groups.stderr_data;
  auto parsed = ParseJsonLines(groups.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ(JsonStr((*parsed)[0], "name"), "pool");
  EXPECT_EQ(Fanin({"groups", "nope"}).exit_code, 4);
  EXPECT_THAT(Fanin({"stats"}).stdout_data,
              HasSubstr("group members             1"));

  // Text mode: a second member, joining with --rebalance, takes one of two
  // connections; the notices go to stderr.
  TcpClient other = Connect();
  ASSERT_TRUE(other.SendAll("other").ok());
  ASSERT_TRUE(json->WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        return absl::StrContains(out, "b3RoZXI=");  // "other"
      },
      Deadline()));
  auto text = StartFanin({"watch", "--group", "pool", "--rebalance"});
  ASSERT_NE(text, nullptr);
  ASSERT_TRUE(text->WaitForOutput(
      [&](absl::string_view, absl::string_view err) {
        return absl::StrContains(err, "assigned conn=");
      },
      Deadline()))
      << text->stderr_data();
  EXPECT_THAT(text->stderr_data(), HasSubstr("rebalanced from member"));
  ASSERT_TRUE(raw.SendAll("second").ok());
  ASSERT_TRUE(other.SendAll("second").ok());
  ASSERT_TRUE(text->WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        return absl::StrContains(out, "\"second\"");
      },
      Deadline()))
      << text->stdout_data();
  // The member that lost it was told, in its own JSON object.
  EXPECT_TRUE(json->WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        return absl::StrContains(out, "\"revoked\":true");
      },
      Deadline()))
      << json->stdout_data();
  EXPECT_EQ(Fanin({"watch", "--rebalance"}).exit_code, 2);
}

TEST_F(CliWatchTest, ResumeBeyondHeadIsRejected) {
  CommandResult r =
      Fanin({"watch", "--resume-after", "1000000", "--timeout", "5s"});
  EXPECT_EQ(r.exit_code, 5) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("rejected"));
}

// --last N: exactly the last N events, then live.
TEST_F(CliWatchTest, LastStartsNEventsBackThenGoesLive) {
  Life a, b, c;
  LiveOneConnection(&a, "one");
  LiveOneConnection(&b, "two");
  LiveOneConnection(&c, "three");
  const uint64_t head = Stats().head_seq();
  ASSERT_GE(head, 12u);

  CommandResult r = Fanin({"watch", "-o", "json", "--last", "5", "-n", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<uint64_t> seqs;
  for (const JsonMap& o : *parsed) {
    if (JsonType(o) == "event") seqs.push_back(JsonUint(o, "seq"));
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{head - 4, head - 3, head - 2, head - 1,
                                         head}));

  // Text, with a filter: the last two data events.
  r = Fanin({"watch", "--last", "2", "--kind", "data", "-n", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr("\"two\""));
  EXPECT_THAT(lines[1], HasSubstr("\"three\""));

  // Then live: the newest retained event, then a new connection's.
  auto watch = StartFanin({"watch", "-o", "json", "--last", "1"});
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(WaitForJson(*watch, "event", "closed")) << watch->stdout_data();
  TcpClient raw = Connect();
  ASSERT_TRUE(raw.SendAll("live").ok());
  ASSERT_TRUE(WaitForJson(*watch, "event", "data")) << watch->stdout_data();
  ASSERT_TRUE(watch->Signal(SIGINT).ok());
  auto result = watch->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  parsed = ParseJsonLines(result->stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  seqs.clear();
  for (const JsonMap& o : *parsed) {
    if (JsonType(o) == "event") seqs.push_back(JsonUint(o, "seq"));
  }
  ASSERT_GE(seqs.size(), 3u);
  EXPECT_EQ(seqs[0], head);
  EXPECT_EQ(seqs[1], head + 1) << "the live events follow, none skipped";
}

// --since D: the events of the last D (by the client's clock), then live.
TEST_F(CliWatchTest, SinceStartsAtATimeInTheHistory) {
  Life early, late;
  LiveOneConnection(&early, "early");
  const uint64_t early_head = Stats().head_seq();
  // The two connections' events lie more than two seconds apart; the time
  // between them is what --since is asked to cut at.
  const absl::Time early_end = absl::Now();
  ASSERT_TRUE(WaitFor(
      [&] { return absl::Now() >= early_end + absl::Seconds(2); }, Deadline()));
  LiveOneConnection(&late, "late");
  const uint64_t head = Stats().head_seq();

  // Half a second after `early` ended, however long the command takes to
  // start (less than 1.5 s).
  const absl::Duration since =
      absl::Now() - (early_end + absl::Milliseconds(500));
  CommandResult r = Fanin({"watch", "-o", "json", "--since",
                           absl::StrCat(absl::ToDoubleSeconds(since)), "-n",
                           absl::StrCat(head - early_head)});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<uint64_t> ids;
  uint64_t first_seq = 0;
  for (const JsonMap& o : *parsed) {
    if (JsonType(o) != "event") continue;
    if (first_seq == 0) first_seq = JsonUint(o, "seq");
    ids.push_back(JsonUint(o, "connection_id"));
  }
  EXPECT_EQ(first_seq, early_head + 1);
  EXPECT_EQ(ids, std::vector<uint64_t>(head - early_head, late.id));

  // An hour reaches back over everything retained.
  r = Fanin({"watch", "--since", "1h", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data,
              HasSubstr(absl::StrCat("seq=", Stats().oldest_seq(), " ")));
}

TEST_F(CliE2eTest, NodesListsThisServerInStandalone) {
  TcpClient raw = Connect();
  ConnectionIdOf(raw);
  CommandResult r = Fanin({"nodes"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  std::vector<std::string> lines =
      absl::StrSplit(r.stdout_data, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.stdout_data;
  EXPECT_THAT(lines[0], HasSubstr("NAME  STATE  GRPC ADDRESS"));
  EXPECT_THAT(lines[0], HasSubstr("CONNECTIONS  LAST SEEN  INCARNATION"));
  std::vector<std::string> row =
      absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  EXPECT_EQ(
      row, (std::vector<std::string>{"-", "up", server_->grpc_address(), "1",
                                     row.size() > 4 ? row[4] : "", "ago", "0"}))
      << lines[1];

  r = Fanin({"nodes", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  const JsonMap& o = (*parsed)[0];
  EXPECT_EQ(JsonStr(o, "name"), "");
  EXPECT_EQ(JsonStr(o, "state"), "NODE_STATE_UP");
  EXPECT_EQ(JsonStr(o, "grpc_address"), server_->grpc_address());
  EXPECT_EQ(JsonUint(o, "connections_open"), 1u);
  EXPECT_GT(JsonUint(o, "last_seen_unix_nano"), 1700000000000000000u);
  EXPECT_EQ(JsonStr(o, "incarnation"), "0");

  // Standalone connections have no node: no NODE column, and --node is a
  // clear error from the server (not a filter that lists everything).
  r = Fanin({"list"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stdout_data, Not(HasSubstr("NODE")));
  r = Fanin({"list", "--node", "node-a"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.stderr_data, HasSubstr("not in cluster mode"));
}

// --server A,B with --follow: A is not there, B serves the watch.
TEST_F(CliWatchTest, FollowSkipsAnUnreachableFirstServer) {
  const std::string dead = absl::StrCat("127.0.0.1:", UnusedPort());
  const std::string servers = absl::StrCat(dead, ",", server_->grpc_address());
  auto watch = Subprocess::Start(
      {kFanin, "watch", "-o", "json", "--follow", "--server", servers});
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(WaitForJson(**watch, "started")) << (*watch)->stderr_data();
  TcpClient raw = Connect();
  ASSERT_TRUE(raw.SendAll("via the second").ok());
  ASSERT_TRUE(WaitForJson(**watch, "event", "data")) << (*watch)->stdout_data();
  ASSERT_TRUE((*watch)->Signal(SIGINT).ok());
  auto result = (*watch)->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 130);
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("cannot subscribe at ", dead)));
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("trying ", server_->grpc_address())));
  EXPECT_THAT(
      result->stderr_data,
      HasSubstr(absl::StrCat("subscribed to ", server_->grpc_address())));

  // Without --follow the list is still tried until one server answers; the
  // read-only commands do the same.
  auto r = RunCommand(
      {kFanin, "watch", "--server", servers, "--last", "1", "-n", "1"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_THAT(r->stdout_data, HasSubstr("DATA"));
  r = RunCommand({kFanin, "stats", "--server", servers});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_THAT(r->stderr_data,
              HasSubstr(absl::StrCat("cannot reach ", dead,
                                     ": connection refused; trying ",
                                     server_->grpc_address())));
  // Write acts: only the first server, never another after a failure.
  r = RunCommand({kFanin, "write", "1", "x", "--server", servers});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3) << r->stderr_data;
}

// --server A,B with --follow: A dies under the watch, B takes over. In
// standalone B has an epoch of its own, which the watch reports.
TEST_F(CliWatchTest, FollowMovesToTheNextServerWhenOneIsKilled) {
  auto second = ServerProcess::Start(
      {.flags = {"--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
                 "--loops=1"}});
  ASSERT_TRUE(second.ok()) << second.status();
  auto watch = Subprocess::Start(
      {kFanin, "watch", "-o", "json", "--follow", "--server",
       absl::StrCat(server_->grpc_address(), ",", (*second)->grpc_address())});
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(WaitForJson(**watch, "started"));
  TcpClient first_client = Connect();
  ASSERT_TRUE(first_client.SendAll("before").ok());
  ASSERT_TRUE(WaitForJson(**watch, "event", "data")) << (*watch)->stdout_data();

  ASSERT_TRUE(server_->Signal(SIGKILL).ok());
  ASSERT_TRUE((*watch)->WaitForOutput(
      [](absl::string_view, absl::string_view err) {
        return absl::StrContains(err, "serves epoch");
      },
      Deadline()))
      << (*watch)->stderr_data();
  auto address = (*second)->listen_address();
  ASSERT_TRUE(address.ok()) << address.status();
  auto second_client = ConnectTcp(*address);
  ASSERT_TRUE(second_client.ok()) << second_client.status();
  ASSERT_TRUE(second_client->SendAll("after").ok());
  ASSERT_TRUE((*watch)->WaitForOutput(
      [](absl::string_view out, absl::string_view) {
        // "after" in base64.
        return absl::StrContains(out, "\"YWZ0ZXI=\"");
      },
      Deadline()))
      << (*watch)->stdout_data();

  ASSERT_TRUE((*watch)->Signal(SIGINT).ok());
  auto result = (*watch)->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 130);
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("stream from ", server_->grpc_address(),
                                     " ended")));
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("trying ", (*second)->grpc_address())));
  auto parsed = ParseJsonLines(CompleteLines(result->stdout_data));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<std::string> epochs;
  for (const auto& o : *parsed) {
    if (JsonType(o) == "started") epochs.push_back(JsonStr(o, "server_epoch"));
  }
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_TRUE(HasObject(*parsed, "gap")) << "Gap(EPOCH_CHANGED) from B";
}

TEST_F(CliWatchTest, ClosedPipeEndsQuietly) {
  // More output than a pipe holds, so the watch writes after head exits.
  Life life;
  uint64_t before = LiveOneConnection(&life, RandomBytes(512 * 1024, 3));
  absl::Time start = absl::Now();
  auto r = RunCommand(
      {"/bin/sh", "-c",
       absl::StrCat("{ ", kFanin, " --server=", server_->grpc_address(),
                    " watch -o json --timeout 30s --resume-after ", before,
                    "; echo \"fanin exit $?\" >&2; } | head -n 1")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20))
      << "watch only ended at its --timeout";
  EXPECT_EQ(r->stderr_data, "fanin exit 0\n");
  EXPECT_THAT(r->stdout_data, HasSubstr("\"server_epoch\""));
}

TEST_F(CliWatchTest, FollowSurvivesARestartAndReportsTheNewEpoch) {
  auto watch = StartFanin({"watch", "-o", "json", "--follow"});
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(WaitForJson(*watch, "started"));
  TcpClient before_restart = Connect();
  ASSERT_TRUE(WaitForJson(*watch, "event", "opened")) << watch->stdout_data();
  std::vector<JsonMap> first = JsonSoFar(*watch);
  std::string old_epoch = JsonStr(first[0], "server_epoch");
  before_restart.Close();

  ASSERT_TRUE(server_->Restart().ok());
  MakeStub();
  ASSERT_TRUE(watch->WaitForOutput(
      [](absl::string_view, absl::string_view err) {
        return absl::StrContains(err, "new epoch");
      },
      Deadline()))
      << watch->stderr_data();
  TcpClient after_restart = Connect();
  ASSERT_TRUE(after_restart.SendAll("again").ok());
  ASSERT_TRUE(WaitForJson(*watch, "event", "data")) << watch->stdout_data();

  ASSERT_TRUE(watch->Signal(SIGINT).ok());
  auto result = watch->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 130);
  EXPECT_THAT(result->stderr_data,
              HasSubstr(absl::StrCat("was ", old_epoch, ")")));
  auto parsed = ParseJsonLines(result->stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<std::string> epochs;
  for (const auto& o : *parsed) {
    if (JsonType(o) == "started") {
      epochs.push_back(JsonStr(o, "server_epoch"));
    }
  }
  ASSERT_GE(epochs.size(), 2u);
  EXPECT_EQ(epochs.front(), old_epoch);
  EXPECT_NE(epochs.back(), old_epoch);
  // The new epoch's data event is the client's.
  bool found = false;
  for (const auto& o : *parsed) {
    if (JsonKind(o) == "data" &&
        *Base64Decode(JsonStr(o, "data.payload")) == "again") {
      found = true;
    }
  }
  EXPECT_TRUE(found) << result->stdout_data;
}

TEST_F(CliWatchTest, WithoutFollowAServerShutdownEndsTheWatch) {
  auto watch = StartFanin({"watch", "-o", "json"});
  ASSERT_NE(watch, nullptr);
  ASSERT_TRUE(WaitForJson(*watch, "started"));
  auto code = server_->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  auto result = watch->Wait(Deadline());
  ASSERT_TRUE(result.ok()) << result.status();
  // A graceful shutdown finishes the stream (exit 0, with a hint to use
  // --follow); losing the server abruptly would be exit 3.
  EXPECT_TRUE(result->exit_code == 0 || result->exit_code == 3)
      << result->exit_code << ": " << result->stderr_data;
  EXPECT_THAT(result->stderr_data, HasSubstr("--follow"));
}

TEST_F(CliWatchTest, ExpiredHistoryIsReportedAsAGap) {
  server_.reset();
  StartServer({"--listen=127.0.0.1:0", "--history_events=8"});
  for (int i = 0; i < 5; ++i) Connect().Close();
  WaitForHead(10);
  WaitFor([&] { return Stats().connections_open() == 0; }, Deadline());
  v1::GetStatsResponse stats = Stats();
  ASSERT_GT(stats.oldest_seq(), 2u) << "history did not expire";

  // JSON: a gap object naming the expired range, then the retained events.
  CommandResult r =
      Fanin({"watch", "-o", "json", "--resume-after", "1", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  auto parsed = ParseJsonLines(r.stdout_data);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(HasObject(*parsed, "gap")) << r.stdout_data;
  for (const auto& o : *parsed) {
    if (JsonType(o) != "gap") continue;
    EXPECT_EQ(JsonStr(o, "reason"), "GAP_REASON_HISTORY_EXPIRED");
    EXPECT_EQ(JsonUint(o, "first_seq"), 2u);
    EXPECT_EQ(JsonUint(o, "last_seq"),
              JsonUint(o, "first_seq") + JsonUint(o, "lost") - 1);
    EXPECT_GE(JsonUint(o, "last_seq") + 1, stats.oldest_seq());
  }

  // Text: the same gap as a sentence on stderr, events on stdout.
  r = Fanin({"watch", "--resume-after", "1", "-n", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("fanin: gap: seq 2.."));
  EXPECT_THAT(r.stderr_data, HasSubstr("expired from the server's history"));
  EXPECT_THAT(r.stdout_data, Not(HasSubstr("gap")));
  EXPECT_THAT(r.stdout_data, HasSubstr("seq="));
}

// TLS, mutual TLS and bearer tokens against the server's access control.
class CliTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = getenv("TEST_TMPDIR");
    cert_ = absl::StrCat(dir_, "/cert.pem");
    key_ = absl::StrCat(dir_, "/key.pem");
    auto openssl =
        RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key_,
                    "-out", cert_, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"});
    ASSERT_TRUE(openssl.ok()) << openssl.status();
    ASSERT_EQ(openssl->exit_code, 0) << openssl->stderr_data;
    WriteFile("tokens", "reader reader-token\nwriter writer-token\n");
    WriteFile("reader", "reader-token\n");
    WriteFile("writer", "writer-token\n");
    WriteFile("wrong", "not-a-known-token\n");
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = absl::StrCat(dir_, "/", name);
    FILE* f = fopen(path.c_str(), "w");
    EXPECT_NE(f, nullptr);
    fputs(text.c_str(), f);
    fclose(f);
    return path;
  }

  std::string Path(const std::string& name) {
    return absl::StrCat(dir_, "/", name);
  }

  CommandResult Fanin(std::vector<std::string> args) {
    args.insert(args.begin(), kFanin);
    args.push_back(absl::StrCat("--server=", server_->grpc_address()));
    auto result = RunCommand(args);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : CommandResult();
  }

  std::string dir_, cert_, key_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(CliTlsTest, TokensOverTls) {
  auto server = ServerProcess::Start(
      {.flags = {"--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
                 absl::StrCat("--tls_cert=", cert_),
                 absl::StrCat("--tls_key=", key_),
                 absl::StrCat("--auth_tokens_file=", Path("tokens"))}});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  std::string ca = absl::StrCat("--tls_ca=", cert_);

  CommandResult r = Fanin({"stats", ca, "--token_file", Path("reader")});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  r = Fanin(
      {"watch", ca, "--token_file", Path("reader"), "--timeout", "300ms"});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  // The name in the certificate may be given explicitly.
  r = Fanin({"stats", ca, "--tls_server_name=localhost", "--token_file",
             Path("reader")});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  // Health is never checked.
  r = Fanin({"health", ca});
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;

  r = Fanin({"stats", ca});
  EXPECT_EQ(r.exit_code, 8) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(r.stderr_data, HasSubstr("--token_file"));
  r = Fanin({"stats", ca, "--token_file", Path("wrong")});
  EXPECT_EQ(r.exit_code, 8) << r.stderr_data;
  r = Fanin({"write", "1", "x", ca, "--token_file", Path("reader")});
  EXPECT_EQ(r.exit_code, 8) << r.stderr_data;
  EXPECT_THAT(r.stderr_data, HasSubstr("PERMISSION_DENIED"));
  r = Fanin({"write", "999", "x", ca, "--token_file", Path("writer")});
  EXPECT_EQ(r.exit_code, 4) << r.stderr_data;

  // Plaintext to a TLS server cannot connect.
  r = Fanin({"stats", "--token_file", Path("reader"), "--timeout", "3s"});
  EXPECT_EQ(r.exit_code, 3) << r.stderr_data;
}

TEST_F(CliTlsTest, MutualTlsClientCertificate) {
  // The self-signed certificate doubles as the client's and as both CAs.
  auto server = ServerProcess::Start(
      {.flags = {"--listen=127.0.0.1:0", "--grpc_address=127.0.0.1:0",
                 absl::StrCat("--tls_cert=", cert_),
                 absl::StrCat("--tls_key=", key_),
                 absl::StrCat("--tls_client_ca=", cert_)}});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  std::vector<std::string> tls = {absl::StrCat("--tls_ca=", cert_),
                                  absl::StrCat("--tls_cert=", cert_),
                                  absl::StrCat("--tls_key=", key_)};
  std::vector<std::string> args = {"stats"};
  args.insert(args.end(), tls.begin(), tls.end());
  CommandResult r = Fanin(args);
  EXPECT_EQ(r.exit_code, 0) << r.stderr_data;
  // Verified certificates default to the reader role.
  args = {"close", "1"};
  args.insert(args.end(), tls.begin(), tls.end());
  r = Fanin(args);
  EXPECT_EQ(r.exit_code, 8) << r.stderr_data;
  // Without a client certificate the handshake fails.
  r = Fanin({"stats", tls[0], "--timeout", "3s"});
  EXPECT_NE(r.exit_code, 0) << r.stderr_data;
  EXPECT_TRUE(r.exit_code == 3 || r.exit_code == 8) << r.exit_code;
}

TEST(CliUnixSocketTest, ServerAddressMayBeAUnixSocket) {
  // Not under TEST_TMPDIR: a unix socket path must fit in 108 bytes.
  char dir[] = "/tmp/fanin-cli-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = absl::StrCat(dir, "/grpc.sock");
  auto server = ServerProcess::Start(
      {.flags = {"--listen=127.0.0.1:0",
                 absl::StrCat("--grpc_address=unix:", path)}});
  ASSERT_TRUE(server.ok()) << server.status();
  auto r =
      RunCommand({kFanin, "health", "--server", absl::StrCat("unix:", path)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_EQ(r->stdout_data, "SERVING\n");
  server->reset();
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace fanin::testing
