#include "server/fanout/filter.h"

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/base/text.h"

namespace fanin::fanout {
namespace {

uint32_t AllKinds() {
  uint32_t all = 0;
  for (int k = fanin::v1::EventKind_MIN; k <= fanin::v1::EventKind_MAX; ++k) {
    if (k > fanin::v1::EVENT_KIND_UNSPECIFIED &&
        fanin::v1::EventKind_IsValid(k)) {
      all |= KindBit(static_cast<fanin::v1::EventKind>(k));
    }
  }
  return all;
}

}  // namespace

absl::StatusOr<Filter> Filter::FromRequest(
    const fanin::v1::SubscribeRequest& request,
    const std::vector<std::string>& listener_names) {
  Filter f;
  if (request.kinds_size() > 0) {
    f.kinds_ = 0;
    for (int i = 0; i < request.kinds_size(); ++i) {
      int kind = request.kinds(i);
      if (kind <= fanin::v1::EVENT_KIND_UNSPECIFIED ||
          !fanin::v1::EventKind_IsValid(kind)) {
        return absl::InvalidArgumentError(
            absl::StrCat("kinds[", i, "]: not an event kind (", kind,
                         "); use EVENT_KIND_OPENED..EVENT_KIND_READABLE"));
      }
      f.kinds_ |= KindBit(static_cast<fanin::v1::EventKind>(kind));
    }
  }
  if (request.listeners_size() > 0) {
    f.listeners_ = 0;
    for (int i = 0; i < request.listeners_size(); ++i) {
      const std::string& name = request.listeners(i);
      bool found = false;
      for (size_t j = 0; j < listener_names.size(); ++j) {
        if (listener_names[j] == name) {
          f.listeners_ |= uint64_t{1} << j;
          found = true;
        }
      }
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat(
            "listeners[", i, "]: no listener named ", base::QuoteBounded(name),
            " (have: ", absl::StrJoin(listener_names, ", "), ")"));
      }
    }
  }
  // Naming every kind or every listener restricts nothing: keep the masks of
  // "all", so Key() matches a filter that names none (shared batches).
  if (f.kinds_ == AllKinds()) f.kinds_ = ~0u;
  const size_t n = listener_names.size();
  if (n < 64 && f.listeners_ == (uint64_t{1} << n) - 1) {
    f.listeners_ = ~uint64_t{0};
  }
  for (int i = 0; i < request.connection_ids_size(); ++i) {
    if (request.connection_ids(i) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("connection_ids[", i, "]: 0 is not a connection id"));
    }
    f.connections_.insert(request.connection_ids(i));
  }
  for (int i = 0; i < request.nodes_size(); ++i) {
    if (request.nodes(i).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("nodes[", i, "]: empty node name"));
    }
    f.nodes_.insert(request.nodes(i));
  }
  return f;
}

std::string Filter::Key() const {
  std::vector<uint64_t> ids(connections_.begin(), connections_.end());
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> nodes(nodes_.begin(), nodes_.end());
  std::sort(nodes.begin(), nodes.end());
  // Node names are length-prefixed so no name can imitate two.
  std::string node_key;
  for (const std::string& n : nodes)
    absl::StrAppend(&node_key, n.size(), ":", n);
  return absl::StrCat(kinds_, "/", listeners_, "/", absl::StrJoin(ids, ","),
                      "/", node_key);
}

}  // namespace fanin::fanout
