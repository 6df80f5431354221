// gRPC over TLS and mutual TLS with certificates made by the openssl command:
// handshakes that must work, ones that must fail, certificate identities as
// roles, and the fanin CLI's --tls_* / --token_file flags against them.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "tests/ops/ops_util.h"
#include "tests/testing/subprocess.h"

namespace fanin::opstest {
namespace {

using grpc::StatusCode;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pki = MakeTestPki(MakeTempDir());
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = new TestPki(*std::move(pki));
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void Start(bool mutual, const std::string& tokens_file = "") {
    ASSERT_NE(pki_, nullptr);
    ServerConfig config;
    config.core.listen = {{"default", net::Endpoint::Loopback(0)}};
    config.core.loops = 1;
    config.grpc_address = net::Endpoint::Loopback(0);
    config.drain_timeout = absl::Seconds(2);
    config.tls.cert_file = pki_->server_cert;
    config.tls.key_file = pki_->server_key;
    if (mutual) config.tls.client_ca_file = pki_->ca_cert;
    config.auth.tokens_file = tokens_file;
    auto server = FaninServer::Start(std::move(config));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // GetStats's code over a channel made with `auth`.
  StatusCode Stats(const ClientAuth& auth) {
    auto stub =
        fanin::v1::FanIn::NewStub(NewChannel(server_->grpc_address(), auth));
    fanin::v1::GetStatsResponse r;
    auto context = NewContext(auth);
    context->set_deadline(absl::ToChronoTime(Deadline(absl::Seconds(10))));
    return stub->GetStats(context.get(), {}, &r).error_code();
  }
  // CloseConnection on an id that does not exist: NOT_FOUND once past the
  // writer check.
  StatusCode Close(const ClientAuth& auth) {
    auto stub =
        fanin::v1::FanIn::NewStub(NewChannel(server_->grpc_address(), auth));
    fanin::v1::CloseConnectionRequest req;
    req.set_connection_id(424242);
    fanin::v1::CloseConnectionResponse r;
    return stub->CloseConnection(NewContext(auth).get(), req, &r).error_code();
  }

  // Runs the fanin CLI with the server flag and `args`; its exit code.
  int Cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {
        "client/fanin", absl::StrCat("--server=", server_->grpc_address())};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = fanin::testing::RunCommand(argv);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return -1;
    return result->exit_code;
  }

  static TestPki* pki_;
  std::unique_ptr<FaninServer> server_;
};

TestPki* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, ServerTlsHandshake) {
  Start(/*mutual=*/false);
  EXPECT_EQ(Stats({.ca_file = pki_->ca_cert}), StatusCode::OK);
  // A client that does not trust the server's CA, and a plaintext client,
  // never get through.
  EXPECT_EQ(Stats({.ca_file = pki_->rogue_cert}), StatusCode::UNAVAILABLE);
  EXPECT_EQ(Stats({}), StatusCode::UNAVAILABLE);
  auto health = HealthCheck(
      NewChannel(server_->grpc_address(), {.ca_file = pki_->ca_cert}));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, 1);
}

TEST_F(TlsTest, MutualTlsNeedsATrustedClientCertificate) {
  Start(/*mutual=*/true);
  const std::string ca = pki_->ca_cert;
  EXPECT_EQ(Stats({.ca_file = ca}), StatusCode::UNAVAILABLE);
  EXPECT_EQ(Stats({.ca_file = ca,
                   .cert_file = pki_->rogue_cert,
                   .key_file = pki_->rogue_key}),
            StatusCode::UNAVAILABLE);
  // A trusted certificate not named anywhere: the default role, reader.
  const ClientAuth stranger = {.ca_file = ca,
                               .cert_file = pki_->stranger_cert,
                               .key_file = pki_->stranger_key};
  EXPECT_EQ(Stats(stranger), StatusCode::OK);
  EXPECT_EQ(Close(stranger), StatusCode::PERMISSION_DENIED);
}

TEST_F(TlsTest, CertificateIdentitiesAndTokensGiveRoles) {
  std::string tokens = absl::StrCat(MakeTempDir(), "/tokens");
  WriteFile(tokens,
            "writer cert:writer-bot\n"
            "reader cert:reader-bot\n"
            "writer writer-token-over-mtls-0123\n");
  Start(/*mutual=*/true, tokens);
  const std::string ca = pki_->ca_cert;
  const ClientAuth writer = {.ca_file = ca,
                             .cert_file = pki_->writer_cert,
                             .key_file = pki_->writer_key};
  const ClientAuth reader = {.ca_file = ca,
                             .cert_file = pki_->reader_cert,
                             .key_file = pki_->reader_key};
  EXPECT_EQ(Stats(writer), StatusCode::OK);
  EXPECT_EQ(Close(writer), StatusCode::NOT_FOUND);
  EXPECT_EQ(Stats(reader), StatusCode::OK);
  EXPECT_EQ(Close(reader), StatusCode::PERMISSION_DENIED);
  ClientAuth reader_with_token = reader;
  reader_with_token.token = "writer-token-over-mtls-0123";
  EXPECT_EQ(Close(reader_with_token), StatusCode::NOT_FOUND);
  ClientAuth writer_with_bad_token = writer;
  writer_with_bad_token.token = "wrong";
  EXPECT_EQ(Stats(writer_with_bad_token), StatusCode::UNAUTHENTICATED);
}

TEST_F(TlsTest, CliFlagsMatchTheServer) {
  std::string dir = MakeTempDir();
  std::string tokens = absl::StrCat(dir, "/tokens");
  WriteFile(tokens, "reader reader-token-for-the-cli-000\n");
  std::string token_file = absl::StrCat(dir, "/token");
  WriteFile(token_file, "reader-token-for-the-cli-000\n");
  Start(/*mutual=*/true, tokens);
  const std::vector<std::string> writer_tls = {
      absl::StrCat("--tls_ca=", pki_->ca_cert),
      absl::StrCat("--tls_cert=", pki_->writer_cert),
      absl::StrCat("--tls_key=", pki_->writer_key)};
  const std::vector<std::string> stranger_tls = {
      absl::StrCat("--tls_ca=", pki_->ca_cert),
      absl::StrCat("--tls_cert=", pki_->stranger_cert),
      absl::StrCat("--tls_key=", pki_->stranger_key)};
  auto with = [](std::vector<std::string> a,
                 std::initializer_list<std::string> more) {
    a.insert(a.end(), more);
    return a;
  };
  EXPECT_EQ(Cli(with(writer_tls, {"stats"})), 0);
  EXPECT_EQ(Cli(with(writer_tls, {"health"})), 0);
  // Untrusted (no client certificate): the handshake fails.
  EXPECT_EQ(Cli({absl::StrCat("--tls_ca=", pki_->ca_cert), "stats"}), 3);
  // Stranger certificate: reader by default, so close is refused (exit 8)...
  EXPECT_EQ(Cli(with(stranger_tls, {"close", "424242"})), 8);
  // ... and the reader token changes nothing for closing, but it is accepted.
  EXPECT_EQ(Cli(with(stranger_tls,
                     {absl::StrCat("--token_file=", token_file), "stats"})),
            0);
}

}  // namespace
}  // namespace fanin::opstest
