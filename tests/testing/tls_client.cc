#include "tests/testing/tls_client.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/testing/subprocess.h"

namespace fanin::testing {
namespace {

std::string LastError() {
  unsigned long code = ERR_peek_last_error();
  char buf[256] = "unknown TLS error";
  if (code != 0) ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

int PollMillis(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsClient>> TlsClient::Connect(
    const std::string& address, const TlsClientOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  const absl::Time deadline = absl::Now() + options.timeout;
  auto client = std::unique_ptr<TlsClient>(new TlsClient());
  absl::StatusOr<TcpClient> tcp = options.source_ip.empty()
                                      ? ConnectTcp(address, deadline)
                                      : ConnectFrom(options.source_ip, address);
  if (!tcp.ok()) return tcp.status();
  client->tcp_ = *std::move(tcp);
  const int fd = client->tcp_.fd();
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (!options.preface.empty()) {
    absl::Status s = client->tcp_.SendAll(options.preface, deadline);
    if (!s.ok()) return s;
  }
  client->ctx_ = SSL_CTX_new(TLS_client_method());
  if (client->ctx_ == nullptr) return absl::InternalError(LastError());
  SSL_CTX_set_mode(client->ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!options.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(client->ctx_, options.ca_file.c_str(),
                                      nullptr) != 1) {
      return absl::InvalidArgumentError(LastError());
    }
    SSL_CTX_set_verify(client->ctx_, SSL_VERIFY_PEER, nullptr);
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(client->ctx_,
                                           options.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(client->ctx_, options.key_file.c_str(),
                                    SSL_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(LastError());
    }
  }
  if (!options.alpn.empty()) {
    std::string wire;
    for (const std::string& p : options.alpn) {
      wire.push_back(static_cast<char>(p.size()));
      wire += p;
    }
    SSL_CTX_set_alpn_protos(client->ctx_,
                            reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned int>(wire.size()));
  }
  client->ssl_ = SSL_new(client->ctx_);
  SSL_set_fd(client->ssl_, fd);
  if (!options.server_name.empty()) {
    SSL_set_tlsext_host_name(client->ssl_, options.server_name.c_str());
  }
  SSL_set_connect_state(client->ssl_);
  if (!options.defer_handshake) {
    absl::Status s = client->Handshake(deadline);
    if (!s.ok()) return s;
  }
  return client;
}

TlsClient::~TlsClient() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

bool TlsClient::Wait(int ssl_error, absl::Time deadline) {
  pollfd p = {
      fd(),
      static_cast<short>(ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN),
      0};
  while (absl::Now() < deadline) {
    int n = poll(&p, 1, PollMillis(deadline));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
  return false;
}

absl::Status TlsClient::Handshake(absl::Time deadline) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) return absl::OkStatus();
    int e = SSL_get_error(ssl_, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      return absl::UnavailableError(absl::StrCat("handshake: ", LastError()));
    }
    if (!Wait(e, deadline)) {
      return absl::DeadlineExceededError("handshake: deadline");
    }
  }
}

absl::Status TlsClient::SendAll(absl::string_view data, absl::Time deadline) {
  size_t sent = 0;
  return Send(data, deadline, &sent);
}

absl::Status TlsClient::Send(absl::string_view data, absl::Time deadline,
                             size_t* sent) {
  size_t& done = *sent;
  done = 0;
  while (done < data.size()) {
    ERR_clear_error();
    size_t n = 0;
    if (SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n) == 1) {
      done += n;
      continue;
    }
    int e = SSL_get_error(ssl_, 0);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      return absl::UnavailableError(absl::StrCat("write: ", LastError()));
    }
    if (!Wait(e, deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("write: deadline after ", done, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TlsClient::RecvExactly(size_t n,
                                                   absl::Time deadline) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ERR_clear_error();
    size_t m = 0;
    if (SSL_read_ex(ssl_, out.data() + got, n - got, &m) == 1) {
      got += m;
      continue;
    }
    int e = SSL_get_error(ssl_, 0);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      return absl::OutOfRangeError(absl::StrCat(
          "read ended after ", got, " of ", n, " bytes: ", LastError()));
    }
    if (!Wait(e, deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("read: deadline after ", got, " of ", n, " bytes"));
    }
  }
  return out;
}

TlsClient::End TlsClient::ReadToEnd(absl::Time deadline) {
  End end;
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    errno = 0;
    size_t m = 0;
    if (SSL_read_ex(ssl_, buf, sizeof(buf), &m) == 1) {
      end.data.append(buf, m);
      continue;
    }
    const int e = SSL_get_error(ssl_, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!Wait(e, deadline)) {
        end.how = End::kTimeout;
        return end;
      }
      continue;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      end.how = End::kCloseNotify;
    } else if (e == SSL_ERROR_SYSCALL && errno == ECONNRESET) {
      end.how = End::kReset;
    } else if (ERR_GET_REASON(ERR_peek_last_error()) ==
               SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      end.how = End::kEofWithoutNotify;
    } else if (e == SSL_ERROR_SYSCALL && errno == 0) {
      end.how = End::kEofWithoutNotify;
    } else {
      end.how = End::kError;
      end.error = LastError();
      if (errno == ECONNRESET) end.how = End::kReset;
    }
    ERR_clear_error();
    return end;
  }
}

absl::Status TlsClient::SendCloseNotify(absl::Time deadline) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_shutdown(ssl_);
    if (r >= 0) return absl::OkStatus();
    int e = SSL_get_error(ssl_, r);
    if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
      return absl::UnavailableError(LastError());
    }
    if (!Wait(e, deadline)) return absl::DeadlineExceededError("shutdown");
  }
}

std::string TlsClient::ServerSubject() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  char buf[256] = "";
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
  return buf;
}

std::string TlsClient::Version() const { return SSL_get_version(ssl_); }

std::string TlsClient::Alpn() const {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return p == nullptr ? "" : std::string(reinterpret_cast<const char*>(p), n);
}

namespace {

constexpr char kPkiFunctions[] = R"(set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # name cn
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() {  # name cn ca serial extensions
  key "$1.key.new"
  openssl req -new -key "$1.key.new" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$5" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$4" \
    -days 2 -out "$1.pem.new" -extfile "$1.ext" 2>/dev/null
  mv "$1.key.new" "$1.key"
  mv "$1.pem.new" "$1.pem"
}
server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
)";

absl::Status RunScript(const std::string& dir, const std::string& body) {
  const std::string script =
      absl::StrCat(kPkiFunctions, "cd \"", dir, "\"\n", body);
  auto result =
      RunCommand({"/bin/sh", "-c", script}, "", {.timeout = absl::Seconds(60)});
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl failed: ", result->stderr_data));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ListenerPki> MakeListenerPki(const std::string& dir,
                                            const std::string& server_cn) {
  absl::Status s =
      RunScript(dir, absl::StrCat(R"(ca ca fanin-listener-ca
ca rogue-ca fanin-rogue-ca
leaf server ')",
                                  server_cn, R"(' ca 1 "$server_ext"
leaf client device-7 ca 2 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:device-7.example,URI:spiffe://fanin.test/device-7'
leaf rogue device-7 rogue-ca 3 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
)"));
  if (!s.ok()) return s;
  ListenerPki pki;
  pki.dir = dir;
  auto f = [&dir](const char* name) { return absl::StrCat(dir, "/", name); };
  pki.ca_cert = f("ca.pem");
  pki.server_cert = f("server.pem");
  pki.server_key = f("server.key");
  pki.client_cert = f("client.pem");
  pki.client_key = f("client.key");
  pki.rogue_cert = f("rogue.pem");
  pki.rogue_key = f("rogue.key");
  return pki;
}

absl::Status ReplaceServerCert(const ListenerPki& pki, const std::string& cn) {
  return RunScript(
      pki.dir, absl::StrCat("leaf server '", cn, "' ca 9 \"$server_ext\"\n"));
}

}  // namespace fanin::testing
