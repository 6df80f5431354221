// Encodes one StoredEvent as a serialized fanin.v1.Event: `seq` followed by
// the body that MakeDataEvent / MakeEvent encoded once, with a subscriber's
// payload policy applied. Framing events into a SubscribeResponse belongs to
// the gRPC layer (server/grpc/batch_encoder.h).
//
// Example (what the batch encoder does per event):
//   AppendEventField(fanin::v1::EventBatch::kEventsFieldNumber, *e, policy,
//                    &out);
#ifndef FANIN_SERVER_FANOUT_EVENT_CODEC_H_
#define FANIN_SERVER_FANOUT_EVENT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "fanin/v1/fanin.pb.h"
#include "server/fanout/stored_event.h"

namespace fanin::fanout {

// How a subscriber wants Data payloads.
struct PayloadPolicy {
  bool omit = false;  // payload empty, size kept
  uint32_t max = 0;   // 0 = whole payload

  bool Unchanged(const StoredEvent& e) const {
    return e.kind != fanin::v1::EVENT_KIND_DATA ||
           (!omit && (max == 0 || e.data_size <= max));
  }
};

// Length in bytes of the encoded Event: Event{seq, body} with the policy
// applied, without any tag or length of an enclosing field. Cheap: no
// encoding, no allocation.
size_t EventByteSize(const StoredEvent& event, const PayloadPolicy& policy);

// Appends the event as field `field_number` of an enclosing message: the
// tag, EventByteSize(event, policy) as the length, then the Event. The body
// is copied as stored unless the policy cuts or omits this event's payload;
// then only its Data field is encoded again. The bytes are what protobuf's own
// serialization of the same Event gives. Tag, length and seq go out in one
// append, so an unchanged event costs two.
void AppendEventField(int field_number, const StoredEvent& event,
                      const PayloadPolicy& policy, std::string* out);

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_EVENT_CODEC_H_
