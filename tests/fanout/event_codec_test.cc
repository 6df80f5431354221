// The hand-framed batch against protobuf itself: random events of every kind,
// encoded once as the fan-out stores them and framed into a SubscribeResponse
// with a random payload policy, must parse as exactly the message built with
// the protobuf API, and be byte-for-byte its serialization.
#include "server/fanout/event_codec.h"

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fanin/v1/fanin.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/fanout/stored_event.h"
#include "server/grpc/batch_encoder.h"
#include "tests/fanout/expected_event.h"

namespace fanin::fanout {
namespace {

using fanin::v1::Event;

class Random {
 public:
  explicit Random(uint64_t seed) : rng_(seed) {}

  uint64_t Below(uint64_t n) {  // [0, n)
    return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_);
  }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
  // Zero, a small value, or any of the 64 bits: every varint length.
  uint64_t U64() {
    switch (Below(4)) {
      case 0:
        return 0;
      case 1:
        return Below(200);
      case 2:
        return Below(uint64_t{1} << Below(64));
      default:
        return rng_();
    }
  }
  std::string Bytes(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(Below(256));
    return s;
  }
  // Empty, short, or past 127 bytes (a two-byte length). proto3 strings
  // must be UTF-8, so printable ASCII and a two-byte character.
  std::string Text() {
    const size_t n = OneIn(4) ? 0 : OneIn(3) ? 128 + Below(300) : Below(20);
    std::string s;
    while (s.size() < n) {
      if (OneIn(8)) {
        s += "\xc3\xa9";  // é
      } else {
        s += static_cast<char>(' ' + Below(95));
      }
    }
    return s;
  }
  size_t PayloadSize() {
    switch (Below(6)) {
      case 0:
        return 0;
      case 1:
        return 1 + Below(16'384);
      case 2:
        return OneIn(4) ? 70'000 + Below(70'000) : Below(300);
      default:
        return 1 + Below(128);
    }
  }

 private:
  std::mt19937_64 rng_;
};

// An Event without seq, of any kind, as a connection would publish it.
Event RandomEvent(Random& r) {
  Event e;
  e.set_time_unix_nano(r.U64());
  e.set_connection_id(r.U64());
  e.set_listener(r.Text());
  if (r.OneIn(2)) e.set_node(r.Text());
  switch (r.Below(6)) {
    case 0:
      e.mutable_opened()->set_remote_address(r.Text());
      e.mutable_opened()->set_local_address(r.Text());
      break;
    case 1: {
      std::string payload = r.Bytes(r.PayloadSize());
      e.mutable_data()->set_size(static_cast<uint32_t>(payload.size()));
      e.mutable_data()->set_payload(std::move(payload));
      break;
    }
    case 2:
      e.mutable_readable();
      break;
    case 3:
      e.mutable_writable();
      break;
    case 4:
      e.mutable_read_closed();
      break;
    default: {
      auto* c = e.mutable_closed();
      c->set_reason(static_cast<fanin::v1::CloseReason>(
          r.Below(fanin::v1::CloseReason_MAX + 1)));
      c->set_detail(r.Text());
      c->set_bytes_received(r.U64());
      c->set_bytes_sent(r.U64());
      break;
    }
  }
  return e;
}

// Stored the way the server does: Data through the hot path most of the time.
std::shared_ptr<StoredEvent> Store(const Event& e, Random& r) {
  if (e.has_data() && !r.OneIn(4)) {
    return MakeDataEvent(e.connection_id(), 0, e.listener(), e.node(),
                         static_cast<int64_t>(e.time_unix_nano()),
                         e.data().payload());
  }
  return MakeEvent(e, 0);
}

std::string Deterministic(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    EXPECT_TRUE(m.SerializeToCodedStream(&coded));
  }
  return out;
}

TEST(EventCodec, RandomBatchesAreWhatProtobufSerializes) {
  Random r(20261101);
  int kinds_seen[Event::kReadable + 1] = {};
  int cut = 0, omitted = 0, whole = 0;
  for (int round = 0; round < 1500; ++round) {
    const size_t n = r.OneIn(20) ? 0 : 1 + r.Below(40);
    std::vector<Event> messages;
    std::vector<EventPtr> events;
    uint64_t seq = 1 + r.Below(uint64_t{1} << 63);  // up to 2^63
    for (size_t i = 0; i < n; ++i) {
      messages.push_back(RandomEvent(r));
      auto stored = Store(messages.back(), r);
      stored->seq = seq;
      seq += 1 + r.Below(3);
      events.push_back(stored);
      ++kinds_seen[messages.back().kind_case()];
    }
    // The policy: omit, no cap, or a cap below, at or above some payload.
    PayloadPolicy policy;
    const uint64_t some = r.PayloadSize();
    switch (r.Below(4)) {
      case 0:
        policy.omit = true;
        break;
      case 1:
        break;
      default:
        for (const Event& m : messages) {
          if (m.has_data() && r.OneIn(2)) {
            uint64_t size = m.data().size();
            policy.max = static_cast<uint32_t>(size + r.Below(3)) - 1;
          }
        }
        if (policy.max == 0) policy.max = static_cast<uint32_t>(1 + some);
        break;
    }

    fanin::v1::SubscribeResponse want;
    auto* batch = want.mutable_batch();
    for (size_t i = 0; i < n; ++i) {
      *batch->add_events() = ExpectedEvent(messages[i], events[i]->seq, policy);
      if (!messages[i].has_data()) continue;
      const size_t size = messages[i].data().size();
      if (policy.omit) {
        ++omitted;
      } else if (policy.max != 0 && size > policy.max) {
        ++cut;
      } else {
        ++whole;
      }
    }

    std::string wire = "prefix";  // Appends, never overwrites.
    grpc_api::AppendBatchResponse(events, policy, &wire);
    ASSERT_EQ(wire.substr(0, 6), "prefix");
    wire.erase(0, 6);
    fanin::v1::SubscribeResponse got;
    ASSERT_TRUE(got.ParseFromString(wire)) << "round " << round;
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
        << "round " << round << " omit=" << policy.omit << " max=" << policy.max
        << "\ngot:  " << got.ShortDebugString()
        << "\nwant: " << want.ShortDebugString();
    ASSERT_EQ(wire, Deterministic(want)) << "round " << round;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(EventByteSize(*events[i], policy),
                batch->events(static_cast<int>(i)).ByteSizeLong());
    }
  }
  // The generator reached every kind and every payload treatment.
  for (int k = Event::kOpened; k <= Event::kReadable; ++k) {
    EXPECT_GT(kinds_seen[k], 0) << "kind case " << k;
  }
  EXPECT_GT(cut, 100);
  EXPECT_GT(omitted, 100);
  EXPECT_GT(whole, 100);
}

// The body stored once is protobuf's serialization of the event without seq,
// whichever way it was made.
TEST(EventCodec, StoredBodyIsTheEventWithoutSeq) {
  Random r(7);
  for (int i = 0; i < 2000; ++i) {
    const Event e = RandomEvent(r);
    auto stored = Store(e, r);
    EXPECT_EQ(stored->body, Deterministic(e));
    if (e.has_data()) {
      EXPECT_EQ(stored->kind, fanin::v1::EVENT_KIND_DATA);
      EXPECT_EQ(stored->data_size, e.data().size());
      EXPECT_EQ(stored->payload(), e.data().payload());
    }
  }
}

// Cluster mode ships bodies between nodes: parsing one back must give the
// same StoredEvent, so every payload policy cuts it the same way.
TEST(EventCodec, ParsedBodiesAreTheEventsThatWereStored) {
  Random r(20261202);
  int data_events = 0;
  for (int round = 0; round < 3000; ++round) {
    const Event m = RandomEvent(r);
    auto stored = Store(m, r);
    auto parsed = ParseStoredEvent(stored->body, [&](absl::string_view name) {
      return name == m.listener() ? 5u : 9u;
    });
    ASSERT_NE(parsed, nullptr) << "round " << round;
    EXPECT_EQ(parsed->kind, stored->kind);
    EXPECT_EQ(parsed->connection_id, stored->connection_id);
    EXPECT_EQ(parsed->time_unix_nano, stored->time_unix_nano);
    EXPECT_EQ(parsed->node, m.node());
    EXPECT_EQ(parsed->listener, m.listener().empty() ? 0u : 5u);
    EXPECT_EQ(parsed->body, stored->body);
    if (stored->kind == fanin::v1::EVENT_KIND_DATA) {
      ++data_events;
      EXPECT_EQ(parsed->data_size, stored->data_size);
      EXPECT_EQ(parsed->payload(), stored->payload());
      EXPECT_EQ(parsed->data_field_offset, stored->data_field_offset);
      for (PayloadPolicy policy :
           {PayloadPolicy{}, PayloadPolicy{.omit = true},
            PayloadPolicy{.max = 1 + static_cast<uint32_t>(r.Below(64))}}) {
        stored->seq = parsed->seq = 1 + r.Below(1000);
        std::string a, b;
        AppendEventField(1, *stored, policy, &a);
        AppendEventField(1, *parsed, policy, &b);
        EXPECT_EQ(a, b);
      }
    }
  }
  EXPECT_GT(data_events, 300);
}

TEST(EventCodec, ParseRefusesWhatNoEncoderWrites) {
  auto any = [](absl::string_view) { return 0u; };
  EXPECT_EQ(ParseStoredEvent("", any), nullptr);  // no kind
  Event e;
  e.set_seq(3);  // a body never carries seq
  e.mutable_writable();
  EXPECT_EQ(ParseStoredEvent(e.SerializeAsString(), any), nullptr);
  e.clear_seq();
  EXPECT_NE(ParseStoredEvent(e.SerializeAsString(), any), nullptr);
  std::string truncated = MakeDataEvent(1, 0, "l", "n", 5, "hello")->body;
  truncated.pop_back();
  EXPECT_EQ(ParseStoredEvent(truncated, any), nullptr);
  // Two kinds in one body.
  std::string two = e.SerializeAsString();
  Event closed;
  closed.mutable_closed()->set_detail("x");
  two += closed.SerializeAsString();
  EXPECT_EQ(ParseStoredEvent(two, any), nullptr);
}

}  // namespace
}  // namespace fanin::fanout
