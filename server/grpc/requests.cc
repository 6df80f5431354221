#include "server/grpc/requests.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/base/text.h"

namespace fanin::grpc_api {
namespace {

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

absl::Status Refuse(absl::string_view method, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(method, ": ", what));
}

}  // namespace

absl::Status ParseRequest(absl::string_view bytes, absl::string_view method,
                          google::protobuf::Message* out) {
  if (out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::OkStatus();
  }
  return Refuse(method, absl::StrCat("the request (", bytes.size(),
                                     " bytes) is not a valid ",
                                     out->GetDescriptor()->full_name()));
}

absl::StatusOr<fanout::Filter> CheckSubscribe(
    const fanin::v1::SubscribeRequest& request,
    const std::vector<std::string>& listener_names) {
  absl::StatusOr<fanout::Filter> filter =
      fanout::Filter::FromRequest(request, listener_names);
  if (!filter.ok()) return Refuse("Subscribe", filter.status().message());
  if (!fanin::v1::Delivery_IsValid(request.delivery())) {
    return Refuse("Subscribe",
                  absl::StrCat("delivery: unknown value ", request.delivery(),
                               "; use DELIVERY_LOSSY or DELIVERY_LOSSLESS"));
  }
  // One start at most: resuming continues after a seq already seen, the
  // other two pick a place in the retained history.
  const bool resume =
      request.resume_after_seq() != 0 || !request.resume_epoch().empty();
  const bool back = request.start_back() != 0;
  const bool time = request.start_time_unix_nano() != 0;
  if (resume && (back || time)) {
    return Refuse(
        "Subscribe",
        absl::StrCat(back ? "start_back" : "start_time_unix_nano",
                     " cannot be combined with resume_after_seq or "
                     "resume_epoch: resuming continues after a seq already "
                     "seen; start_back and start_time_unix_nano only pick "
                     "where a new stream starts"));
  }
  if (back && time) {
    return Refuse("Subscribe",
                  "start_back and start_time_unix_nano are exclusive: "
                  "start N events back, or at a time, not both");
  }
  return filter;
}

absl::Status CheckWrite(const fanin::v1::WriteRequest& request) {
  absl::Status s = CheckConnectionId(request.connection_id(), "Write");
  if (!s.ok()) return s;
  if (request.data().empty() && !request.close_after()) {
    return Refuse(
        "Write",
        "data: empty, nothing to write (set close_after to only close)");
  }
  return absl::OkStatus();
}

absl::Status CheckConnectionId(uint64_t connection_id,
                               absl::string_view method) {
  if (connection_id == 0) {
    return Refuse(method, "connection_id: required (ids start at 1)");
  }
  return absl::OkStatus();
}

absl::StatusOr<ListQuery> CheckList(
    const fanin::v1::ListConnectionsRequest& request,
    const std::vector<std::string>& listener_names) {
  ListQuery query;
  if (!request.listener().empty()) {
    if (std::find(listener_names.begin(), listener_names.end(),
                  request.listener()) == listener_names.end()) {
      return Refuse("ListConnections",
                    absl::StrCat("listener: no listener named ",
                                 base::QuoteBounded(request.listener())));
    }
    query.listener = request.listener();
  }
  if (!request.page_token().empty()) {
    absl::StatusOr<uint64_t> after = ParsePageToken(request.page_token());
    if (!after.ok()) return Refuse("ListConnections", after.status().message());
    query.after_id = *after;
  }
  query.limit = request.page_size() == 0
                    ? kDefaultPageSize
                    : std::min(request.page_size(), kMaxPageSize);
  return query;
}

std::string PageTokenAfter(uint64_t last_id) { return absl::StrCat(last_id); }

absl::StatusOr<uint64_t> ParsePageToken(absl::string_view token) {
  uint64_t after = 0;
  // Only what PageTokenAfter makes: a canonical decimal id (no sign, no
  // leading zero or space), so every accepted token round-trips.
  if (token.empty() || token.size() > 20 || token[0] == '0' ||
      !std::all_of(token.begin(), token.end(),
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(token, &after)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: ", base::QuoteBounded(token),
                     " is not a next_page_token from ListConnections"));
  }
  return after;
}

}  // namespace fanin::grpc_api
