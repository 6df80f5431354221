// TlsTransport: one server-side TLS session over a non-blocking socket,
// driven by the connection's loop. OpenSSL reads and writes the fd through a
// BIO of fanin's own (recv, and send with MSG_NOSIGNAL: a peer that resets
// cannot raise SIGPIPE), which first serves any bytes read with a PROXY
// header. No call here ever blocks: each returns kWouldBlock with the
// readiness it waits for.
//
// Example (loop thread):
//   TlsTransport tls(context->NewSsl(), fd, /*prefix=*/"");
//   IoResult r = tls.Handshake();  // again on each readiness until kOk
//   ... tls.Read(buf, n), tls.Write(data, n), tls.CloseNotify()
//
// Thread: the owning loop's. Does not own the fd; owns the SSL.
#ifndef FANIN_SERVER_NET_TLS_TRANSPORT_H_
#define FANIN_SERVER_NET_TLS_TRANSPORT_H_

#include <string>
#include <vector>

#include "server/net/transport.h"

struct ssl_st;

namespace fanin::net {

// What an established session is, for the Opened event.
struct TlsInfo {
  std::string version;      // "TLSv1.3"
  std::string cipher;       // "TLS_AES_128_GCM_SHA256"
  std::string server_name;  // SNI, empty when the client sent none
  std::string alpn;         // the negotiated protocol, empty when none
  // A verified client certificate (listeners with a client CA): the subject
  // in RFC 2253 form ("CN=device-7,O=Acme") and its subjectAltNames
  // ("DNS:a.example", "IP:10.0.0.1", "URI:spiffe://x/y", "email:a@b").
  std::string peer_subject;
  std::vector<std::string> peer_sans;
};

class TlsTransport : public Transport {
 public:
  // Why a handshake failed.
  enum class Failure {
    kNone,
    kClosed,      // the peer closed or reset before it finished
    kClientCert,  // no client certificate, or one that did not verify
    kProtocol,    // anything else: not TLS, no common version or cipher...
  };

  // Takes ownership of `ssl` (from TlsContext::NewSsl). `prefix`: bytes of
  // the TLS stream already read from fd.
  TlsTransport(ssl_st* ssl, int fd, std::string prefix);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  // Advances the handshake: kOk once established; kWouldBlock; kError with
  // failure() and a reason in `error`.
  IoResult Handshake();
  Failure failure() const { return failure_; }
  // After the handshake.
  TlsInfo Info() const;

  IoResult Read(char* buf, size_t len) override;
  IoResult Write(const char* data, size_t len) override;
  bool HasPendingInput() const override;
  IoResult CloseNotify() override;
  // True when the last kEof came with the peer's close_notify (false: the
  // TCP stream ended without it, which may be a truncation).
  bool clean_eof() const;

  // State the BIO shares with this transport (internal).
  struct SocketIo {
    int fd = -1;
    std::string prefix;
    size_t prefix_pos = 0;
    int last_errno = 0;  // of the last failed recv/send
    bool eof = false;    // recv returned 0
  };

 private:
  // Maps a failed SSL call's result to an IoResult (for `op` in messages).
  IoResult Classify(int ret, bool writing);

  ssl_st* ssl_;
  SocketIo io_;
  Failure failure_ = Failure::kNone;
};

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_TLS_TRANSPORT_H_
