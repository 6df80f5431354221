// Filter: which events a subscription wants, checked before anything is
// queued for it.
#ifndef FANIN_SERVER_FANOUT_FILTER_H_
#define FANIN_SERVER_FANOUT_FILTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "fanin/v1/fanin.pb.h"
#include "server/fanout/stored_event.h"

namespace fanin::fanout {

// Bit for an EventKind in a kind mask.
constexpr uint32_t KindBit(fanin::v1::EventKind kind) {
  return 1u << static_cast<int>(kind);
}
// Kinds that reading a socket can produce (what back-pressure can hold back).
constexpr uint32_t kReadProducedKinds =
    KindBit(fanin::v1::EVENT_KIND_DATA) |
    KindBit(fanin::v1::EVENT_KIND_READ_CLOSED) |
    KindBit(fanin::v1::EVENT_KIND_CLOSED) |
    KindBit(fanin::v1::EVENT_KIND_READABLE);

class Filter {
 public:
  // Matches everything.
  Filter() = default;

  // From a SubscribeRequest. `listener_names` are the server's listeners, in
  // index order. INVALID_ARGUMENT names the offending field, e.g.
  // "listeners[1]: no listener named \"x\" (have: default, admin)".
  static absl::StatusOr<Filter> FromRequest(
      const fanin::v1::SubscribeRequest& request,
      const std::vector<std::string>& listener_names);

  bool Matches(fanin::v1::EventKind kind, uint32_t listener,
               uint64_t connection_id) const {
    return (kinds_ & KindBit(kind)) != 0 &&
           MatchesSource(listener, connection_id);
  }
  // The whole test for a stored event: kind, source and (cluster mode) node.
  // A NodeChange or GroupChange has no listener or connection: it matches
  // only filters that name neither.
  bool Matches(const StoredEvent& e) const {
    if (!nodes_.empty() && !nodes_.contains(e.node)) return false;
    if (e.kind == fanin::v1::EVENT_KIND_NODE ||
        e.kind == fanin::v1::EVENT_KIND_GROUP) {
      return (kinds_ & KindBit(e.kind)) != 0 && connections_.empty() &&
             listeners_ == ~uint64_t{0};
    }
    return Matches(e.kind, e.listener, e.connection_id);
  }
  // True when some kind in `kind_mask` from this source would match.
  bool MatchesAny(uint32_t kind_mask, uint32_t listener,
                  uint64_t connection_id) const {
    return (kinds_ & kind_mask) != 0 && MatchesSource(listener, connection_id);
  }
  // True when a new connection on `listener` could produce a matching event.
  bool MatchesNewConnections(uint32_t listener) const {
    return connections_.empty() && (listeners_ >> listener & 1u) != 0;
  }
  // This filter, matching only events of `ids` (of those it matched).
  Filter WithConnections(const absl::flat_hash_set<uint64_t>& ids) const {
    Filter f = *this;
    if (f.connections_.empty()) {
      f.connections_ = ids;
    } else {
      absl::erase_if(f.connections_,
                     [&ids](uint64_t id) { return !ids.contains(id); });
    }
    return f;
  }
  // Equal for filters that match the same events (kinds, listeners and
  // connection ids, in any order), different otherwise.
  std::string Key() const;

 private:
  bool MatchesSource(uint32_t listener, uint64_t connection_id) const {
    return (listeners_ >> listener & 1u) != 0 &&
           (connections_.empty() || connections_.contains(connection_id));
  }

  uint32_t kinds_ = ~0u;
  uint64_t listeners_ = ~uint64_t{0};
  absl::flat_hash_set<uint64_t> connections_;
  absl::flat_hash_set<std::string> nodes_;  // empty: every node
};

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_FILTER_H_
