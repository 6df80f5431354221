// Fuzzes the FanIn request checks with raw bytes, as gRPC hands them to the
// service: every method either accepts the bytes or refuses them with
// INVALID_ARGUMENT, a message that names the method and stays short however
// long the caller's strings are; page tokens accept exactly what
// PageTokenAfter makes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "fanin/v1/fanin.pb.h"
#include "server/grpc/requests.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using fanin::grpc_api::ParseRequest;

const std::vector<std::string>& Listeners() {
  static const auto* names = new std::vector<std::string>{"default", "admin"};
  return *names;
}

void CheckRefusal(const absl::Status& s, absl::string_view method) {
  if (s.ok()) return;
  const std::string message(s.message());
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument, message);
  FUZZ_CHECK(absl::StartsWith(message, method), message);
  // The longest fixed text plus 64 quoted bytes (each at most 4 when
  // escaped) and the listener list.
  FUZZ_CHECK(message.size() < 400, message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  {
    fanin::v1::SubscribeRequest r;
    absl::Status s = ParseRequest(bytes, "Subscribe", &r);
    if (s.ok()) {
      s = fanin::grpc_api::CheckSubscribe(r, Listeners()).status();
      // An accepted request asks for one start at most.
      const int starts =
          (r.resume_after_seq() != 0 || !r.resume_epoch().empty()) +
          (r.start_back() != 0) + (r.start_time_unix_nano() != 0);
      FUZZ_CHECK(!s.ok() || starts <= 1, "more than one start accepted");
    }
    CheckRefusal(s, "Subscribe");
  }
  {
    fanin::v1::WriteRequest r;
    absl::Status s = ParseRequest(bytes, "Write", &r);
    if (s.ok()) {
      s = fanin::grpc_api::CheckWrite(r);
      FUZZ_CHECK(s.ok() == (r.connection_id() != 0 &&
                            (!r.data().empty() || r.close_after())),
                 std::string(s.message()));
    }
    CheckRefusal(s, "Write");
  }
  {
    fanin::v1::CloseConnectionRequest r;
    absl::Status s = ParseRequest(bytes, "CloseConnection", &r);
    if (s.ok()) {
      s = fanin::grpc_api::CheckConnectionId(r.connection_id(),
                                             "CloseConnection");
    }
    CheckRefusal(s, "CloseConnection");
  }
  {
    fanin::v1::ReadRequest r;
    absl::Status s = ParseRequest(bytes, "Read", &r);
    if (s.ok())
      s = fanin::grpc_api::CheckConnectionId(r.connection_id(), "Read");
    CheckRefusal(s, "Read");
  }
  {
    fanin::v1::GetStatsRequest r;
    CheckRefusal(ParseRequest(bytes, "GetStats", &r), "GetStats");
  }
  {
    fanin::v1::ListNodesRequest r;
    CheckRefusal(ParseRequest(bytes, "ListNodes", &r), "ListNodes");
  }
  {
    fanin::v1::ListConnectionsRequest r;
    absl::Status s = ParseRequest(bytes, "ListConnections", &r);
    if (s.ok()) {
      auto query = fanin::grpc_api::CheckList(r, Listeners());
      s = query.status();
      if (query.ok()) {
        FUZZ_CHECK(query->limit >= 1 && query->limit <= 1000, "page size");
      }
    }
    CheckRefusal(s, "ListConnections");
  }
  // Page tokens, the input taken as a token.
  auto after = fanin::grpc_api::ParsePageToken(bytes);
  if (after.ok()) {
    FUZZ_CHECK(fanin::grpc_api::PageTokenAfter(*after) == bytes,
               "an accepted token that PageTokenAfter would not make");
  } else {
    // 64 quoted bytes, each at most 4 when escaped, and the fixed text.
    FUZZ_CHECK(after.status().message().size() < 400,
               std::string(after.status().message()));
  }
  if (size >= 8) {
    uint64_t id = 0;
    for (int i = 0; i < 8; ++i) id = id << 8 | data[i];
    if (id != 0) {
      auto back =
          fanin::grpc_api::ParsePageToken(fanin::grpc_api::PageTokenAfter(id));
      FUZZ_CHECK(back.ok() && *back == id, "a token that does not round-trip");
    }
  }
  return 0;
}
