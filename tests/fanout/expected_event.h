// What a subscriber must receive for an event under a payload policy, applied
// by hand with the protobuf API: the reference the codec's differential test
// and fuzz target compare fanin's encoding with.
#ifndef FANIN_TESTS_FANOUT_EXPECTED_EVENT_H_
#define FANIN_TESTS_FANOUT_EXPECTED_EVENT_H_

#include <cstdint>
#include <string>

#include "fanin/v1/fanin.pb.h"
#include "server/fanout/event_codec.h"

namespace fanin::fanout {

inline fanin::v1::Event ExpectedEvent(fanin::v1::Event e, uint64_t seq,
                                      const PayloadPolicy& policy) {
  e.set_seq(seq);
  if (e.has_data()) {
    std::string* payload = e.mutable_data()->mutable_payload();
    if (policy.omit) {
      payload->clear();
    } else if (policy.max != 0 && payload->size() > policy.max) {
      payload->resize(policy.max);
    }
  }
  return e;
}

}  // namespace fanin::fanout

#endif  // FANIN_TESTS_FANOUT_EXPECTED_EVENT_H_
