// TlsContext: one raw listener's TLS configuration (OpenSSL 3), loaded from
// PEM files and re-loaded on demand (SIGHUP). Each accepted connection takes
// a server-side SSL from the context current at that moment; connections
// already open keep the one they started with.
//
// Example:
//   TlsFiles files{.cert_file = "server.pem", .key_file = "server.key"};
//   absl::StatusOr<std::unique_ptr<TlsContext>> tls =
//   TlsContext::Create(files); if (!tls.ok()) return tls.status();  // names
//   the file and what is wrong SSL* ssl = (*tls)->NewSsl();         // for
//   TlsTransport absl::Status s = (*tls)->Reload();   // the old context stays
//   on error
//
// Settings: TLS 1.2 and 1.3 only, no renegotiation, server cipher
// preference, no server-side session cache (one TLS 1.3 ticket instead: an
// idle connection holds no cache entry), SSL_MODE_RELEASE_BUFFERS (an idle
// connection holds no record buffers), partial writes with a moving write
// buffer, read-ahead (one recv per burst of records). With a client CA,
// client certificates are required and verified against it.
//
// Thread: any; NewSsl and Reload may race (a mutex guards the swap).
#ifndef FANIN_SERVER_NET_TLS_CONTEXT_H_
#define FANIN_SERVER_NET_TLS_CONTEXT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct ssl_st;
struct ssl_ctx_st;

namespace fanin::net {

struct TlsFiles {
  std::string cert_file;  // PEM certificate chain, leaf first
  std::string key_file;   // PEM private key of the leaf
  // PEM CA certificates; non-empty: client certificates required, verified
  std::string client_ca_file;
  // ALPN protocols the server accepts, in its order of preference; empty:
  // ALPN is not negotiated.
  std::vector<std::string> alpn;
};

class TlsContext {
 public:
  // Loads and checks the files (the key must match the certificate).
  // INVALID_ARGUMENT naming the file and OpenSSL's reason.
  static absl::StatusOr<std::unique_ptr<TlsContext>> Create(TlsFiles files);
  ~TlsContext();

  // A new server-side SSL from the current context; null only when OpenSSL
  // is out of memory. The caller owns it (SSL_free, or hand it to
  // TlsTransport).
  ssl_st* NewSsl();

  // Re-reads the files; on error the current context stays and the error
  // (as Create's) is returned.
  absl::Status Reload();

  bool verifies_clients() const { return !files_.client_ca_file.empty(); }
  const TlsFiles& files() const { return files_; }
  uint64_t reloads() const { return reloads_.load(std::memory_order_relaxed); }
  uint64_t reload_failures() const {
    return reload_failures_.load(std::memory_order_relaxed);
  }

 private:
  explicit TlsContext(TlsFiles files) : files_(std::move(files)) {}

  const TlsFiles files_;
  std::string alpn_wire_;  // files_.alpn in wire form; set once in Create
  absl::Mutex mu_;
  ssl_ctx_st* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> reload_failures_{0};
};

}  // namespace fanin::net

#endif  // FANIN_SERVER_NET_TLS_CONTEXT_H_
