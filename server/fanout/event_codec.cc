#include "server/fanout/event_codec.h"

#include <algorithm>

namespace fanin::fanout {
namespace {

// Protobuf wire format, by hand: the batch is built for every subscriber on
// every write, and going through message objects would copy each payload twice.
constexpr uint8_t kLen = 2;
constexpr uint8_t kVarint = 0;
constexpr uint8_t kFixed64 = 1;

constexpr uint8_t Tag(int field, uint8_t wire_type) {
  return static_cast<uint8_t>((field << 3) | wire_type);
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void PutVarint(uint64_t v, std::string* out) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

void PutFixed64(uint64_t v, std::string* out) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  out->append(buf, 8);
}

void PutTag(uint8_t tag, std::string* out) {
  out->push_back(static_cast<char>(tag));
}

// Data{payload = first `keep` bytes, size} as the inner message bytes' size.
size_t DataInnerSize(size_t keep, uint32_t size) {
  size_t n = 0;
  if (keep > 0) n += 1 + VarintSize(keep) + keep;
  if (size > 0) n += 1 + VarintSize(size);
  return n;
}

size_t KeptPayload(const StoredEvent& e, const PayloadPolicy& p) {
  if (p.omit) return 0;
  if (p.max != 0) return std::min<size_t>(p.max, e.data_size);
  return e.data_size;
}

// Size of Event{seq, body'} where body' is body with the payload cut.
size_t EventSize(const StoredEvent& e, const PayloadPolicy& p) {
  size_t seq = 1 + VarintSize(e.seq);
  if (p.Unchanged(e)) return seq + e.body.size();
  size_t inner = DataInnerSize(KeptPayload(e, p), e.data_size);
  return seq + e.data_field_offset + 1 + VarintSize(inner) + inner;
}

void PutEvent(const StoredEvent& e, const PayloadPolicy& p, std::string* out) {
  PutTag(Tag(1, kVarint), out);
  PutVarint(e.seq, out);
  if (p.Unchanged(e)) {
    out->append(e.body);
    return;
  }
  size_t keep = KeptPayload(e, p);
  out->append(e.body, 0, e.data_field_offset);
  PutTag(Tag(11, kLen), out);
  PutVarint(DataInnerSize(keep, e.data_size), out);
  if (keep > 0) {
    PutTag(Tag(1, kLen), out);
    PutVarint(keep, out);
    out->append(e.body, e.payload_offset, keep);
  }
  if (e.data_size > 0) {
    PutTag(Tag(2, kVarint), out);
    PutVarint(e.data_size, out);
  }
}

}  // namespace

std::shared_ptr<StoredEvent> MakeDataEvent(uint64_t connection_id,
                                           uint32_t listener,
                                           absl::string_view listener_name,
                                           int64_t time_unix_nano,
                                           absl::string_view payload) {
  auto e = std::make_shared<StoredEvent>();
  e->connection_id = connection_id;
  e->listener = listener;
  e->kind = fanin::v1::EVENT_KIND_DATA;
  e->time_unix_nano = time_unix_nano;
  e->data_size = static_cast<uint32_t>(payload.size());
  std::string& b = e->body;
  size_t inner = DataInnerSize(payload.size(), e->data_size);
  b.reserve(9 + 11 + 1 + 5 + listener_name.size() + 1 + 5 + inner);
  PutTag(Tag(2, kFixed64), &b);
  PutFixed64(static_cast<uint64_t>(time_unix_nano), &b);
  PutTag(Tag(3, kVarint), &b);
  PutVarint(connection_id, &b);
  if (!listener_name.empty()) {
    PutTag(Tag(4, kLen), &b);
    PutVarint(listener_name.size(), &b);
    b.append(listener_name.data(), listener_name.size());
  }
  e->data_field_offset = static_cast<uint32_t>(b.size());
  PutTag(Tag(11, kLen), &b);
  PutVarint(inner, &b);
  if (!payload.empty()) {
    PutTag(Tag(1, kLen), &b);
    PutVarint(payload.size(), &b);
    e->payload_offset = static_cast<uint32_t>(b.size());
    b.append(payload.data(), payload.size());
    PutTag(Tag(2, kVarint), &b);
    PutVarint(payload.size(), &b);
  } else {
    e->payload_offset = static_cast<uint32_t>(b.size());
  }
  return e;
}

std::shared_ptr<StoredEvent> MakeEvent(const fanin::v1::Event& event,
                                       uint32_t listener) {
  auto e = std::make_shared<StoredEvent>();
  e->connection_id = event.connection_id();
  e->listener = listener;
  e->time_unix_nano = static_cast<int64_t>(event.time_unix_nano());
  switch (event.kind_case()) {
    case fanin::v1::Event::kOpened:
      e->kind = fanin::v1::EVENT_KIND_OPENED;
      break;
    case fanin::v1::Event::kData:
      e->kind = fanin::v1::EVENT_KIND_DATA;
      break;
    case fanin::v1::Event::kWritable:
      e->kind = fanin::v1::EVENT_KIND_WRITABLE;
      break;
    case fanin::v1::Event::kReadClosed:
      e->kind = fanin::v1::EVENT_KIND_READ_CLOSED;
      break;
    case fanin::v1::Event::kClosed:
      e->kind = fanin::v1::EVENT_KIND_CLOSED;
      break;
    case fanin::v1::Event::kReadable:
      e->kind = fanin::v1::EVENT_KIND_READABLE;
      break;
    case fanin::v1::Event::KIND_NOT_SET:
      break;
  }
  if (e->kind == fanin::v1::EVENT_KIND_DATA) {
    return MakeDataEvent(event.connection_id(), listener, event.listener(),
                         e->time_unix_nano, event.data().payload());
  }
  fanin::v1::Event copy = event;
  copy.clear_seq();
  copy.SerializeToString(&e->body);
  return e;
}

void AppendBatchResponse(const std::vector<EventPtr>& events,
                         const PayloadPolicy& policy, std::string* out) {
  size_t batch = 0;
  for (const EventPtr& e : events) {
    size_t n = EventSize(*e, policy);
    batch += 1 + VarintSize(n) + n;
  }
  out->reserve(out->size() + 1 + VarintSize(batch) + batch);
  PutTag(Tag(2, kLen), out);  // SubscribeResponse.batch
  PutVarint(batch, out);
  for (const EventPtr& e : events) {
    PutTag(Tag(1, kLen), out);  // EventBatch.events
    PutVarint(EventSize(*e, policy), out);
    PutEvent(*e, policy, out);
  }
}

bool DecodeEvent(const StoredEvent& event, fanin::v1::Event* out) {
  if (!out->ParseFromString(event.body)) return false;
  out->set_seq(event.seq);
  return true;
}

}  // namespace fanin::fanout
