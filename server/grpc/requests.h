// What makes a FanIn request acceptable, from the bytes gRPC hands the
// service to the values it acts on: one place, shared by the service and the
// request fuzz target, so both agree on what a bad request is.
//
// Every refusal is INVALID_ARGUMENT with a message that names the method and
// the field, and that quotes caller text only through base::QuoteBounded, so a
// message stays short whatever was sent. A request that is not a protobuf
// message of the method's type is refused the same way (gRPC's typed
// handlers would answer UNIMPLEMENTED with an empty message: the service's
// methods are raw for this reason).
//
// Example:
//   fanin::v1::WriteRequest request;
//   absl::Status s = ParseRequest(bytes, "Write", &request);
//   if (s.ok()) s = CheckWrite(request);
#ifndef FANIN_SERVER_GRPC_REQUESTS_H_
#define FANIN_SERVER_GRPC_REQUESTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/message.h"
#include "server/fanout/filter.h"

namespace fanin::grpc_api {

// Parses `bytes` into *out. INVALID_ARGUMENT naming `method` and the message
// type when they are not one.
absl::Status ParseRequest(absl::string_view bytes, absl::string_view method,
                          google::protobuf::Message* out);

// Subscribe: the filter it asks for (kinds, listeners of `listener_names`,
// connection ids), a known delivery, and at most one start: resume
// (resume_after_seq, resume_epoch), start_back or start_time_unix_nano.
absl::StatusOr<fanout::Filter> CheckSubscribe(
    const fanin::v1::SubscribeRequest& request,
    const std::vector<std::string>& listener_names);

// Write: a connection id, and data or close_after.
absl::Status CheckWrite(const fanin::v1::WriteRequest& request);
// CloseConnection and Read: a connection id.
absl::Status CheckConnectionId(uint64_t connection_id,
                               absl::string_view method);

// ListConnections: what to list.
struct ListQuery {
  std::string listener;  // empty: every listener
  uint64_t after_id = 0;
  size_t limit = 100;
};
absl::StatusOr<ListQuery> CheckList(
    const fanin::v1::ListConnectionsRequest& request,
    const std::vector<std::string>& listener_names);

// Page tokens: opaque to callers; today the last id of the page. Parse
// refuses anything PageTokenAfter did not make.
std::string PageTokenAfter(uint64_t last_id);
absl::StatusOr<uint64_t> ParsePageToken(absl::string_view token);

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_REQUESTS_H_
