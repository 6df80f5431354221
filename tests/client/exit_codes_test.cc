// Exit codes per gRPC status class, and messages that say what to try.
#include "client/exit_codes.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanin::cli {
namespace {

using ::testing::HasSubstr;

TEST(ExitCodeForStatus, EachClassHasItsOwnCode) {
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::OK), 0);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::UNAVAILABLE), kExitUnreachable);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::NOT_FOUND), kExitNotFound);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::INVALID_ARGUMENT),
            kExitRejected);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::OUT_OF_RANGE), kExitRejected);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::RESOURCE_EXHAUSTED),
            kExitResourceExhausted);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::DEADLINE_EXCEEDED),
            kExitDeadline);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::UNAUTHENTICATED), kExitAuth);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::PERMISSION_DENIED), kExitAuth);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::FAILED_PRECONDITION),
            kExitPrecondition);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::UNIMPLEMENTED),
            kExitUnimplemented);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::INTERNAL), kExitServerError);
  EXPECT_EQ(ExitCodeForStatus(grpc::StatusCode::CANCELLED), kExitServerError);
}

TEST(StatusCodeName, IsTheCanonicalNameOfEveryCode) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::FAILED_PRECONDITION),
            "FAILED_PRECONDITION");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAUTHENTICATED),
            "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(42)), "CODE_42");
}

TEST(ExitCodeForStatus, NoErrorMapsToSuccessOrUsage) {
  for (int c = 1; c <= 16; ++c) {
    int code = ExitCodeForStatus(static_cast<grpc::StatusCode>(c));
    EXPECT_NE(code, kExitOk) << c;
    EXPECT_NE(code, kExitUsage) << c;
    EXPECT_NE(code, kExitFailure) << c;
  }
}

TEST(RpcErrorMessage, UnreachableSaysRefusedAndWhatToTry) {
  grpc::Status status(
      grpc::StatusCode::UNAVAILABLE,
      "failed to connect to all addresses; last error: UNKNOWN: "
      "ipv4:127.0.0.1:50051: Failed to connect to remote host: Connection "
      "refused");
  EXPECT_EQ(RpcErrorMessage(status, "127.0.0.1:50051", "list connections"),
            "cannot reach 127.0.0.1:50051: connection refused \xe2\x80\x94 is "
            "fanin_server running? (set --server or FANIN_SERVER)");
}

TEST(RpcErrorMessage, OtherClassesNameTheOperation) {
  EXPECT_THAT(RpcErrorMessage(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                           "Deadline Exceeded"),
                              "s:1", "get stats"),
              HasSubstr("get stats: no answer from s:1"));
  EXPECT_THAT(
      RpcErrorMessage(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no"),
                      "s:1", "watch"),
      HasSubstr("--token_file"));
  EXPECT_THAT(RpcErrorMessage(
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad kind"),
                  "s:1", "watch"),
              HasSubstr("watch: the server rejected the request: bad kind"));
  EXPECT_THAT(RpcErrorMessage(grpc::Status(grpc::StatusCode::INTERNAL, "boom"),
                              "s:1", "close connection 4"),
              HasSubstr("close connection 4: INTERNAL: boom"));
}

TEST(ExitCodesHelp, ListsEveryCode) {
  std::string help = ExitCodesHelp();
  for (int code : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 130}) {
    EXPECT_THAT(help, HasSubstr(absl::StrCat(" ", code, "  "))) << code;
  }
}

}  // namespace
}  // namespace fanin::cli
