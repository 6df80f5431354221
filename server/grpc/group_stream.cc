#include "server/grpc/group_stream.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/base/text.h"
#include "server/fanout/filter.h"

namespace fanin::grpc_api {
namespace {

constexpr size_t kMaxGroupName = 128;

bool NameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-' || c == ':' || c == '/' || c == '@';
}

// "all" for an empty list or one that names everything, else the sorted
// distinct items.
template <typename T>
std::string Term(absl::string_view field, const std::set<T>& items,
                 size_t everything) {
  if (items.empty() || items.size() == everything) {
    return absl::StrCat(field, "=all");
  }
  return absl::StrCat(field, "=", absl::StrJoin(items, ","));
}

}  // namespace

absl::Status CheckGroupRequest(const fanin::v1::SubscribeRequest& request) {
  const std::string& name = request.group();
  if (name.empty()) {
    if (request.rebalance()) {
      return absl::InvalidArgumentError(
          "Subscribe: rebalance: only for group members (set group)");
    }
    return absl::OkStatus();
  }
  if (name.size() > kMaxGroupName ||
      !std::all_of(name.begin(), name.end(), NameChar)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Subscribe: group: ", base::QuoteBounded(name),
        " is not a group name (1 to 128 of A-Z a-z 0-9 . _ - : / @)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<fanout::GroupSpec> GroupSpecOf(
    const fanin::v1::SubscribeRequest& request,
    const std::vector<std::string>& listener_names) {
  fanout::GroupSpec spec;
  std::set<int> kinds(request.kinds().begin(), request.kinds().end());
  size_t all_kinds = 0;
  for (int k = fanin::v1::EventKind_MIN; k <= fanin::v1::EventKind_MAX; ++k) {
    if (k != fanin::v1::EVENT_KIND_UNSPECIFIED &&
        fanin::v1::EventKind_IsValid(k)) {
      ++all_kinds;
    }
  }
  spec.deliver_closed =
      kinds.empty() || kinds.count(fanin::v1::EVENT_KIND_CLOSED) > 0;
  fanin::v1::SubscribeRequest hub_request = request;
  if (!spec.deliver_closed) {
    hub_request.add_kinds(fanin::v1::EVENT_KIND_CLOSED);
  }
  absl::StatusOr<fanout::Filter> filter =
      fanout::Filter::FromRequest(hub_request, listener_names);
  if (!filter.ok()) return filter.status();
  spec.filter = *std::move(filter);
  spec.lossless = request.delivery() == fanin::v1::DELIVERY_LOSSLESS;
  spec.resume_after_seq = request.resume_after_seq();
  spec.resume_epoch = request.resume_epoch();
  spec.start_back = request.start_back();
  spec.start_time_unix_nano = request.start_time_unix_nano();
  spec.request = request;

  std::set<std::string> kind_names;
  for (int k : kinds) {
    kind_names.insert(
        fanin::v1::EventKind_Name(static_cast<fanin::v1::EventKind>(k)));
  }
  spec.terms.push_back(Term("kinds", kind_names, all_kinds));
  std::set<std::string> listeners(request.listeners().begin(),
                                  request.listeners().end());
  spec.terms.push_back(Term("listeners", listeners, listener_names.size()));
  std::set<uint64_t> ids(request.connection_ids().begin(),
                         request.connection_ids().end());
  spec.terms.push_back(Term("connection_ids", ids, 0));
  std::set<std::string> nodes(request.nodes().begin(), request.nodes().end());
  spec.terms.push_back(Term("nodes", nodes, 0));
  spec.terms.push_back(
      absl::StrCat("omit_payload=", request.omit_payload() ? "true" : "false"));
  spec.terms.push_back(
      absl::StrCat("max_payload_bytes=", request.max_payload_bytes()));
  spec.terms.push_back(absl::StrCat(
      "delivery=",
      fanin::v1::Delivery_Name(spec.lossless ? fanin::v1::DELIVERY_LOSSLESS
                                             : fanin::v1::DELIVERY_LOSSY)));
  return spec;
}

void AddGroupStats(const fanout::GroupRegistry::Stats& stats,
                   fanin::v1::GetStatsResponse* out) {
  out->set_groups(stats.groups);
  out->set_group_members(stats.members);
  out->set_group_connections(stats.connections);
  out->set_group_unassigned_connections(stats.unassigned_connections);
  out->set_group_handovers(stats.handovers);
  out->set_group_redelivered_events(stats.redelivered_events);
  out->set_group_events_lost(stats.events_lost);
}

}  // namespace fanin::grpc_api
