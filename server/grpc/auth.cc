#include "server/grpc/auth.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "server/base/log.h"

namespace fanin::grpc_api {
namespace {

constexpr char kCertPrefix[] = "cert:";

std::string Digest(absl::string_view token) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(md), len);
}

const char* AccessName(grpc_api::Access access) {
  switch (access) {
    case grpc_api::Access::kWrite:
      return "write";
    case grpc_api::Access::kLossless:
      return "lossless";
    case grpc_api::Access::kRead:
      break;
  }
  return "read";
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "none") return Role::kNone;
  if (n == "reader") return Role::kReader;
  if (n == "writer") return Role::kWriter;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown role \"", name, "\"; use reader or writer (or none)"));
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kNone:
      return "none";
    case Role::kReader:
      return "reader";
    case Role::kWriter:
      return "writer";
  }
  return "?";
}

absl::StatusOr<CredentialTable> ParseCredentials(absl::string_view text) {
  CredentialTable table;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (parts.empty()) continue;
    // The error never quotes the line: it may hold a token.
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": expected \"ROLE CREDENTIAL\", got ",
                       parts.size(), " words"));
    }
    absl::StatusOr<Role> role = ParseRole(parts[0]);
    if (!role.ok() || *role == Role::kNone) {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line_no, ": the role must be reader or writer"));
    }
    absl::string_view credential = parts[1];
    if (absl::ConsumePrefix(&credential, kCertPrefix)) {
      if (credential.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_no, ": empty certificate identity"));
      }
      Role& r = table.identities[credential];
      r = std::max(r, *role);
      continue;
    }
    auto [it, inserted] =
        table.tokens.try_emplace(Digest(credential), CredentialTable::Entry{});
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": the same token as line ",
                       it->second.line, " (give each token one role)"));
    }
    it->second = {*role, line_no};
  }
  return table;
}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(
    AuthOptions options) {
  auto auth = std::unique_ptr<Authorizer>(new Authorizer(std::move(options)));
  auth->enabled_ = !auth->options_.tokens_file.empty() || auth->options_.mtls;
  {
    absl::MutexLock lock(&auth->mu_);
    auth->table_ = std::make_shared<CredentialTable>();
  }
  if (!auth->options_.tokens_file.empty()) {
    absl::Status loaded = auth->Reload();
    if (!loaded.ok()) return loaded;
  }
  return auth;
}

absl::Status Authorizer::Reload() {
  if (options_.tokens_file.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> text = ReadWholeFile(options_.tokens_file);
  if (!text.ok()) {
    return absl::Status(
        text.status().code(),
        absl::StrCat("--auth_tokens_file: ", text.status().message()));
  }
  absl::StatusOr<CredentialTable> parsed = ParseCredentials(*text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--auth_tokens_file ",
                                                   options_.tokens_file, ": ",
                                                   parsed.status().message()));
  }
  auto table = std::make_shared<const CredentialTable>(*std::move(parsed));
  base::Log(base::LogLevel::kInfo, "credentials loaded",
            {{"file", options_.tokens_file},
             {"tokens", table->tokens.size()},
             {"cert_identities", table->identities.size()}});
  absl::MutexLock lock(&mu_);
  table_ = std::move(table);
  return absl::OkStatus();
}

std::shared_ptr<const CredentialTable> Authorizer::table() const {
  absl::MutexLock lock(&mu_);
  return table_;
}

size_t Authorizer::token_count() const { return table()->tokens.size(); }

grpc::Status Authorizer::Decide(std::optional<absl::string_view> authorization,
                                const std::vector<std::string>& identities,
                                grpc_api::Access access) const {
  if (!enabled_) return grpc::Status::OK;
  std::shared_ptr<const CredentialTable> t = table();
  Role role = Role::kNone;
  bool authenticated = false;
  if (authorization.has_value()) {
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    constexpr absl::string_view kBearer = "bearer ";
    if (value.size() <= kBearer.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kBearer.size()), kBearer)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "authorization metadata must be \"Bearer <token>\"");
    }
    absl::string_view token =
        absl::StripLeadingAsciiWhitespace(value.substr(kBearer.size()));
    auto it = t->tokens.find(Digest(token));
    if (it == t->tokens.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "unknown bearer token");
    }
    role = std::max(role, it->second.role);
    authenticated = true;
  }
  if (options_.mtls && !identities.empty()) {
    Role cert_role = options_.cert_default_role;
    bool named = false;
    for (const std::string& id : identities) {
      auto it = t->identities.find(id);
      if (it == t->identities.end()) continue;
      cert_role = named ? std::max(cert_role, it->second) : it->second;
      named = true;
    }
    role = std::max(role, cert_role);
    authenticated = true;
  }
  if (!authenticated) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        "missing credentials: send \"authorization: Bearer <token>\" metadata"
        " (fanin --token_file) or a client certificate");
  }
  Role needed = Role::kReader;
  if (access == grpc_api::Access::kWrite) needed = Role::kWriter;
  if (access == grpc_api::Access::kLossless) needed = options_.lossless_role;
  if (role < needed) {
    return grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        access == grpc_api::Access::kLossless
            ? absl::StrCat("a lossless subscription needs the ",
                           RoleName(needed),
                           " role (--lossless_role); the credential given has ",
                           RoleName(role), ": subscribe DELIVERY_LOSSY")
            : absl::StrCat("this call needs the ", RoleName(needed),
                           " role; the credential given has ", RoleName(role)));
  }
  return grpc::Status::OK;
}

grpc::Status Authorizer::Check(grpc::CallbackServerContext* context,
                               grpc_api::Access access) {
  if (!enabled_) return grpc::Status::OK;
  std::optional<absl::string_view> authorization;
  const auto& metadata = context->client_metadata();
  auto found = metadata.find("authorization");
  if (found != metadata.end()) {
    authorization =
        absl::string_view(found->second.data(), found->second.size());
  }
  std::vector<std::string> identities;
  std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  if (options_.mtls && auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const char* property :
         {"x509_common_name", "x509_subject_alternative_name"}) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
        identities.emplace_back(v.data(), v.size());
      }
    }
  }
  grpc::Status status = Decide(authorization, identities, access);
  if (status.ok()) return status;
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);
  } else {
    permission_denied_.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t suppressed = 0;
  if (refusal_log_.Allow(&suppressed)) {
    base::Log(base::LogLevel::kWarning, "rpc refused",
              {{"peer", context->peer()},
               {"access", AccessName(access)},
               {"code", status.error_code() == grpc::StatusCode::UNAUTHENTICATED
                            ? "UNAUTHENTICATED"
                            : "PERMISSION_DENIED"},
               {"why", status.error_message()},
               {"suppressed", suppressed}});
  }
  return status;
}

}  // namespace fanin::grpc_api
