// Access control for the FanIn service: who may read events and who may act
// on connections.
//
// Two roles; writer implies reader:
//   reader  Subscribe, ListConnections, GetStats, ListNodes, Read
//   writer  also Write and CloseConnection
// A lossless Subscribe can pause the reading of every socket it matches, so
// it needs AuthOptions::lossless_role (writer unless configured otherwise).
// Credentials are bearer tokens ("authorization: Bearer <token>" metadata)
// and, under mutual TLS, the verified client certificate's identity (its
// common name or any subject alternative name). The tokens file has one
// credential per line, role first; '#' starts a comment:
//
//   # role   credential
//   reader   3f9c0e...long-random-token
//   writer   9a71bd...another-token
//   writer   cert:deployer.ops.svc       # a client certificate identity
//
// A verified certificate not named in the file gets
// AuthOptions::cert_default_role. With neither a tokens file nor mutual TLS,
// access control is off (the sidecar/unix-socket deployment) and every call is
// allowed. Health and reflection are separate services and never checked.
//
// Answers: no credential, a malformed authorization header or an unknown
// token: UNAUTHENTICATED; a known credential whose role is too low:
// PERMISSION_DENIED. A presented token that is unknown is refused even when a
// certificate would pass (a wrong credential is never ignored).
//
// Tokens are kept only as SHA-256 digests and never logged; logs name a token
// by its file line.
//
// Thread-safe: Check runs on gRPC threads while Reload (SIGHUP) swaps the
// table under a mutex.
#ifndef FANIN_SERVER_GRPC_AUTH_H_
#define FANIN_SERVER_GRPC_AUTH_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "server/base/log.h"
#include "server/grpc/fanin_service.h"

namespace fanin::grpc_api {

enum class Role { kNone = 0, kReader = 1, kWriter = 2 };

// "none", "reader", "writer"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Role> ParseRole(absl::string_view name);
const char* RoleName(Role role);

// The parsed tokens file.
struct CredentialTable {
  // SHA-256 of the token -> (role, line number).
  struct Entry {
    Role role = Role::kNone;
    int line = 0;
  };
  absl::flat_hash_map<std::string, Entry> tokens;
  // Certificate identity -> role.
  absl::flat_hash_map<std::string, Role> identities;
};

// INVALID_ARGUMENT naming the line (never its token) on a bad line or a
// duplicate token.
absl::StatusOr<CredentialTable> ParseCredentials(absl::string_view text);

struct AuthOptions {
  // Empty: no tokens.
  std::string tokens_file;
  // Mutual TLS is on (the server verifies client certificates).
  bool mtls = false;
  // Role of a verified client certificate that the file does not name.
  Role cert_default_role = Role::kReader;
  // Role a lossless subscription needs (reader or writer).
  Role lossless_role = Role::kWriter;
};

class Authorizer {
 public:
  // Reads tokens_file when given; its error otherwise.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(
      AuthOptions options);

  // Re-reads tokens_file. On error the previous table stays in force.
  absl::Status Reload();

  // Off when there is neither a tokens file nor mutual TLS.
  bool enabled() const { return enabled_; }

  // The ServiceOptions::authorize hook.
  grpc::Status Check(grpc::CallbackServerContext* context,
                     grpc_api::Access access);

  // The decision itself, for tests and for Check: `authorization` is the
  // metadata value if any, `identities` the verified certificate names (empty
  // without a verified certificate).
  grpc::Status Decide(std::optional<absl::string_view> authorization,
                      const std::vector<std::string>& identities,
                      grpc_api::Access access) const;

  // Refusals so far, by code (for metrics).
  uint64_t unauthenticated() const { return unauthenticated_.load(); }
  uint64_t permission_denied() const { return permission_denied_.load(); }
  // Tokens in the current table.
  size_t token_count() const;

 private:
  explicit Authorizer(AuthOptions options) : options_(std::move(options)) {}
  std::shared_ptr<const CredentialTable> table() const;

  const AuthOptions options_;
  bool enabled_ = false;
  mutable absl::Mutex mu_;
  std::shared_ptr<const CredentialTable> table_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> unauthenticated_{0};
  std::atomic<uint64_t> permission_denied_{0};
  // A hostile client must not flood the log with refusals.
  base::LogRateLimiter refusal_log_{5};
};

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_AUTH_H_
