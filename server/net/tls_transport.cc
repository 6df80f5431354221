#include "server/net/tls_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/reactor/poller.h"

namespace fanin::net {
namespace {

using SocketIo = TlsTransport::SocketIo;

int BioRead(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  auto* io = static_cast<SocketIo*>(BIO_get_data(b));
  if (len <= 0) return 0;
  if (io->prefix_pos < io->prefix.size()) {
    const size_t n =
        std::min(static_cast<size_t>(len), io->prefix.size() - io->prefix_pos);
    std::memcpy(out, io->prefix.data() + io->prefix_pos, n);
    io->prefix_pos += n;
    if (io->prefix_pos == io->prefix.size()) {
      std::string().swap(io->prefix);
      io->prefix_pos = 0;
    }
    return static_cast<int>(n);
  }
  ssize_t n;
  do {
    n = ::recv(io->fd, out, static_cast<size_t>(len), 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) return static_cast<int>(n);
  if (n == 0) {
    io->eof = true;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_read(b);
    return -1;
  }
  io->last_errno = errno;
  return -1;
}

int BioWrite(BIO* b, const char* in, int len) {
  BIO_clear_retry_flags(b);
  auto* io = static_cast<SocketIo*>(BIO_get_data(b));
  if (len <= 0) return 0;
  ssize_t n;
  do {
    n = ::send(io->fd, in, static_cast<size_t>(len),
               MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_write(b);
    return -1;
  }
  io->last_errno = errno;
  return -1;
}

long BioCtrl(BIO* b, int cmd, long, void*) {
  auto* io = static_cast<SocketIo*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return io != nullptr && io->eof ? 1 : 0;
    case BIO_CTRL_PENDING:
      return io == nullptr
                 ? 0
                 : static_cast<long>(io->prefix.size() - io->prefix_pos);
    default:
      return 0;
  }
}

int BioCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

int BioDestroy(BIO*) { return 1; }

// One method table for the process, made on first use (thread-safe static).
BIO_METHOD* SocketMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "fanin socket");
    BIO_meth_set_read(m, BioRead);
    BIO_meth_set_write(m, BioWrite);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_create(m, BioCreate);
    BIO_meth_set_destroy(m, BioDestroy);
    return m;
  }();
  return method;
}

std::string ErrorText(unsigned long code) {
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

std::string NameText(X509_NAME* name) {
  BIO* mem = BIO_new(BIO_s_mem());
  if (mem == nullptr) return "";
  X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(mem, &data);
  std::string out(data, n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(mem);
  return out;
}

std::string Asn1Text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

std::vector<std::string> SubjectAltNames(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    switch (name->type) {
      case GEN_DNS:
        out.push_back(absl::StrCat("DNS:", Asn1Text(name->d.dNSName)));
        break;
      case GEN_EMAIL:
        out.push_back(absl::StrCat("email:", Asn1Text(name->d.rfc822Name)));
        break;
      case GEN_URI:
        out.push_back(
            absl::StrCat("URI:", Asn1Text(name->d.uniformResourceIdentifier)));
        break;
      case GEN_IPADD: {
        const ASN1_OCTET_STRING* ip = name->d.iPAddress;
        char buf[INET6_ADDRSTRLEN] = "";
        const int len = ASN1_STRING_length(ip);
        const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
        if (family != 0 &&
            inet_ntop(family, ASN1_STRING_get0_data(ip), buf, sizeof(buf))) {
          out.push_back(absl::StrCat("IP:", buf));
        }
        break;
      }
      default:
        break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

}  // namespace

TlsTransport::TlsTransport(SSL* ssl, int fd, std::string prefix) : ssl_(ssl) {
  io_.fd = fd;
  io_.prefix = std::move(prefix);
  BIO* bio = BIO_new(SocketMethod());
  BIO_set_data(bio, &io_);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by the SSL
  SSL_set_accept_state(ssl_);
}

TlsTransport::~TlsTransport() { SSL_free(ssl_); }

IoResult TlsTransport::Classify(int ret, bool writing) {
  const int e = SSL_get_error(ssl_, ret);
  IoResult out;
  switch (e) {
    case SSL_ERROR_WANT_READ:
      out = IoResult::Blocked(reactor::kReadable);
      break;
    case SSL_ERROR_WANT_WRITE:
      out = IoResult::Blocked(reactor::kWritable);
      break;
    case SSL_ERROR_ZERO_RETURN:
      out = writing ? IoResult::Errno(EPIPE) : IoResult::Eof();
      break;
    case SSL_ERROR_SYSCALL:
      if (io_.last_errno != 0) {
        out = IoResult::Errno(io_.last_errno);
      } else if (!writing) {
        out = IoResult::Eof();
      } else {
        out = IoResult::Errno(EPIPE);
      }
      break;
    default: {
      const unsigned long code = ERR_peek_last_error();
      if (!writing &&
          ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        out = IoResult::Eof();
      } else if (io_.last_errno != 0) {
        out = IoResult::Errno(io_.last_errno);
      } else {
        out.kind = IoResult::Kind::kError;
        out.error = code == 0 ? "TLS error" : ErrorText(code);
      }
    }
  }
  ERR_clear_error();
  return out;
}

IoResult TlsTransport::Handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) return IoResult::Ok(0);
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) return IoResult::Blocked(reactor::kReadable);
  if (e == SSL_ERROR_WANT_WRITE) return IoResult::Blocked(reactor::kWritable);
  const unsigned long code = ERR_peek_last_error();
  const int reason = ERR_GET_REASON(code);
  IoResult out;
  out.kind = IoResult::Kind::kError;
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    failure_ = Failure::kClientCert;
    out.error = absl::StrCat("client certificate: ",
                             X509_verify_cert_error_string(verify));
  } else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
             reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    failure_ = Failure::kClientCert;
    out.error = ErrorText(code);
  } else if (io_.last_errno != 0 || (code == 0 && io_.eof) ||
             reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    failure_ = Failure::kClosed;
    out.err = io_.last_errno;
    out.error = io_.last_errno != 0 ? std::strerror(io_.last_errno)
                                    : "closed by the peer";
  } else {
    failure_ = Failure::kProtocol;
    out.error = code == 0 ? "handshake failed" : ErrorText(code);
  }
  ERR_clear_error();
  return out;
}

TlsInfo TlsTransport::Info() const {
  TlsInfo info;
  info.version = SSL_get_version(ssl_);
  if (const char* cipher = SSL_get_cipher_name(ssl_)) info.cipher = cipher;
  if (const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) {
    info.server_name = sni;
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  if (alpn != nullptr) {
    info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  }
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (peer != nullptr && SSL_get_verify_result(ssl_) == X509_V_OK) {
    info.peer_subject = NameText(X509_get_subject_name(peer));
    info.peer_sans = SubjectAltNames(peer);
  }
  return info;
}

IoResult TlsTransport::Read(char* buf, size_t len) {
  ERR_clear_error();
  size_t got = 0;
  if (SSL_read_ex(ssl_, buf, len, &got) == 1) return IoResult::Ok(got);
  return Classify(0, /*writing=*/false);
}

IoResult TlsTransport::Write(const char* data, size_t len) {
  ERR_clear_error();
  size_t written = 0;
  if (SSL_write_ex(ssl_, data, len, &written) == 1) {
    return IoResult::Ok(written);
  }
  return Classify(0, /*writing=*/true);
}

bool TlsTransport::HasPendingInput() const {
  return io_.prefix_pos < io_.prefix.size() || SSL_has_pending(ssl_) == 1;
}

IoResult TlsTransport::CloseNotify() {
  ERR_clear_error();
  const int r = SSL_shutdown(ssl_);
  if (r >= 0) return IoResult::Ok(0);  // sent (0: the peer's not seen yet)
  return Classify(r, /*writing=*/true);
}

bool TlsTransport::clean_eof() const {
  return (SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) != 0;
}

}  // namespace fanin::net
