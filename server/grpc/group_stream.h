// The gRPC side of worker-pool groups (fanout/group.h): what a Subscribe
// request that names a group asks for, in the form every member of the group
// must share. The stream itself is FaninService's SubscribeStream, reading
// from its GroupRegistry member instead of a hub subscription.
//
// Example:
//   absl::Status s = CheckGroupRequest(request);
//   absl::StatusOr<fanout::GroupSpec> spec =
//       GroupSpecOf(request, core->listener_names());
#ifndef FANIN_SERVER_GRPC_GROUP_STREAM_H_
#define FANIN_SERVER_GRPC_GROUP_STREAM_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/group.h"

namespace fanin::grpc_api {

// A group name: 1 to 128 of A-Z a-z 0-9 . _ - : / @ (names reach logs,
// metrics labels and ListGroups). INVALID_ARGUMENT naming the field
// otherwise; also for `rebalance` without a group.
absl::Status CheckGroupRequest(const fanin::v1::SubscribeRequest& request);

// The group's spec from a member's request (already checked by
// CheckSubscribe): the hub filter (the request's, plus CLOSED, which the
// group's router needs), whether CLOSED is delivered, the delivery, where a
// new group starts, and the canonical terms ("kinds=all",
// "listeners=a,b", ...) that the other members must match.
absl::StatusOr<fanout::GroupSpec> GroupSpecOf(
    const fanin::v1::SubscribeRequest& request,
    const std::vector<std::string>& listener_names);

// GetStatsResponse fields 30-36 from the registry's stats.
void AddGroupStats(const fanout::GroupRegistry::Stats& stats,
                   fanin::v1::GetStatsResponse* out);

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_GROUP_STREAM_H_
