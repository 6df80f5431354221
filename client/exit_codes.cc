#include "client/exit_codes.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fanin::cli {

// gRPC's UNAVAILABLE messages are long and vary by version; pick out the
// cause a user can act on.
std::string UnavailableReason(absl::string_view message) {
  std::string lower = absl::AsciiStrToLower(message);
  if (absl::StrContains(lower, "connection refused")) {
    return "connection refused";
  }
  if (absl::StrContains(lower, "no such file")) {
    return "no such socket file";
  }
  if (absl::StrContains(lower, "ssl") || absl::StrContains(lower, "tls") ||
      absl::StrContains(lower, "handshake")) {
    return absl::StrCat("TLS handshake failed (", message,
                        "); check --tls_ca, --tls_cert and --tls_key");
  }
  if (absl::StrContains(lower, "dns") || absl::StrContains(lower, "resolve") ||
      absl::StrContains(lower, "name or service not known")) {
    return absl::StrCat("cannot resolve the name (", message, ")");
  }
  if (absl::StrContains(lower, "connection reset") ||
      absl::StrContains(lower, "socket closed") ||
      absl::StrContains(lower, "goaway") ||
      absl::StrContains(lower, "broken pipe")) {
    return absl::StrCat("the connection was lost (", message, ")");
  }
  if (message.empty()) return "unavailable";
  return std::string(message);
}

int ExitCodeForStatus(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::UNAVAILABLE:
      return kExitUnreachable;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kExitRejected;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return kExitResourceExhausted;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitDeadline;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitAuth;
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::ALREADY_EXISTS:
      return kExitPrecondition;
    case grpc::StatusCode::UNIMPLEMENTED:
      return kExitUnimplemented;
    default:
      return kExitServerError;
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC's codes are Abseil's, number for number.
  std::string name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  if (name.empty()) return absl::StrCat("CODE_", static_cast<int>(code));
  return name;
}

std::string RpcErrorMessage(const grpc::Status& status,
                            absl::string_view server, absl::string_view what) {
  const std::string& msg = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::StrCat("cannot reach ", server, ": ", UnavailableReason(msg),
                          " \xe2\x80\x94 is fanin_server running? (set "
                          "--server or FANIN_SERVER)");
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::StrCat(what, ": no answer from ", server,
                          " within the timeout \xe2\x80\x94 raise --timeout "
                          "or check the server's load");
    case grpc::StatusCode::NOT_FOUND:
      return absl::StrCat(what, ": ", msg.empty() ? "not found" : msg,
                          " \xe2\x80\x94 see `fanin list`");
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return absl::StrCat(what, ": ", StatusCodeName(status.error_code()), ": ",
                          msg,
                          " \xe2\x80\x94 check --token_file and the --tls_* "
                          "flags");
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::StrCat(what, ": ", server, " does not implement this call (",
                          msg,
                          ") \xe2\x80\x94 is it a fanin server of a matching "
                          "version?");
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::StrCat(what, ": server limit reached: ", msg);
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return absl::StrCat(what, ": the server rejected the request: ", msg);
    default:
      return absl::StrCat(what, ": ", StatusCodeName(status.error_code()), ": ",
                          msg);
  }
}

std::string ExitCodesHelp() {
  return R"(Exit codes:
    0  success (watch: --count or --timeout reached, or the server ended the stream)
    1  local failure (unreadable file or stdin, cannot write output)
    2  usage error (unknown flag, bad value, missing argument)
    3  server unreachable (UNAVAILABLE)
    4  not found (NOT_FOUND), e.g. unknown connection
    5  request rejected (INVALID_ARGUMENT, OUT_OF_RANGE)
    6  server limit reached (RESOURCE_EXHAUSTED)
    7  timed out (DEADLINE_EXCEEDED)
    8  not authenticated or not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
    9  precondition failed (FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS)
   10  call not implemented by the server (UNIMPLEMENTED)
   11  server error (INTERNAL, UNKNOWN, DATA_LOSS, CANCELLED)
   12  health: server reachable but not SERVING
  130  watch interrupted by Ctrl-C (SIGINT); 143 for SIGTERM
)";
}

}  // namespace fanin::cli
