// Frames pre-encoded events as one serialized fanin.v1.SubscribeResponse
// carrying an EventBatch: the message the raw Subscribe method writes. Each
// event costs its seq and a copy of its stored body (fanout/event_codec.h);
// no protobuf message is built.
//
// Example:
//   std::string wire;
//   AppendBatchResponse(read.events, policy, &wire);  // one reserve, no more
#ifndef FANIN_SERVER_GRPC_BATCH_ENCODER_H_
#define FANIN_SERVER_GRPC_BATCH_ENCODER_H_

#include <string>
#include <vector>

#include "server/fanout/event_codec.h"
#include "server/fanout/stored_event.h"

namespace fanin::grpc_api {

// Appends SubscribeResponse{batch{events}} to *out, `policy` applied to every
// Data payload. `events` may be empty (an empty batch).
void AppendBatchResponse(const std::vector<fanout::EventPtr>& events,
                         const fanout::PayloadPolicy& policy, std::string* out);

}  // namespace fanin::grpc_api

#endif  // FANIN_SERVER_GRPC_BATCH_ENCODER_H_
