// TLS termination and the PROXY protocol on raw listeners, on every poller,
// with real sockets, a real gRPC server and an OpenSSL client: plaintext in
// Data byte for byte, Write decrypted at the client, close_notify on a
// graceful close and a reset on abort, client certificates, certificate
// reload, slow handshakes, back-pressure, pull mode, PROXY v1/v2 addresses
// (and the per-IP limit that follows them), garbage headers, PROXY + TLS.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fanin/v1/fanin.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fanin_server.h"
#include "server/net/proxy_protocol.h"
#include "tests/server/e2e_util.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_client.h"
#include "tests/testing/tls_client.h"

namespace fanin::servertest {
namespace {

using fanin::testing::ConnectTcp;
using fanin::testing::ListenerPki;
using fanin::testing::MakeListenerPki;
using fanin::testing::TlsClient;
using fanin::testing::TlsClientOptions;
using fanin::testing::WaitFor;
using fanin::v1::Event;

std::string TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(base ? base : "/tmp", "/tlsXXXXXX");
  char* dir = mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

// The byte at offset i of a long client stream.
char PatternByte(uint64_t i) {
  return static_cast<char>(((i * 2654435761u) >> 13) ^ (i >> 16));
}
std::string Pattern(uint64_t from, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = PatternByte(from + i);
  return out;
}

void PutBe16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xFF));
}

// A v2 PROXY header for TCP over IPv4 with `tlvs` (already encoded), and a
// CRC32C TLV last when asked (corrupted when `bad_crc`).
std::string ProxyV2(const std::string& src, const std::string& dst,
                    uint16_t sport, uint16_t dport, const std::string& tlvs,
                    bool crc = false, bool bad_crc = false) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h.push_back('\x21');  // v2, PROXY
  h.push_back('\x11');  // TCP over IPv4
  std::string block(12, '\0');
  inet_pton(AF_INET, src.c_str(), block.data());
  inet_pton(AF_INET, dst.c_str(), block.data() + 4);
  block[8] = static_cast<char>(sport >> 8);
  block[9] = static_cast<char>(sport & 0xFF);
  block[10] = static_cast<char>(dport >> 8);
  block[11] = static_cast<char>(dport & 0xFF);
  block += tlvs;
  if (crc) block += std::string("\x03\x00\x04\0\0\0\0", 7);
  PutBe16(&h, static_cast<uint16_t>(block.size()));
  h += block;
  if (crc) {
    uint32_t c = net::Crc32c(h);
    if (bad_crc) c ^= 1;
    const size_t at = h.size() - 4;
    h[at] = static_cast<char>(c >> 24);
    h[at + 1] = static_cast<char>(c >> 16);
    h[at + 2] = static_cast<char>(c >> 8);
    h[at + 3] = static_cast<char>(c);
  }
  return h;
}

std::string Tlv(uint8_t type, const std::string& value) {
  std::string out(1, static_cast<char>(type));
  PutBe16(&out, static_cast<uint16_t>(value.size()));
  return out + value;
}

class TlsListenerTest : public ::testing::TestWithParam<reactor::PollerKind> {
 protected:
  static void SetUpTestSuite() {
    auto pki = MakeListenerPki(TempDir());
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = new ListenerPki(*std::move(pki));
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  // Listeners: "tls" (ALPN fanin/1, h2), "mtls" (client CA), "proxy"
  // (PROXY, plain), "proxytls" (PROXY then TLS), "plain".
  ServerConfig Config(const ListenerPki& pki) {
    ServerConfig c = BaseConfig(GetParam());
    c.core.listen = {{"tls", net::Endpoint::Loopback(0)},
                     {"mtls", net::Endpoint::Loopback(0)},
                     {"proxy", net::Endpoint::Loopback(0)},
                     {"proxytls", net::Endpoint::Loopback(0)},
                     {"plain", net::Endpoint::Loopback(0)}};
    net::TlsFiles files{.cert_file = pki.server_cert,
                        .key_file = pki.server_key};
    net::TlsFiles alpn = files;
    alpn.alpn = {"fanin/1", "h2"};
    net::TlsFiles mutual = files;
    mutual.client_ca_file = pki.ca_cert;
    c.core.tls = {{"tls", alpn}, {"mtls", mutual}, {"proxytls", files}};
    c.core.proxy_protocol_listeners = {"proxy", "proxytls"};
    return c;
  }
  ServerConfig Config() { return Config(*pki_); }

  void Start(ServerConfig config) {
    server_ = StartServer(std::move(config));
    ASSERT_NE(server_, nullptr);
    stub_ = NewStub(server_->grpc_address());
    watch_ = Subscriber::Start(server_->grpc_address(), LosslessRequest());
    ASSERT_TRUE(watch_->WaitStarted(Deadline()).ok());
  }

  std::unique_ptr<TlsClient> Tls(const std::string& listener,
                                 TlsClientOptions options = {}) {
    if (options.ca_file.empty()) options.ca_file = pki_->ca_cert;
    auto client =
        TlsClient::Connect(ListenAddress(*server_, listener), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  fanin::v1::GetStatsResponse Stats() {
    fanin::v1::GetStatsResponse r;
    auto context = NewContext();
    EXPECT_TRUE(stub_->GetStats(context.get(), {}, &r).ok());
    return r;
  }

  grpc::Status Write(uint64_t id, const std::string& data, bool close_after) {
    fanin::v1::WriteRequest request;
    request.set_connection_id(id);
    request.set_data(data);
    request.set_close_after(close_after);
    fanin::v1::WriteResponse response;
    auto context = NewContext();
    return stub_->Write(context.get(), request, &response);
  }

  grpc::Status Close(uint64_t id, bool abort) {
    fanin::v1::CloseConnectionRequest request;
    request.set_connection_id(id);
    request.set_abort(abort);
    fanin::v1::CloseConnectionResponse response;
    auto context = NewContext();
    return stub_->CloseConnection(context.get(), request, &response);
  }

  const Event& OpenedOf(uint64_t id) {
    snapshot_ = watch_->Snapshot();
    return snapshot_.events.at(snapshot_.opened.at(id));
  }

  // Every event of `listener`.
  std::vector<Event> EventsOfListener(const std::string& listener) {
    std::vector<Event> out;
    for (const Event& e : watch_->Snapshot().events) {
      if (e.listener() == listener) out.push_back(e);
    }
    return out;
  }

  // Waits until the id of the connection opened from `remote`.
  uint64_t WaitRemote(const std::string& remote) {
    uint64_t id = 0;
    watch_->WaitUntil(
        [&](const Subscriber::State& s) {
          auto it = s.id_by_remote.find(remote);
          if (it == s.id_by_remote.end()) return false;
          id = it->second;
          return true;
        },
        Deadline());
    return id;
  }

  bool WaitStats(
      absl::FunctionRef<bool(const fanin::v1::GetStatsResponse&)> pred) {
    return WaitFor([&] { return pred(Stats()); }, Deadline());
  }

  static ListenerPki* pki_;
  std::unique_ptr<FaninServer> server_;
  std::unique_ptr<fanin::v1::FanIn::Stub> stub_;
  std::unique_ptr<Subscriber> watch_;
  Subscriber::State snapshot_;
};

ListenerPki* TlsListenerTest::pki_ = nullptr;

TEST_P(TlsListenerTest, DataIsTheExactPlaintextAndOpenedDescribesTheSession) {
  Start(Config());
  auto client =
      Tls("tls", {.server_name = "dev.example", .alpn = {"h2", "fanin/1"}});
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  const Event& opened = OpenedOf(id);
  ASSERT_TRUE(opened.opened().has_tls());
  EXPECT_FALSE(opened.opened().has_proxy());
  const fanin::v1::TlsInfo& tls = opened.opened().tls();
  EXPECT_EQ(tls.version(), "TLSv1.3");
  EXPECT_EQ(tls.version(), client->Version());
  EXPECT_FALSE(tls.cipher().empty());
  EXPECT_EQ(tls.server_name(), "dev.example");
  EXPECT_EQ(tls.alpn(), "fanin/1") << "the server's preference wins";
  EXPECT_EQ(client->Alpn(), "fanin/1");
  EXPECT_TRUE(tls.peer_subject().empty());

  // Far more than a record, a read chunk and the socket buffers.
  const std::string bytes = RandomBytes(700 << 10, 17);
  ASSERT_TRUE(client->SendAll(bytes).ok());
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        auto it = s.data_bytes_by_id.find(id);
        return it != s.data_bytes_by_id.end() && it->second >= bytes.size();
      },
      Deadline()));
  EXPECT_EQ(PayloadOf(watch_->Snapshot().events, id), bytes);

  // The client's close_notify is the end of its stream; fanin answers with
  // its own before closing.
  ASSERT_TRUE(client->SendCloseNotify().ok());
  TlsClient::End end = client->ReadToEnd(Deadline());
  EXPECT_EQ(end.how, TlsClient::End::kCloseNotify) << end.error;
  auto closed = watch_->WaitClosed(id, Deadline());
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_PEER_CLOSED);
  EXPECT_EQ(closed->closed().bytes_received(), bytes.size());
  std::vector<fanin::v1::EventKind> kinds;
  for (const Event& e : EventsOf(watch_->Snapshot().events, id)) {
    if (KindOf(e) != fanin::v1::EVENT_KIND_DATA) kinds.push_back(KindOf(e));
  }
  EXPECT_EQ(kinds,
            (std::vector<fanin::v1::EventKind>{
                fanin::v1::EVENT_KIND_OPENED, fanin::v1::EVENT_KIND_READ_CLOSED,
                fanin::v1::EVENT_KIND_CLOSED}));

  // Plain TCP: no tls message.
  auto plain = ConnectTcp(ListenAddress(*server_, "plain"));
  ASSERT_TRUE(plain.ok());
  const uint64_t plain_id = watch_->WaitOpened(plain->fd(), Deadline());
  ASSERT_NE(plain_id, 0u);
  EXPECT_FALSE(OpenedOf(plain_id).opened().has_tls());
  EXPECT_EQ(Stats().tls_handshakes(), 1u);
}

TEST_P(TlsListenerTest, WriteArrivesDecryptedAndGracefulCloseSendsCloseNotify) {
  Start(Config());
  auto client = Tls("tls");
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  // More than the socket takes at once: part of it queues (as plaintext)
  // and goes out as the client reads.
  const std::string reply = RandomBytes(3 << 20, 5);
  ASSERT_TRUE(Write(id, reply.substr(0, 1 << 20), false).ok());
  ASSERT_TRUE(Write(id, reply.substr(1 << 20), false).ok());
  ASSERT_TRUE(Close(id, /*abort=*/false).ok());
  TlsClient::End end = client->ReadToEnd(Deadline());
  EXPECT_EQ(end.how, TlsClient::End::kCloseNotify) << end.error;
  EXPECT_EQ(end.data.size(), reply.size());
  EXPECT_TRUE(end.data == reply) << "the plaintext differs";
  client.reset();  // the client's FIN ends the linger
  auto closed = watch_->WaitClosed(id, Deadline());
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(),
            fanin::v1::CLOSE_REASON_CLOSED_BY_SUBSCRIBER);
  EXPECT_EQ(closed->closed().bytes_sent(), reply.size()) << "plaintext bytes";
}

TEST_P(TlsListenerTest, AbortIsAReset) {
  Start(Config());
  auto client = Tls("tls");
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(Write(id, "bye", false).ok());
  ASSERT_TRUE(client->RecvExactly(3).ok());
  ASSERT_TRUE(Close(id, /*abort=*/true).ok());
  TlsClient::End end = client->ReadToEnd(Deadline());
  EXPECT_EQ(end.how, TlsClient::End::kReset) << end.error;
}

TEST_P(TlsListenerTest, OutboundLimitCountsPlaintext) {
  ServerConfig config = Config();
  config.core.max_outbound_bytes = 64 << 10;
  Start(std::move(config));
  auto client = Tls("tls");
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  EXPECT_EQ(Write(id, std::string((64 << 10) + 1, 'x'), false).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Write(id, std::string(64 << 10, 'y'), false).ok());
  auto got = client->RecvExactly(64 << 10);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string(64 << 10, 'y'));
}

TEST_P(TlsListenerTest, ClientCertificatesAreRequiredAndVerified) {
  Start(Config());
  auto good = Tls(
      "mtls", {.cert_file = pki_->client_cert, .key_file = pki_->client_key});
  ASSERT_NE(good, nullptr);
  const uint64_t id = watch_->WaitOpened(good->fd(), Deadline());
  ASSERT_NE(id, 0u);
  const fanin::v1::TlsInfo& tls = OpenedOf(id).opened().tls();
  EXPECT_EQ(tls.peer_subject(), "CN=device-7");
  EXPECT_EQ(
      std::vector<std::string>(tls.peer_sans().begin(), tls.peer_sans().end()),
      (std::vector<std::string>{"DNS:device-7.example",
                                "URI:spiffe://fanin.test/device-7"}));

  // No certificate, and one from another CA: refused (TLS 1.3 clients learn
  // it on their first read), counted, and never Opened.
  for (bool rogue : {false, true}) {
    TlsClientOptions options;
    if (rogue) {
      options.cert_file = pki_->rogue_cert;
      options.key_file = pki_->rogue_key;
    }
    options.ca_file = pki_->ca_cert;
    auto refused = TlsClient::Connect(ListenAddress(*server_, "mtls"), options);
    if (refused.ok()) {
      TlsClient::End end = (*refused)->ReadToEnd(Deadline());
      EXPECT_NE(end.how, TlsClient::End::kTimeout);
      EXPECT_TRUE(end.data.empty());
    }
  }
  ASSERT_TRUE(WaitStats([](const fanin::v1::GetStatsResponse& s) {
    return s.tls_client_cert_failures() == 2;
  }));
  EXPECT_EQ(Stats().tls_handshake_failures(), 2u);
  EXPECT_EQ(Stats().tls_handshakes(), 1u);
  size_t opened = 0;
  for (const Event& e : EventsOfListener("mtls")) {
    opened += KindOf(e) == fanin::v1::EVENT_KIND_OPENED;
  }
  EXPECT_EQ(opened, 1u);
}

TEST_P(TlsListenerTest, ReloadSwapsTheCertificateForNewConnections) {
  auto pki = MakeListenerPki(TempDir(), "before.example");
  ASSERT_TRUE(pki.ok()) << pki.status();
  Start(Config(*pki));
  TlsClientOptions options{.ca_file = pki->ca_cert};
  auto old_client = TlsClient::Connect(ListenAddress(*server_, "tls"), options);
  ASSERT_TRUE(old_client.ok()) << old_client.status();
  EXPECT_EQ((*old_client)->ServerSubject(), "/CN=before.example");
  const uint64_t old_id = watch_->WaitOpened((*old_client)->fd(), Deadline());

  ASSERT_TRUE(fanin::testing::ReplaceServerCert(*pki, "after.example").ok());
  ASSERT_TRUE(server_->ReloadCredentials().ok());
  auto new_client = TlsClient::Connect(ListenAddress(*server_, "tls"), options);
  ASSERT_TRUE(new_client.ok()) << new_client.status();
  EXPECT_EQ((*new_client)->ServerSubject(), "/CN=after.example");
  EXPECT_EQ(Stats().tls_reloads(), 3u) << "three TLS listeners";

  // The open connection keeps its session.
  ASSERT_TRUE((*old_client)->SendAll("still here").ok());
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        auto it = s.data_bytes_by_id.find(old_id);
        return it != s.data_bytes_by_id.end() && it->second == 10;
      },
      Deadline()));

  // A key that does not load: the reload fails, the current one stays.
  {
    std::FILE* f = std::fopen(pki->server_key.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not a key\n", f);
    std::fclose(f);
  }
  EXPECT_FALSE(server_->ReloadCredentials().ok());
  EXPECT_EQ(Stats().tls_reload_failures(), 3u);
  auto third = TlsClient::Connect(ListenAddress(*server_, "tls"), options);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)->ServerSubject(), "/CN=after.example");
}

// Clients that connect and never finish a handshake (slow loris) are closed
// at the handshake timeout, counted, never Opened; a live TLS connection on
// the same loops goes on meanwhile.
TEST_P(TlsListenerTest, SlowHandshakesTimeOutWithoutTouchingOthers) {
  constexpr int kSlow = 20;
  ServerConfig config = Config();
  config.core.tls_handshake_timeout = absl::Milliseconds(700);
  Start(std::move(config));
  auto live = Tls("tls");
  ASSERT_NE(live, nullptr);
  const uint64_t live_id = watch_->WaitOpened(live->fd(), Deadline());
  ASSERT_NE(live_id, 0u);
  std::vector<TcpClient> slow;
  for (int i = 0; i < kSlow; ++i) {
    auto c = ConnectTcp(ListenAddress(*server_, i % 2 ? "tls" : "proxytls"));
    ASSERT_TRUE(c.ok());
    // The start of a record header (and on "proxytls" a whole PROXY header
    // first), then nothing.
    ASSERT_TRUE(
        c->SendAll(i % 2 ? std::string("\x16\x03\x01", 3)
                         : std::string("PROXY TCP4 10.0.0.9 10.0.0.1 1 2\r\n"
                                       "\x16\x03"))
            .ok());
    slow.push_back(*std::move(c));
  }
  // The live connection echoes while the slow ones wait.
  const absl::Time until = absl::Now() + absl::Milliseconds(300);
  int round = 0;
  while (absl::Now() < until) {
    const std::string msg = absl::StrCat("ping ", round++);
    ASSERT_TRUE(Write(live_id, msg, false).ok());
    auto got = live->RecvExactly(msg.size());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, msg);
  }
  for (TcpClient& c : slow) EXPECT_TRUE(c.WaitForPeerClose(Deadline()));
  // A failure is counted just before its connection slot is freed: await
  // both.
  ASSERT_TRUE(WaitStats([](const fanin::v1::GetStatsResponse& s) {
    return s.tls_handshake_timeouts() == kSlow && s.connections_open() == 1;
  })) << Stats().ShortDebugString();
  EXPECT_EQ(Stats().tls_handshake_failures(), static_cast<uint64_t>(kSlow));
  for (const Event& e : watch_->Snapshot().events) {
    EXPECT_EQ(e.connection_id(), live_id)
        << "an event of a connection that never finished its handshake";
  }
  ASSERT_TRUE(live->SendAll("ok").ok());
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        auto it = s.data_bytes_by_id.find(live_id);
        return it != s.data_bytes_by_id.end() && it->second == 2;
      },
      Deadline()));
}

TEST_P(TlsListenerTest, AThousandTlsConnections) {
  constexpr int kClients = 1000;
  Start(Config());
  std::vector<std::unique_ptr<TlsClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c =
        Tls(i % 2 ? "tls" : "proxytls",
            {.preface = i % 2 ? ""
                              : ProxyV2("10.7.0.1", "10.7.0.2",
                                        static_cast<uint16_t>(i), 7000, "")});
    ASSERT_NE(c, nullptr) << "client " << i;
    ASSERT_TRUE(c->SendAll(absl::StrFormat("conn%04d", i)).ok());
    clients.push_back(std::move(c));
  }
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        return s.opened.size() >= kClients && s.data_bytes >= 8u * kClients;
      },
      Deadline(absl::Seconds(120))));
  Subscriber::State s = watch_->Snapshot();
  EXPECT_EQ(s.data_bytes, 8u * kClients);
  EXPECT_EQ(Stats().connections_open(), static_cast<uint64_t>(kClients));
  EXPECT_EQ(Stats().tls_handshakes(), static_cast<uint64_t>(kClients));
  for (auto& c : clients) ASSERT_TRUE(c->SendCloseNotify().ok());
  for (auto& c : clients) {
    EXPECT_EQ(c->ReadToEnd(Deadline()).how, TlsClient::End::kCloseNotify);
  }
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) { return s.closed.size() >= kClients; },
      Deadline(absl::Seconds(120))));
}

// A lossless subscriber that stops reading pauses TLS sockets as it does
// plain ones: the client's writes block, the server reads nothing more, and
// once released every plaintext byte arrives in order.
TEST_P(TlsListenerTest, StalledLosslessSubscriberPausesTlsSockets) {
  constexpr uint64_t kQueueBytes = 256 << 10;
  constexpr uint64_t kLimit = uint64_t{96} << 20;
  ServerConfig config = Config();
  config.hub.lossless_queue_bytes = kQueueBytes;
  config.hub.history_events = 256;
  Start(std::move(config));
  auto client = Tls("tls");
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  watch_->Hold();
  uint64_t sent = 0;
  // Sends the pattern until a piece has waited `stall` (true) or `limit`.
  auto send_until_blocked = [&](uint64_t limit, absl::Duration stall) {
    while (sent < limit) {
      const std::string piece =
          Pattern(sent, std::min<uint64_t>(64 << 10, limit - sent));
      size_t n = 0;
      absl::Status s = client->Send(piece, absl::Now() + stall, &n);
      sent += n;
      if (absl::IsDeadlineExceeded(s)) return true;
      if (!s.ok()) {
        ADD_FAILURE() << s;
        return false;
      }
    }
    return false;
  };
  ASSERT_TRUE(send_until_blocked(kLimit, absl::Seconds(2)))
      << "the client sent " << sent << " bytes and never blocked";
  EXPECT_EQ(server_->hub()->GetStats().paused_subscribers, 1u);
  const uint64_t read_at_block = Stats().bytes_received();
  EXPECT_TRUE(send_until_blocked(kLimit, absl::Seconds(1)));
  EXPECT_EQ(Stats().bytes_received(), read_at_block)
      << "the server read on while paused";

  watch_->Release();
  const uint64_t total = sent + (4 << 20);
  ASSERT_FALSE(send_until_blocked(total, absl::Seconds(30)))
      << "reading did not resume";
  ASSERT_TRUE(client->SendCloseNotify().ok());
  ASSERT_TRUE(watch_->WaitClosed(id, Deadline(absl::Seconds(60))).has_value());
  Subscriber::State s = watch_->Snapshot();
  EXPECT_TRUE(s.gaps.empty());
  const std::string got = PayloadOf(s.events, id);
  ASSERT_EQ(got.size(), total);
  EXPECT_TRUE(got == Pattern(0, total)) << "the plaintext differs";
}

TEST_P(TlsListenerTest, PullModeReadReturnsPlaintext) {
  ServerConfig config = Config();
  config.core.pull_listeners = {"tls"};
  Start(std::move(config));
  auto client = Tls("tls");
  ASSERT_NE(client, nullptr);
  const uint64_t id = watch_->WaitOpened(client->fd(), Deadline());
  ASSERT_NE(id, 0u);
  ASSERT_TRUE(client->SendAll("pulled plaintext").ok());
  ASSERT_TRUE(
      watch_->WaitEvent(id, fanin::v1::EVENT_KIND_READABLE, Deadline()));
  fanin::v1::ReadRequest request;
  request.set_connection_id(id);
  fanin::v1::ReadResponse response;
  auto context = NewContext();
  ASSERT_TRUE(stub_->Read(context.get(), request, &response).ok());
  EXPECT_EQ(response.data(), "pulled plaintext");
}

TEST_P(TlsListenerTest, ProxyV1AndV2HeadersSetTheAddresses) {
  Start(Config());
  // v1, with the stream's first bytes in the same segment.
  auto v1 = ConnectTcp(ListenAddress(*server_, "proxy"));
  ASSERT_TRUE(v1.ok());
  ASSERT_TRUE(
      v1->SendAll("PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\nhello")
          .ok());
  const uint64_t id1 = WaitRemote("203.0.113.7:40001");
  ASSERT_NE(id1, 0u);
  const Event& o1 = OpenedOf(id1);
  EXPECT_EQ(o1.opened().local_address(), "198.51.100.1:443");
  EXPECT_EQ(o1.opened().proxy().version(), 1u);
  EXPECT_EQ(o1.opened().proxy().proxy_address(), LocalAddressOf(v1->fd()));
  EXPECT_FALSE(o1.opened().has_tls());
  ASSERT_TRUE(v1->SendAll(" world").ok());
  ASSERT_TRUE(watch_->WaitUntil(
      [&](const Subscriber::State& s) {
        auto it = s.data_bytes_by_id.find(id1);
        return it != s.data_bytes_by_id.end() && it->second == 11;
      },
      Deadline()));
  EXPECT_EQ(PayloadOf(watch_->Snapshot().events, id1), "hello world");

  // v2 with TLVs (and a CRC32C), arriving one byte at a time.
  const std::string ssl_tlv = std::string("\x01\0\0\0\0", 5) +
                              Tlv(0x21, "TLSv1.3") + Tlv(0x22, "device-9") +
                              Tlv(0x23, "TLS_AES_128_GCM_SHA256");
  const std::string v2_header =
      ProxyV2("192.0.2.10", "192.0.2.20", 5555, 8443,
              Tlv(0x02, "api.example") + Tlv(0x05, "req-42") +
                  Tlv(0x20, ssl_tlv) + Tlv(0xE0, "custom"),
              /*crc=*/true);
  auto v2 = ConnectTcp(ListenAddress(*server_, "proxy"));
  ASSERT_TRUE(v2.ok());
  for (char c : v2_header) ASSERT_TRUE(v2->SendAll(std::string(1, c)).ok());
  const uint64_t id2 = WaitRemote("192.0.2.10:5555");
  ASSERT_NE(id2, 0u);
  const fanin::v1::Opened& o2 = OpenedOf(id2).opened();
  EXPECT_EQ(o2.local_address(), "192.0.2.20:8443");
  EXPECT_EQ(o2.proxy().version(), 2u);
  EXPECT_EQ(o2.proxy().authority(), "api.example");
  EXPECT_EQ(o2.proxy().unique_id(), "req-42");
  EXPECT_TRUE(o2.proxy().ssl().client_ssl());
  EXPECT_TRUE(o2.proxy().ssl().verified());
  EXPECT_EQ(o2.proxy().ssl().version(), "TLSv1.3");
  EXPECT_EQ(o2.proxy().ssl().cn(), "device-9");
  EXPECT_EQ(o2.proxy().ssl().cipher(), "TLS_AES_128_GCM_SHA256");
  ASSERT_EQ(o2.proxy().tlvs_size(), 5);
  EXPECT_EQ(o2.proxy().tlvs(3).type(), 0xE0u);
  EXPECT_EQ(o2.proxy().tlvs(3).value(), "custom");

  // ListConnections names the client, not the balancer.
  fanin::v1::ListConnectionsRequest list;
  list.set_listener("proxy");
  fanin::v1::ListConnectionsResponse listed;
  auto context = NewContext();
  ASSERT_TRUE(stub_->ListConnections(context.get(), list, &listed).ok());
  std::vector<std::string> remotes;
  for (const auto& c : listed.connections()) {
    remotes.push_back(c.remote_address());
  }
  EXPECT_EQ(remotes,
            (std::vector<std::string>{"203.0.113.7:40001", "192.0.2.10:5555"}));
  EXPECT_EQ(Stats().proxy_headers(), 2u);
}

TEST_P(TlsListenerTest, PerIpLimitFollowsTheProxyAddresses) {
  ServerConfig config = Config();
  config.core.max_connections_per_ip = 1;
  Start(std::move(config));
  const std::string address = ListenAddress(*server_, "proxy");
  // All three sockets come from 127.0.0.1; the headers name two clients.
  auto a = ConnectTcp(address);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->SendAll("PROXY TCP4 10.0.0.1 10.0.0.100 1000 80\r\n").ok());
  ASSERT_NE(WaitRemote("10.0.0.1:1000"), 0u);
  auto b = ConnectTcp(address);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(b->SendAll("PROXY TCP4 10.0.0.1 10.0.0.100 1001 80\r\n").ok());
  const uint64_t rejected = WaitRemote("10.0.0.1:1001");
  ASSERT_NE(rejected, 0u);
  auto closed = watch_->WaitClosed(rejected, Deadline());
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->closed().reason(), fanin::v1::CLOSE_REASON_REJECTED);
  EXPECT_TRUE(absl::StrContains(closed->closed().detail(), "10.0.0.1"));
  EXPECT_TRUE(b->WaitForPeerClose(Deadline()));
  auto c = ConnectTcp(address);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->SendAll("PROXY TCP4 10.0.0.2 10.0.0.100 1000 80\r\n").ok());
  const uint64_t other = WaitRemote("10.0.0.2:1000");
  ASSERT_NE(other, 0u);
  EXPECT_FALSE(watch_->Snapshot().closed.contains(other));
  EXPECT_EQ(Stats().connections_rejected(), 1u);
  EXPECT_EQ(Stats().connections_open(), 2u);
  // Once the first client's connection ends, its IP may connect again.
  a->Close();
  ASSERT_TRUE(watch_->WaitUntil(
      [](const Subscriber::State& s) { return s.closed.size() >= 2; },
      Deadline()));
  auto d = ConnectTcp(address);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d->SendAll("PROXY TCP4 10.0.0.1 10.0.0.100 1002 80\r\n").ok());
  const uint64_t again = WaitRemote("10.0.0.1:1002");
  ASSERT_NE(again, 0u);
  ASSERT_TRUE(d->SendAll("x").ok());
  ASSERT_TRUE(watch_->WaitEvent(again, fanin::v1::EVENT_KIND_DATA, Deadline()));
}

TEST_P(TlsListenerTest, GarbageAndLateHeadersAreClosedAndCounted) {
  ServerConfig config = Config();
  config.core.proxy_header_timeout = absl::Milliseconds(500);
  Start(std::move(config));
  const std::string address = ListenAddress(*server_, "proxy");
  const std::vector<std::string> garbage = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "PROXY TCP4 300.0.0.1 10.0.0.1 1 2\r\n",
      "PROXY TCP4 10.0.0.1 10.0.0.1 1 2\n",
      std::string(200, 'P'),
      ProxyV2("10.0.0.1", "10.0.0.2", 1, 2, Tlv(0x02, "x"), true, true),
      std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff", 16),
  };
  std::vector<TcpClient> clients;
  for (const std::string& g : garbage) {
    auto c = ConnectTcp(address);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->SendAll(g).ok());
    clients.push_back(*std::move(c));
  }
  auto late = ConnectTcp(address);  // a header that never ends
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(late->SendAll("PROXY TCP4 10.0.0.1").ok());
  auto silent = ConnectTcp(address);  // nothing at all
  ASSERT_TRUE(silent.ok());
  for (TcpClient& c : clients) EXPECT_TRUE(c.WaitForPeerClose(Deadline()));
  EXPECT_TRUE(late->WaitForPeerClose(Deadline()));
  EXPECT_TRUE(silent->WaitForPeerClose(Deadline()));
  ASSERT_TRUE(WaitStats([&](const fanin::v1::GetStatsResponse& s) {
    return s.proxy_header_failures() == garbage.size() + 2 &&
           s.connections_open() == 0;
  })) << Stats().ShortDebugString();
  EXPECT_EQ(Stats().proxy_header_timeouts(), 2u);
  EXPECT_EQ(Stats().proxy_headers(), 0u);
  EXPECT_TRUE(EventsOfListener("proxy").empty())
      << "a refused header produced events";
}

TEST_P(TlsListenerTest, ProxyHeaderThenTls) {
  Start(Config());
  // The header and the ClientHello leave in one segment.
  auto client =
      Tls("proxytls", {.server_name = "edge.example",
                       .preface = ProxyV2("198.18.0.5", "198.18.0.1", 6000, 443,
                                          Tlv(0x02, "edge.example"))});
  ASSERT_NE(client, nullptr);
  const uint64_t id = WaitRemote("198.18.0.5:6000");
  ASSERT_NE(id, 0u);
  const fanin::v1::Opened& o = OpenedOf(id).opened();
  EXPECT_EQ(o.local_address(), "198.18.0.1:443");
  EXPECT_EQ(o.proxy().authority(), "edge.example");
  EXPECT_EQ(o.tls().server_name(), "edge.example");
  ASSERT_TRUE(client->SendAll("through both").ok());
  ASSERT_TRUE(watch_->WaitEvent(id, fanin::v1::EVENT_KIND_DATA, Deadline()));
  EXPECT_EQ(PayloadOf(watch_->Snapshot().events, id), "through both");
  ASSERT_TRUE(Write(id, "back", true).ok());
  TlsClient::End end = client->ReadToEnd(Deadline());
  EXPECT_EQ(end.data, "back");
  EXPECT_EQ(end.how, TlsClient::End::kCloseNotify);

  // TLS without the header it needs: refused as a PROXY failure.
  auto bare = Tls("tls");  // (a working one, for contrast)
  ASSERT_NE(bare, nullptr);
  auto no_header = TlsClient::Connect(
      ListenAddress(*server_, "proxytls"),
      {.ca_file = pki_->ca_cert, .timeout = absl::Seconds(10)});
  EXPECT_FALSE(no_header.ok());
  ASSERT_TRUE(WaitStats([](const fanin::v1::GetStatsResponse& s) {
    return s.proxy_header_failures() == 1;
  }));
}

INSTANTIATE_TEST_SUITE_P(AllPollers, TlsListenerTest,
                         ::testing::ValuesIn(AllPollerKinds()), PollerTestName);

}  // namespace
}  // namespace fanin::servertest
