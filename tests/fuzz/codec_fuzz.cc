// Differential fuzzing of the event codec: the input, read as a
// fanin.v1.Event, is stored the way the server stores events (MakeEvent, and
// MakeDataEvent for Data, the hot path), framed into a SubscribeResponse
// under a payload policy taken from the input, and parsed back with
// protobuf's own parser: it must equal the message built the ordinary way.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/fanout/event_codec.h"
#include "server/fanout/stored_event.h"
#include "server/grpc/batch_encoder.h"
#include "tests/fanout/expected_event.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using fanin::fanout::EventPtr;
using fanin::fanout::PayloadPolicy;
using fanin::v1::Event;

void CheckBatch(const std::vector<EventPtr>& events,
                const std::vector<Event>& messages,
                const PayloadPolicy& policy) {
  std::string wire;
  fanin::grpc_api::AppendBatchResponse(events, policy, &wire);
  fanin::v1::SubscribeResponse got;
  FUZZ_CHECK(got.ParseFromString(wire), "the batch does not parse");
  fanin::v1::SubscribeResponse want;
  auto* batch = want.mutable_batch();
  for (size_t i = 0; i < messages.size(); ++i) {
    *batch->add_events() =
        fanin::fanout::ExpectedEvent(messages[i], events[i]->seq, policy);
  }
  FUZZ_CHECK(
      google::protobuf::util::MessageDifferencer::Equals(got, want),
      "decoded:\n" + got.DebugString() + "\nwant:\n" + want.DebugString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Event e;
  if (!e.ParseFromArray(data, static_cast<int>(size))) return 0;
  e.DiscardUnknownFields();
  const uint64_t seq = e.seq() == 0 ? 1 : e.seq();
  e.clear_seq();  // The hub assigns it.
  // The server's Data events always say how many bytes were read.
  if (e.has_data()) e.mutable_data()->set_size(e.data().payload().size());

  std::vector<EventPtr> events;
  std::vector<Event> messages;
  auto stored = fanin::fanout::MakeEvent(e, 0);
  stored->seq = seq;
  events.push_back(stored);
  messages.push_back(e);
  if (e.has_data()) {
    auto hot = fanin::fanout::MakeDataEvent(
        e.connection_id(), 0, e.listener(), e.node(),
        static_cast<int64_t>(e.time_unix_nano()), e.data().payload());
    hot->seq = seq == UINT64_MAX ? seq : seq + 1;
    events.push_back(hot);
    messages.push_back(e);
  }
  const uint32_t payload = e.has_data() ? e.data().payload().size() : 0;
  for (PayloadPolicy policy :
       {PayloadPolicy{}, PayloadPolicy{.omit = true},
        PayloadPolicy{.max = payload > 1 ? payload - 1 : 1},
        PayloadPolicy{.max = payload + 1}, PayloadPolicy{.max = 1}}) {
    CheckBatch(events, messages, policy);
  }
  return 0;
}
