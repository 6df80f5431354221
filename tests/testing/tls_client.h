// A TLS client for tests of fanin's TLS listeners (OpenSSL 3, a non-blocking
// socket driven with poll and deadlines; no fixed sleeps). It can send
// plaintext first (a PROXY protocol header), offer SNI and ALPN, present a
// client certificate, and tell how the server ended the stream: close_notify,
// a TCP FIN without it, or a reset.
//
// Example:
//   auto tls = TlsClient::Connect(address, {.server_name = "dev.example"});
//   ASSERT_TRUE(tls.ok()) << tls.status();
//   ASSERT_TRUE((*tls)->SendAll("hello").ok());
//   TlsClient::End end = (*tls)->ReadToEnd(Deadline());
//   // end.how == TlsClient::End::kCloseNotify after a graceful close
//
// Thread: one at a time. Writes never raise SIGPIPE (it is ignored once a
// client is made).
#ifndef FANIN_TESTS_TESTING_TLS_CLIENT_H_
#define FANIN_TESTS_TESTING_TLS_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/testing/tcp_client.h"

struct ssl_st;
struct ssl_ctx_st;

namespace fanin::testing {

struct TlsClientOptions {
  // Verify the server's certificate against this CA (empty: do not verify).
  std::string ca_file;
  // A client certificate and its key (PEM), for listeners that require one.
  std::string cert_file, key_file;
  std::string server_name;        // SNI (empty: none)
  std::vector<std::string> alpn;  // offered protocols
  // Plaintext sent before the handshake (e.g. a PROXY protocol header).
  std::string preface;
  // Connect from this 127.x.y.z source (empty: the kernel's choice).
  std::string source_ip;
  // Handshake only when asked (Handshake()), e.g. to send a preface late.
  bool defer_handshake = false;
  absl::Duration timeout = absl::Seconds(20);
};

class TlsClient {
 public:
  // Connects (and, unless deferred, handshakes) within options.timeout.
  static absl::StatusOr<std::unique_ptr<TlsClient>> Connect(
      const std::string& address, const TlsClientOptions& options = {});
  ~TlsClient();

  int fd() const { return tcp_.fd(); }
  TcpClient& tcp() { return tcp_; }

  absl::Status Handshake(absl::Time deadline);
  absl::Status SendAll(absl::string_view data,
                       absl::Time deadline = DefaultDeadline());
  // As SendAll, counting in *sent what went out before an error or the
  // deadline. Retry with data.substr(*sent) (a record cut short is then
  // finished first).
  absl::Status Send(absl::string_view data, absl::Time deadline, size_t* sent);
  // Exactly n plaintext bytes.
  absl::StatusOr<std::string> RecvExactly(
      size_t n, absl::Time deadline = DefaultDeadline());

  struct End {
    enum How { kCloseNotify, kEofWithoutNotify, kReset, kError, kTimeout };
    How how = kTimeout;
    std::string data;   // plaintext read before the end
    std::string error;  // kError: OpenSSL's reason
  };
  // Reads until the server ends the stream.
  End ReadToEnd(absl::Time deadline = DefaultDeadline());

  // Sends close_notify (then the socket stays open for reading).
  absl::Status SendCloseNotify(absl::Time deadline = DefaultDeadline());

  // The server certificate's subject ("CN=localhost"), "" if none.
  std::string ServerSubject() const;
  // Negotiated version and ALPN.
  std::string Version() const;
  std::string Alpn() const;

 private:
  TlsClient() = default;
  // Waits for what the last SSL call asked; false at the deadline.
  bool Wait(int ssl_error, absl::Time deadline);

  TcpClient tcp_;
  ssl_ctx_st* ctx_ = nullptr;
  ssl_st* ssl_ = nullptr;
};

// Makes self-signed / CA-signed PEM files for listener tests with the
// openssl command under `dir` (see tests/ops/ops_util.h's TestPki for the
// fuller set): a CA, a server certificate for localhost/127.0.0.1 with
// subject CN=`server_cn`, a client certificate (CN=device-7, SAN
// DNS:device-7.example and URI:spiffe://fanin.test/device-7) signed by the
// CA, and a client certificate signed by another CA.
struct ListenerPki {
  std::string dir;
  std::string ca_cert;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string rogue_cert, rogue_key;
};
absl::StatusOr<ListenerPki> MakeListenerPki(
    const std::string& dir, const std::string& server_cn = "localhost");
// Writes a new server certificate and key (subject CN=`cn`, signed by the
// same CA) over pki.server_cert / server_key.
absl::Status ReplaceServerCert(const ListenerPki& pki, const std::string& cn);

}  // namespace fanin::testing

#endif  // FANIN_TESTS_TESTING_TLS_CLIENT_H_
