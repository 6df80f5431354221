// Access control: the tokens file, every credential/role combination on every
// FanIn method, no partial effect on refusal, reload, and no token in logs.
#include "server/grpc/auth.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/base/log.h"
#include "server/fanin_server.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"

namespace fanin::opstest {
namespace {

using grpc::StatusCode;
using grpc_api::Access;
using grpc_api::AuthOptions;
using grpc_api::Authorizer;
using grpc_api::Role;

constexpr char kReaderToken[] = "reader-token-0123456789abcdef";
constexpr char kWriterToken[] = "writer-token-fedcba9876543210";

std::string TokensFile(const std::string& dir) {
  std::string path = absl::StrCat(dir, "/tokens");
  WriteFile(path,
            absl::StrCat("# role credential\n", "reader ", kReaderToken, "\n",
                         "writer\t", kWriterToken, "   # the deployer\n",
                         "\n"
                         "writer cert:writer-bot\n"
                         "reader cert:reader-bot\n"));
  return path;
}

TEST(ParseCredentialsTest, RolesTokensAndIdentities) {
  auto table = grpc_api::ParseCredentials(
      "# comment\n\nreader aaa\nwriter bbb # trailing\nwriter cert:ops\n");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->tokens.size(), 2u);
  ASSERT_EQ(table->identities.size(), 1u);
  EXPECT_EQ(table->identities.at("ops"), Role::kWriter);
}

TEST(ParseCredentialsTest, ErrorsNameTheLineButNeverTheToken) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"reader secret-one extra\n", "line 1"},
      {"\nadmin secret-one\n", "line 2"},
      {"none secret-one\n", "line 1"},
      {"reader secret-one\nwriter secret-one\n", "line 2"},
      {"writer cert:\n", "line 1"},
      {"secret-one\n", "line 1"},
  };
  for (const Case& c : cases) {
    auto table = grpc_api::ParseCredentials(c.text);
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(table.status().message(), c.expect))
        << table.status();
    EXPECT_FALSE(absl::StrContains(table.status().message(), "secret"))
        << table.status();
  }
}

struct DecideCase {
  const char* name;
  std::optional<std::string> authorization;
  std::vector<std::string> identities;
  StatusCode read;
  StatusCode write;
};

void ExpectDecisions(const Authorizer& auth,
                     const std::vector<DecideCase>& cases) {
  for (const DecideCase& c : cases) {
    std::optional<absl::string_view> header;
    if (c.authorization) header = *c.authorization;
    EXPECT_EQ(auth.Decide(header, c.identities, Access::kRead).error_code(),
              c.read)
        << c.name << " reading";
    EXPECT_EQ(auth.Decide(header, c.identities, Access::kWrite).error_code(),
              c.write)
        << c.name << " writing";
  }
}

TEST(AuthorizerTest, TokensOnly) {
  std::string dir = MakeTempDir();
  auto auth = Authorizer::Create({.tokens_file = TokensFile(dir)});
  ASSERT_TRUE(auth.ok()) << auth.status();
  ASSERT_TRUE((*auth)->enabled());
  const std::string reader = absl::StrCat("Bearer ", kReaderToken);
  const std::string writer = absl::StrCat("Bearer ", kWriterToken);
  ExpectDecisions(
      **auth,
      {
          {"nothing",
           std::nullopt,
           {},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
          {"unknown token",
           "Bearer nope",
           {},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
          {"empty bearer",
           "Bearer ",
           {},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
          {"basic scheme",
           absl::StrCat("Basic ", kWriterToken),
           {},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
          {"bare token",
           kWriterToken,
           {},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
          {"reader", reader, {}, StatusCode::OK, StatusCode::PERMISSION_DENIED},
          {"writer", writer, {}, StatusCode::OK, StatusCode::OK},
          {"lower-case scheme",
           absl::StrCat("bearer ", kWriterToken),
           {},
           StatusCode::OK,
           StatusCode::OK},
          // Without mutual TLS a certificate identity counts for nothing.
          {"identity without mtls",
           std::nullopt,
           {"writer-bot"},
           StatusCode::UNAUTHENTICATED,
           StatusCode::UNAUTHENTICATED},
      });
}

TEST(AuthorizerTest, MutualTlsIdentitiesAndTokens) {
  std::string dir = MakeTempDir();
  auto auth = Authorizer::Create({.tokens_file = TokensFile(dir),
                                  .mtls = true,
                                  .cert_default_role = Role::kReader});
  ASSERT_TRUE(auth.ok()) << auth.status();
  const std::string writer = absl::StrCat("Bearer ", kWriterToken);
  ExpectDecisions(
      **auth, {
                  {"writer cert",
                   std::nullopt,
                   {"writer-bot"},
                   StatusCode::OK,
                   StatusCode::OK},
                  {"reader cert",
                   std::nullopt,
                   {"reader-bot"},
                   StatusCode::OK,
                   StatusCode::PERMISSION_DENIED},
                  {"unnamed cert gets the default",
                   std::nullopt,
                   {"stranger"},
                   StatusCode::OK,
                   StatusCode::PERMISSION_DENIED},
                  {"any listed name counts",
                   std::nullopt,
                   {"stranger", "writer-bot"},
                   StatusCode::OK,
                   StatusCode::OK},
                  {"reader cert + writer token",
                   writer,
                   {"reader-bot"},
                   StatusCode::OK,
                   StatusCode::OK},
                  {"writer cert + unknown token",
                   "Bearer nope",
                   {"writer-bot"},
                   StatusCode::UNAUTHENTICATED,
                   StatusCode::UNAUTHENTICATED},
                  {"token alone", writer, {}, StatusCode::OK, StatusCode::OK},
                  {"nothing",
                   std::nullopt,
                   {},
                   StatusCode::UNAUTHENTICATED,
                   StatusCode::UNAUTHENTICATED},
              });
  auto strict = Authorizer::Create(
      {.tokens_file = "", .mtls = true, .cert_default_role = Role::kNone});
  ASSERT_TRUE(strict.ok());
  ExpectDecisions(**strict, {
                                {"unnamed cert, default none",
                                 std::nullopt,
                                 {"stranger"},
                                 StatusCode::PERMISSION_DENIED,
                                 StatusCode::PERMISSION_DENIED},
                            });
}

// A lossless subscription can pause ingestion: it needs --lossless_role,
// writer unless configured otherwise, whatever lets the caller read.
TEST(AuthorizerTest, LosslessNeedsItsOwnRole) {
  std::string dir = MakeTempDir();
  const std::string reader = absl::StrCat("Bearer ", kReaderToken);
  const std::string writer = absl::StrCat("Bearer ", kWriterToken);
  auto by_default = Authorizer::Create({.tokens_file = TokensFile(dir)});
  ASSERT_TRUE(by_default.ok()) << by_default.status();
  grpc::Status denied = (*by_default)->Decide(reader, {}, Access::kLossless);
  EXPECT_EQ(denied.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(denied.error_message(), "--lossless_role"))
      << denied.error_message();
  EXPECT_TRUE((*by_default)->Decide(writer, {}, Access::kLossless).ok());
  EXPECT_EQ(
      (*by_default)->Decide(std::nullopt, {}, Access::kLossless).error_code(),
      StatusCode::UNAUTHENTICATED);
  auto readers_may = Authorizer::Create(
      {.tokens_file = TokensFile(dir), .lossless_role = Role::kReader});
  ASSERT_TRUE(readers_may.ok()) << readers_may.status();
  EXPECT_TRUE((*readers_may)->Decide(reader, {}, Access::kLossless).ok());
}

TEST(AuthorizerTest, OffWithoutTokensOrMutualTls) {
  auto auth = Authorizer::Create({});
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->enabled());
  ExpectDecisions(
      **auth, {{"nothing", std::nullopt, {}, StatusCode::OK, StatusCode::OK}});
}

TEST(AuthorizerTest, MissingFileIsAnError) {
  auto auth = Authorizer::Create({.tokens_file = "/nonexistent/tokens"});
  ASSERT_FALSE(auth.ok());
  EXPECT_TRUE(absl::StrContains(auth.status().message(), "/nonexistent"));
}

// Every FanIn method with every credential against a real server.
class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    tokens_ = TokensFile(dir_);
    base::SetLogSinkForTesting([this](absl::string_view line) {
      absl::MutexLock lock(&log_mu_);
      log_.append(line.data(), line.size());
    });
    base::ConfigureLogging(base::LogLevel::kDebug, base::LogFormat::kText);
    ServerConfig config;
    config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
    config.core.loops = 2;
    config.grpc_address = net::Endpoint::Loopback(0);
    config.drain_timeout = absl::Seconds(2);
    config.auth.tokens_file = tokens_;
    auto server = FaninServer::Start(std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = server_->grpc_address();
    // A raw client and its connection id, seen by a writer.
    watch_ = Subscriber::Start(address_, LosslessRequest(), /*held=*/false,
                               {.token = kWriterToken});
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
    auto client =
        fanin::testing::ConnectTcp(server_->listen_addresses().at(0).second);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    id_ = watch_->WaitOpened(client_.fd(), Deadline());
    ASSERT_NE(id_, 0u);
  }
  void TearDown() override {
    watch_.reset();
    server_.reset();
    base::SetLogSinkForTesting(nullptr);
    base::ConfigureLogging(base::LogLevel::kInfo, base::LogFormat::kText);
  }

  // The status of each FanIn method called with `token` ("" = none).
  struct Codes {
    StatusCode subscribe, lossless, list, stats, read, write, close, nodes;
  };
  Codes Call(const std::string& token) {
    ClientAuth auth{.token = token};
    auto stub = fanin::v1::FanIn::NewStub(NewChannel(address_));
    Codes codes;
    for (bool lossless : {false, true}) {
      auto reader = Subscriber::Start(
          address_,
          lossless ? LosslessRequest() : fanin::v1::SubscribeRequest(),
          /*held=*/false, auth);
      grpc::Status s = reader->WaitStarted(Deadline()).ok()
                           ? grpc::Status::OK
                           : reader->WaitDone(Deadline());
      (lossless ? codes.lossless : codes.subscribe) = s.error_code();
    }
    {
      fanin::v1::ListConnectionsResponse r;
      codes.list =
          stub->ListConnections(NewContext(auth).get(), {}, &r).error_code();
    }
    {
      fanin::v1::GetStatsResponse r;
      codes.stats = stub->GetStats(NewContext(auth).get(), {}, &r).error_code();
    }
    {
      fanin::v1::ReadRequest req;
      req.set_connection_id(id_);
      fanin::v1::ReadResponse r;
      codes.read = stub->Read(NewContext(auth).get(), req, &r).error_code();
    }
    {
      fanin::v1::WriteRequest req;
      req.set_connection_id(id_);
      req.set_data("x");
      fanin::v1::WriteResponse r;
      codes.write = stub->Write(NewContext(auth).get(), req, &r).error_code();
    }
    {
      // Abort on a denied caller must not happen; a permitted one gets
      // NOT_FOUND for this id that never existed.
      fanin::v1::CloseConnectionRequest req;
      req.set_connection_id(id_ + 1000);
      req.set_abort(true);
      fanin::v1::CloseConnectionResponse r;
      codes.close =
          stub->CloseConnection(NewContext(auth).get(), req, &r).error_code();
    }
    {
      fanin::v1::ListNodesResponse r;
      codes.nodes =
          stub->ListNodes(NewContext(auth).get(), {}, &r).error_code();
    }
    return codes;
  }

  std::string Log() {
    absl::MutexLock lock(&log_mu_);
    return log_;
  }

  std::string dir_, tokens_, address_;
  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<Subscriber> watch_;
  fanin::testing::TcpClient client_;
  uint64_t id_ = 0;
  absl::Mutex log_mu_;
  std::string log_ ABSL_GUARDED_BY(log_mu_);
};

TEST_F(AuthServerTest, EveryMethodWithEveryCredential) {
  const StatusCode kUnauth = StatusCode::UNAUTHENTICATED;
  const StatusCode kDenied = StatusCode::PERMISSION_DENIED;
  const StatusCode kOk = StatusCode::OK;
  // Read on a push connection is FAILED_PRECONDITION: past the check.
  const StatusCode kPushRead = StatusCode::FAILED_PRECONDITION;
  struct Case {
    const char* name;
    std::string token;
    Codes want;
  } cases[] = {
      {"none",
       "",
       {kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth,
        kUnauth}},
      {"unknown",
       "not-a-token",
       {kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth, kUnauth,
        kUnauth}},
      // A lossless subscription needs the writer role by default.
      {"reader",
       kReaderToken,
       {kOk, kDenied, kOk, kOk, kPushRead, kDenied, kDenied, kOk}},
      {"writer",
       kWriterToken,
       {kOk, kOk, kOk, kOk, kPushRead, kOk, StatusCode::NOT_FOUND, kOk}},
  };
  for (const Case& c : cases) {
    Codes got = Call(c.token);
    EXPECT_EQ(got.subscribe, c.want.subscribe) << c.name << " Subscribe";
    EXPECT_EQ(got.lossless, c.want.lossless) << c.name << " lossless";
    EXPECT_EQ(got.list, c.want.list) << c.name << " ListConnections";
    EXPECT_EQ(got.stats, c.want.stats) << c.name << " GetStats";
    EXPECT_EQ(got.read, c.want.read) << c.name << " Read";
    EXPECT_EQ(got.write, c.want.write) << c.name << " Write";
    EXPECT_EQ(got.close, c.want.close) << c.name << " CloseConnection";
    EXPECT_EQ(got.nodes, c.want.nodes) << c.name << " ListNodes";
  }
  // Only the writer's one byte reached the client: refused writes had no
  // effect at all.
  auto got = client_.RecvExactly(1, Deadline());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "x");
  auto more = client_.Recv(16, absl::Now() + absl::Milliseconds(200));
  EXPECT_FALSE(more.ok()) << "unexpected bytes: " << *more;
  EXPECT_TRUE(fanin::testing::WaitFor(
      [&] { return server_->core()->GetStats().bytes_sent == 1; }, Deadline()));
  EXPECT_EQ(server_->core()->GetStats().bytes_sent, 1u);
  // Health stays open for probes without any credential.
  auto health = HealthCheck(NewChannel(address_));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, 1);
}

TEST_F(AuthServerTest, RefusedCloseLeavesTheConnectionOpen) {
  auto stub = fanin::v1::FanIn::NewStub(NewChannel(address_));
  fanin::v1::CloseConnectionRequest req;
  req.set_connection_id(id_);
  req.set_abort(true);
  fanin::v1::CloseConnectionResponse r;
  EXPECT_EQ(
      stub->CloseConnection(NewContext({.token = kReaderToken}).get(), req, &r)
          .error_code(),
      StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(stub->CloseConnection(NewContext({}).get(), req, &r).error_code(),
            StatusCode::UNAUTHENTICATED);
  // Still open: bytes still flow to the subscriber.
  ASSERT_TRUE(client_.SendAll("still here").ok());
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        auto it = s.data_bytes_by_id.find(id_);
        return it != s.data_bytes_by_id.end() && it->second == 10;
      },
      Deadline()));
  EXPECT_EQ(watch_->Snapshot().closed.count(id_), 0u);
  // The writer may.
  EXPECT_TRUE(
      stub->CloseConnection(NewContext({.token = kWriterToken}).get(), req, &r)
          .ok());
  EXPECT_TRUE(client_.WaitForPeerClose(Deadline()));
}

TEST_F(AuthServerTest, ReloadSwapsTokensAndKeepsThemOnABadFile) {
  auto stub = fanin::v1::FanIn::NewStub(NewChannel(address_));
  auto stats_code = [&](const std::string& token) {
    fanin::v1::GetStatsResponse r;
    return stub->GetStats(NewContext({.token = token}).get(), {}, &r)
        .error_code();
  };
  ASSERT_EQ(stats_code(kReaderToken), StatusCode::OK);
  WriteFile(tokens_, "reader rotated-token-000111222333\n");
  ASSERT_TRUE(server_->ReloadCredentials().ok());
  EXPECT_EQ(stats_code(kReaderToken), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(stats_code("rotated-token-000111222333"), StatusCode::OK);
  // A broken file is refused and the rotated token still works.
  WriteFile(tokens_, "superuser oops\n");
  absl::Status bad = server_->ReloadCredentials();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(stats_code("rotated-token-000111222333"), StatusCode::OK);
}

TEST_F(AuthServerTest, TokensNeverReachTheLog) {
  Call("not-a-token-but-secret-looking");
  Call(kReaderToken);
  Call(kWriterToken);
  std::string log = Log();
  EXPECT_TRUE(absl::StrContains(log, "rpc refused")) << log;
  EXPECT_TRUE(absl::StrContains(log, "credentials loaded")) << log;
  EXPECT_FALSE(absl::StrContains(log, kReaderToken)) << log;
  EXPECT_FALSE(absl::StrContains(log, kWriterToken)) << log;
  EXPECT_FALSE(absl::StrContains(log, "secret-looking")) << log;
}

}  // namespace
}  // namespace fanin::opstest
