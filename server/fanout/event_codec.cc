#include "server/fanout/event_codec.h"

#include <algorithm>
#include <memory>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace fanin::fanout {
namespace {

using fanin::v1::Data;
using fanin::v1::Event;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

constexpr uint32_t kSeqTag = WireFormatLite::MakeTag(
    Event::kSeqFieldNumber, WireFormatLite::WIRETYPE_VARINT);
constexpr uint32_t kDataTag = WireFormatLite::MakeTag(
    Event::kDataFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kPayloadTag = WireFormatLite::MakeTag(
    Data::kPayloadFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kSizeTag = WireFormatLite::MakeTag(
    Data::kSizeFieldNumber, WireFormatLite::WIRETYPE_VARINT);

// Protobuf's array writers fill a small stack buffer that is then appended to
// the string: streaming into a std::string through a ZeroCopyOutputStream
// resizes (zero-fills) it first, which would double the memory traffic of
// every payload copied on this path.
class Scratch {
 public:
  // Enough for the largest run written at once: three tags with a varint or
  // fixed64 each (e.g. a field's tag and length, then seq).
  static constexpr size_t kBytes = 3 * (5 + 10);

  uint8_t* pos() { return pos_; }
  void Advance(uint8_t* end) { pos_ = end; }
  void AppendTo(std::string* out) {
    out->append(reinterpret_cast<const char*>(buf_), pos_ - buf_);
    pos_ = buf_;
  }

 private:
  uint8_t buf_[kBytes];
  uint8_t* pos_ = buf_;
};

size_t TagAndVarintSize(uint32_t tag, uint64_t value) {
  return CodedOutputStream::VarintSize32(tag) +
         WireFormatLite::UInt64Size(value);
}

// Length of Data{payload = `keep` bytes, size}, proto3 (zero fields omitted).
size_t DataInnerSize(size_t keep, uint32_t size) {
  size_t n = 0;
  if (keep > 0) {
    n += CodedOutputStream::VarintSize32(kPayloadTag) +
         WireFormatLite::LengthDelimitedSize(keep);
  }
  if (size > 0) n += TagAndVarintSize(kSizeTag, size);
  return n;
}

size_t KeptPayload(const StoredEvent& e, const PayloadPolicy& p) {
  if (p.omit) return 0;
  if (p.max != 0) return std::min<size_t>(p.max, e.data_size);
  return e.data_size;
}

// Writes Data's tag and length and, when `keep` > 0, the payload's tag and
// length: what comes before the payload bytes.
uint8_t* WriteDataHead(size_t keep, uint32_t size, uint8_t* p) {
  p = CodedOutputStream::WriteTagToArray(kDataTag, p);
  p = CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(DataInnerSize(keep, size)), p);
  if (keep > 0) {
    p = CodedOutputStream::WriteTagToArray(kPayloadTag, p);
    p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(keep), p);
  }
  return p;
}

uint8_t* WriteDataSize(uint32_t size, uint8_t* p) {
  if (size == 0) return p;
  return WireFormatLite::WriteUInt32ToArray(Data::kSizeFieldNumber, size, p);
}

}  // namespace

size_t EventByteSize(const StoredEvent& e, const PayloadPolicy& p) {
  const size_t seq = e.seq == 0 ? 0 : TagAndVarintSize(kSeqTag, e.seq);
  if (p.Unchanged(e)) return seq + e.body.size();
  const size_t inner = DataInnerSize(KeptPayload(e, p), e.data_size);
  return seq + e.data_field_offset + CodedOutputStream::VarintSize32(kDataTag) +
         WireFormatLite::LengthDelimitedSize(inner);
}

void AppendEventField(int field_number, const StoredEvent& e,
                      const PayloadPolicy& p, std::string* out) {
  Scratch s;
  uint8_t* pos = WireFormatLite::WriteTagToArray(
      field_number, WireFormatLite::WIRETYPE_LENGTH_DELIMITED, s.pos());
  pos = CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(EventByteSize(e, p)), pos);
  if (e.seq != 0) {
    pos =
        WireFormatLite::WriteUInt64ToArray(Event::kSeqFieldNumber, e.seq, pos);
  }
  s.Advance(pos);
  s.AppendTo(out);
  if (p.Unchanged(e)) {
    out->append(e.body);
    return;
  }
  // Fields before Data as stored, then Data again with the payload cut.
  const size_t keep = KeptPayload(e, p);
  out->append(e.body, 0, e.data_field_offset);
  s.Advance(WriteDataHead(keep, e.data_size, s.pos()));
  if (keep > 0) {
    s.AppendTo(out);
    out->append(e.body, e.payload_offset, keep);
  }
  s.Advance(WriteDataSize(e.data_size, s.pos()));
  s.AppendTo(out);
}

std::shared_ptr<StoredEvent> MakeDataEvent(
    uint64_t connection_id, uint32_t listener, absl::string_view listener_name,
    absl::string_view node, int64_t time_unix_nano, absl::string_view payload) {
  auto e = std::make_shared<StoredEvent>();
  e->connection_id = connection_id;
  e->listener = listener;
  e->kind = fanin::v1::EVENT_KIND_DATA;
  e->time_unix_nano = time_unix_nano;
  e->data_size = static_cast<uint32_t>(payload.size());
  e->node = std::string(node);
  const auto time = static_cast<uint64_t>(time_unix_nano);

  // Fields in number order, zeros omitted: protobuf's own serialization.
  size_t head = 0;
  if (time != 0) {
    head += CodedOutputStream::VarintSize32(
                WireFormatLite::MakeTag(Event::kTimeUnixNanoFieldNumber,
                                        WireFormatLite::WIRETYPE_FIXED64)) +
            WireFormatLite::kFixed64Size;
  }
  if (connection_id != 0) {
    head +=
        CodedOutputStream::VarintSize32(WireFormatLite::MakeTag(
            Event::kConnectionIdFieldNumber, WireFormatLite::WIRETYPE_VARINT)) +
        WireFormatLite::UInt64Size(connection_id);
  }
  if (!listener_name.empty()) {
    head += CodedOutputStream::VarintSize32(WireFormatLite::MakeTag(
                Event::kListenerFieldNumber,
                WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) +
            WireFormatLite::LengthDelimitedSize(listener_name.size());
  }
  if (!node.empty()) {
    head += CodedOutputStream::VarintSize32(WireFormatLite::MakeTag(
                Event::kNodeFieldNumber,
                WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) +
            WireFormatLite::LengthDelimitedSize(node.size());
  }
  const size_t inner = DataInnerSize(payload.size(), e->data_size);
  std::string& b = e->body;
  b.reserve(head + CodedOutputStream::VarintSize32(kDataTag) +
            WireFormatLite::LengthDelimitedSize(inner));

  Scratch s;
  uint8_t* p = s.pos();
  if (time != 0) {
    p = WireFormatLite::WriteFixed64ToArray(Event::kTimeUnixNanoFieldNumber,
                                            time, p);
  }
  if (connection_id != 0) {
    p = WireFormatLite::WriteUInt64ToArray(Event::kConnectionIdFieldNumber,
                                           connection_id, p);
  }
  if (!listener_name.empty()) {
    p = WireFormatLite::WriteTagToArray(
        Event::kListenerFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED,
        p);
    p = CodedOutputStream::WriteVarint32ToArray(
        static_cast<uint32_t>(listener_name.size()), p);
  }
  s.Advance(p);
  s.AppendTo(&b);
  b.append(listener_name.data(), listener_name.size());
  if (!node.empty()) {
    p = WireFormatLite::WriteTagToArray(
        Event::kNodeFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED,
        s.pos());
    p = CodedOutputStream::WriteVarint32ToArray(
        static_cast<uint32_t>(node.size()), p);
    s.Advance(p);
    s.AppendTo(&b);
    b.append(node.data(), node.size());
  }

  e->data_field_offset = static_cast<uint32_t>(b.size());
  s.Advance(WriteDataHead(payload.size(), e->data_size, s.pos()));
  s.AppendTo(&b);
  e->payload_offset = static_cast<uint32_t>(b.size());
  b.append(payload.data(), payload.size());
  s.Advance(WriteDataSize(e->data_size, s.pos()));
  s.AppendTo(&b);
  return e;
}

std::shared_ptr<StoredEvent> MakeEvent(const fanin::v1::Event& event,
                                       uint32_t listener) {
  auto e = std::make_shared<StoredEvent>();
  e->connection_id = event.connection_id();
  e->listener = listener;
  e->time_unix_nano = static_cast<int64_t>(event.time_unix_nano());
  e->node = event.node();
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
    case fanin::v1::Event::kNodeChange:
      e->kind = fanin::v1::EVENT_KIND_NODE;
      break;
    case fanin::v1::Event::kGroupChange:
      e->kind = fanin::v1::EVENT_KIND_GROUP;
      break;
    case fanin::v1::Event::KIND_NOT_SET:
      break;
  }
  if (e->kind == fanin::v1::EVENT_KIND_DATA) {
    return MakeDataEvent(event.connection_id(), listener, event.listener(),
                         event.node(), e->time_unix_nano,
                         event.data().payload());
  }
  fanin::v1::Event copy = event;
  copy.clear_seq();
  copy.SerializeToString(&e->body);
  return e;
}

namespace {

fanin::v1::EventKind KindOfField(int field) {
  switch (field) {
    case Event::kOpenedFieldNumber:
      return fanin::v1::EVENT_KIND_OPENED;
    case Event::kDataFieldNumber:
      return fanin::v1::EVENT_KIND_DATA;
    case Event::kWritableFieldNumber:
      return fanin::v1::EVENT_KIND_WRITABLE;
    case Event::kReadClosedFieldNumber:
      return fanin::v1::EVENT_KIND_READ_CLOSED;
    case Event::kClosedFieldNumber:
      return fanin::v1::EVENT_KIND_CLOSED;
    case Event::kReadableFieldNumber:
      return fanin::v1::EVENT_KIND_READABLE;
    case Event::kNodeChangeFieldNumber:
      return fanin::v1::EVENT_KIND_NODE;
    case Event::kGroupChangeFieldNumber:
      return fanin::v1::EVENT_KIND_GROUP;
    default:
      return fanin::v1::EVENT_KIND_UNSPECIFIED;
  }
}

// Reads Data{payload, size} at the stream's position (its length already
// read as `length`), noting where the payload starts in `body`.
bool ParseData(CodedInputStream* in, uint32_t length, size_t data_start,
               StoredEvent* e) {
  const int end = in->CurrentPosition() + static_cast<int>(length);
  bool have_size = false;
  uint32_t payload_size = 0;
  e->payload_offset = static_cast<uint32_t>(in->CurrentPosition());
  while (in->CurrentPosition() < end) {
    const uint32_t tag = in->ReadTag();
    if (tag == kPayloadTag) {
      uint32_t n;
      if (!in->ReadVarint32(&n)) return false;
      e->payload_offset = static_cast<uint32_t>(in->CurrentPosition());
      payload_size = n;
      if (!in->Skip(static_cast<int>(n))) return false;
    } else if (tag == kSizeTag) {
      if (!in->ReadVarint32(&e->data_size)) return false;
      have_size = true;
    } else if (tag == 0 || !WireFormatLite::SkipField(in, tag)) {
      return false;
    }
  }
  if (in->CurrentPosition() != end) return false;
  // Only a payload the size field agrees with can be cut by offset.
  if (!have_size) e->data_size = 0;
  if (payload_size != e->data_size) return false;
  e->data_field_offset = static_cast<uint32_t>(data_start);
  return true;
}

}  // namespace

std::shared_ptr<StoredEvent> ParseStoredEvent(
    std::string body,
    const std::function<uint32_t(absl::string_view)>& listener_index) {
  auto e = std::make_shared<StoredEvent>();
  e->body = std::move(body);
  CodedInputStream in(reinterpret_cast<const uint8_t*>(e->body.data()),
                      static_cast<int>(e->body.size()));
  while (true) {
    const size_t field_start = static_cast<size_t>(in.CurrentPosition());
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const auto type = WireFormatLite::GetTagWireType(tag);
    if (field == Event::kTimeUnixNanoFieldNumber &&
        type == WireFormatLite::WIRETYPE_FIXED64) {
      uint64_t t;
      if (!in.ReadLittleEndian64(&t)) return nullptr;
      e->time_unix_nano = static_cast<int64_t>(t);
    } else if (field == Event::kConnectionIdFieldNumber &&
               type == WireFormatLite::WIRETYPE_VARINT) {
      if (!in.ReadVarint64(&e->connection_id)) return nullptr;
    } else if ((field == Event::kListenerFieldNumber ||
                field == Event::kNodeFieldNumber) &&
               type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      std::string text;
      if (!WireFormatLite::ReadString(&in, &text)) return nullptr;
      if (field == Event::kNodeFieldNumber) {
        e->node = std::move(text);
      } else {
        e->listener = listener_index(text);
      }
    } else if (field == Event::kDataFieldNumber &&
               type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length;
      if (!in.ReadVarint32(&length)) return nullptr;
      if (e->kind != fanin::v1::EVENT_KIND_UNSPECIFIED) return nullptr;
      e->kind = fanin::v1::EVENT_KIND_DATA;
      if (!ParseData(&in, length, field_start, e.get())) return nullptr;
    } else if (KindOfField(field) != fanin::v1::EVENT_KIND_UNSPECIFIED &&
               type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      if (e->kind != fanin::v1::EVENT_KIND_UNSPECIFIED) return nullptr;
      e->kind = KindOfField(field);
      if (!WireFormatLite::SkipField(&in, tag)) return nullptr;
    } else if (field == Event::kSeqFieldNumber ||
               !WireFormatLite::SkipField(&in, tag)) {
      return nullptr;  // a seq does not belong in a body
    }
  }
  if (!in.ConsumedEntireMessage() ||
      in.CurrentPosition() != static_cast<int>(e->body.size())) {
    return nullptr;
  }
  if (e->kind == fanin::v1::EVENT_KIND_UNSPECIFIED) return nullptr;
  return e;
}

}  // namespace fanin::fanout
