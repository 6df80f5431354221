// StoredEvent: one event as the fan-out keeps it, encoded once for every
// subscriber.
//
// The publisher (a reactor loop) encodes every field of fanin.v1.Event except
// `seq` into `body` once; EventHub assigns `seq`; each subscriber's batch is
// then built by copying bodies (event_codec.h encodes one event; the gRPC
// layer frames the batch). Only subscribers that cut or omit payloads
// re-encode the Data part, using the offsets kept here.
#ifndef FANIN_SERVER_FANOUT_STORED_EVENT_H_
#define FANIN_SERVER_FANOUT_STORED_EVENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "fanin/v1/fanin.pb.h"

namespace fanin::fanout {

// Who a connection is, shared by all of its events: what a worker-pool group
// (group.h) tells a member that takes over a connection whose Opened it never
// saw. Immutable once made.
struct ConnectionInfo {
  std::string listener;
  std::string remote_address;
  std::string local_address;
};

struct StoredEvent {
  uint64_t seq = 0;  // Assigned by EventHub::Publish.
  uint64_t connection_id = 0;
  uint32_t listener = 0;  // Index into the server's listener names.
  fanin::v1::EventKind kind = fanin::v1::EVENT_KIND_UNSPECIFIED;
  // DATA only: bytes read, where the Data field starts in `body` and where the
  // payload starts. The payload is body[payload_offset, payload_offset + size).
  uint32_t data_size = 0;
  uint32_t data_field_offset = 0;
  uint32_t payload_offset = 0;
  int64_t time_unix_nano = 0;
  // Cluster mode: Event.node (also inside body). Empty in standalone.
  std::string node;
  // Event fields 2..15 as protobuf serializes them (everything but seq).
  std::string body;
  // Not encoded: the connection's totals when the event was made (before
  // this event's own bytes), and who it is. Null for events without a
  // connection.
  uint64_t bytes_received_before = 0;
  uint64_t bytes_sent_before = 0;
  std::shared_ptr<const ConnectionInfo> connection;

  absl::string_view payload() const {
    return absl::string_view(body).substr(payload_offset, data_size);
  }
  // What this event costs the history, for its byte bound.
  size_t MemoryBytes() const { return sizeof(*this) + body.capacity() + 32; }
};

using EventPtr = std::shared_ptr<const StoredEvent>;

// Cluster mode: events read back from the cluster's stream (older than a
// node's history): from a seq on, those a filter matches. A Gap
// (HISTORY_EXPIRED, exact) when the stream no longer holds some of them.
struct FetchedEvents {
  std::optional<fanin::v1::Gap> gap;
  std::vector<EventPtr> events;
  uint64_t next_seq = 0;  // everything before it has been looked at
};

// Builds a DATA event without going through a protobuf message (the hot path).
// `node` is Event.node: empty in standalone.
std::shared_ptr<StoredEvent> MakeDataEvent(
    uint64_t connection_id, uint32_t listener, absl::string_view listener_name,
    absl::string_view node, int64_t time_unix_nano, absl::string_view payload);

// Builds any other event from a message whose seq is unset; kind is taken
// from the oneof. `event.listener()` must already be the listener's name.
std::shared_ptr<StoredEvent> MakeEvent(const fanin::v1::Event& event,
                                       uint32_t listener);

// The reverse of the two above, for a body that crossed the network (cluster
// mode): parses `body` (an Event without seq, as they encode it) and fills
// every field of StoredEvent from it. `listener_index` maps Event.listener
// to the receiving server's index. Null when `body` is not such an Event (or
// is one the encoders above would not have written: a Data payload whose size
// field disagrees, a seq, a second kind).
std::shared_ptr<StoredEvent> ParseStoredEvent(
    std::string body,
    const std::function<uint32_t(absl::string_view)>& listener_index);

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_STORED_EVENT_H_
