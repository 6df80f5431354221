// Process exit codes of the `fanin` client and the user-facing messages for
// failed RPCs. The numbers are a contract for scripts (see `fanin --help` and
// docs/CLI.md): never renumber, only add.
#ifndef FANIN_CLIENT_EXIT_CODES_H_
#define FANIN_CLIENT_EXIT_CODES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace fanin::cli {

enum ExitCode : int {
  kExitOk = 0,
  // A local failure: unreadable file or stdin, output error.
  kExitFailure = 1,
  // Bad flags or arguments.
  kExitUsage = 2,
  // UNAVAILABLE: the server could not be reached (or went away).
  kExitUnreachable = 3,
  // NOT_FOUND: e.g. an unknown or already closed connection.
  kExitNotFound = 4,
  // INVALID_ARGUMENT or OUT_OF_RANGE: the server rejected the request.
  kExitRejected = 5,
  // RESOURCE_EXHAUSTED: a server limit (buffer full, too many subscribers).
  kExitResourceExhausted = 6,
  // DEADLINE_EXCEEDED: no answer within --timeout.
  kExitDeadline = 7,
  // UNAUTHENTICATED or PERMISSION_DENIED.
  kExitAuth = 8,
  // FAILED_PRECONDITION, ABORTED or ALREADY_EXISTS.
  kExitPrecondition = 9,
  // UNIMPLEMENTED: the server lacks the call (wrong server or version).
  kExitUnimplemented = 10,
  // INTERNAL, UNKNOWN, DATA_LOSS or CANCELLED by the server.
  kExitServerError = 11,
  // `fanin health`: reachable, but not SERVING.
  kExitNotServing = 12,
  // `fanin watch` ended by SIGINT (Ctrl-C); SIGTERM gives 143.
  kExitInterrupted = 130,
};

// The exit code for a gRPC status (kExitOk for OK).
int ExitCodeForStatus(grpc::StatusCode code);

// "UNAVAILABLE", "NOT_FOUND", ...
std::string StatusCodeName(grpc::StatusCode code);

// A one-line message (no "fanin: " prefix, no newline) saying what failed
// and what to try, e.g.
//   cannot reach 127.0.0.1:50051: connection refused — is fanin_server
//   running? (set --server or FANIN_SERVER)
// `what` names the operation ("write to connection 42").
std::string RpcErrorMessage(const grpc::Status& status,
                            absl::string_view server, absl::string_view what);

// Why a server could not be reached, from an UNAVAILABLE status's message:
// "connection refused", "no such socket file", ... or the message itself.
std::string UnavailableReason(absl::string_view message);

// The exit-code table printed by `fanin --help`.
std::string ExitCodesHelp();

}  // namespace fanin::cli

#endif  // FANIN_CLIENT_EXIT_CODES_H_
