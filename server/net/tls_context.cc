#include "server/net/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace fanin::net {
namespace {

// OpenSSL's reason for the last failure, and the queue emptied.
std::string OpenSslError() {
  unsigned long code = ERR_peek_last_error();
  std::string reason = code == 0 ? "unknown error" : [code] {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    return std::string(buf);
  }();
  ERR_clear_error();
  return reason;
}

absl::Status FileError(const std::string& what, const std::string& path,
                       const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": ", why));
}

// The ALPN list in wire form: one length byte before each protocol.
std::string AlpnWire(const std::vector<std::string>& protocols) {
  std::string out;
  for (const std::string& p : protocols) {
    out.push_back(static_cast<char>(p.size()));
    out += p;
  }
  return out;
}

// The first of the server's protocols that the client offered; none in
// common is not fatal: the handshake goes on without ALPN.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
               const unsigned char* in, unsigned int inlen, void* arg) {
  const std::string* server = static_cast<const std::string*>(arg);
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(
          &selected, outlen,
          reinterpret_cast<const unsigned char*>(server->data()),
          static_cast<unsigned int>(server->size()), in,
          inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// A fresh SSL_CTX from the files; `alpn_wire` must outlive it.
absl::StatusOr<SSL_CTX*> LoadContext(const TlsFiles& files,
                                     const std::string* alpn_wire) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    return absl::InternalError(absl::StrCat("SSL_CTX_new: ", OpenSslError()));
  }
  auto fail = [ctx](absl::Status s) {
    SSL_CTX_free(ctx);
    return s;
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                            SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  static const unsigned char kSessionContext[] = "fanin";
  SSL_CTX_set_session_id_context(ctx, kSessionContext,
                                 sizeof(kSessionContext) - 1);
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
    return fail(FileError("certificate", files.cert_file, OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(),
                                  SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return fail(FileError(
          "key", files.key_file,
          absl::StrCat("does not match certificate ", files.cert_file)));
    }
    return fail(FileError("key", files.key_file, OpenSslError()));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail(
        FileError("key", files.key_file,
                  absl::StrCat("does not match certificate ", files.cert_file,
                               " (", OpenSslError(), ")")));
  }
  if (!files.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, files.client_ca_file.c_str(),
                                      nullptr) != 1) {
      return fail(FileError("client CA", files.client_ca_file, OpenSslError()));
    }
    STACK_OF(X509_NAME)* names =
        SSL_load_client_CA_file(files.client_ca_file.c_str());
    if (names == nullptr) {
      return fail(FileError("client CA", files.client_ca_file,
                            "no certificate in the file"));
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
  }
  if (!alpn_wire->empty()) {
    SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn,
                               const_cast<std::string*>(alpn_wire));
  }
  ERR_clear_error();
  return ctx;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Create(TlsFiles files) {
  for (const std::string& p : files.alpn) {
    if (p.empty() || p.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("ALPN protocol \"", p, "\": want 1 to 255 bytes"));
    }
  }
  auto tls = std::unique_ptr<TlsContext>(new TlsContext(std::move(files)));
  tls->alpn_wire_ = AlpnWire(tls->files_.alpn);
  auto ctx = LoadContext(tls->files_, &tls->alpn_wire_);
  if (!ctx.ok()) return ctx.status();
  absl::MutexLock lock(&tls->mu_);
  tls->ctx_ = *ctx;
  return tls;
}

TlsContext::~TlsContext() {
  absl::MutexLock lock(&mu_);
  SSL_CTX_free(ctx_);
}

SSL* TlsContext::NewSsl() {
  // SSL_new takes its own reference to the context, so a Reload that swaps
  // it out leaves this connection's intact.
  absl::MutexLock lock(&mu_);
  return SSL_new(ctx_);
}

absl::Status TlsContext::Reload() {
  auto ctx = LoadContext(files_, &alpn_wire_);
  if (!ctx.ok()) {
    reload_failures_.fetch_add(1, std::memory_order_relaxed);
    return ctx.status();
  }
  SSL_CTX* old = nullptr;
  {
    absl::MutexLock lock(&mu_);
    old = ctx_;
    ctx_ = *ctx;
  }
  SSL_CTX_free(old);  // freed once the last connection using it is gone
  reloads_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace fanin::net
