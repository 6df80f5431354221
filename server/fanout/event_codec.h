// Encodes SubscribeResponse messages straight from StoredEvents, so a batch
// costs one copy of each event's pre-encoded body.
#ifndef FANIN_SERVER_FANOUT_EVENT_CODEC_H_
#define FANIN_SERVER_FANOUT_EVENT_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

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

// Appends a serialized SubscribeResponse{batch{events}} to *out.
void AppendBatchResponse(const std::vector<EventPtr>& events,
                         const PayloadPolicy& policy, std::string* out);

// Decodes one stored event back into a message (for tests and slow paths).
bool DecodeEvent(const StoredEvent& event, fanin::v1::Event* out);

}  // namespace fanin::fanout

#endif  // FANIN_SERVER_FANOUT_EVENT_CODEC_H_
